"""residual_background: the sky level as the mean of the image less the detected sources'
models, so that the light of undetected sources and of wings is in it as a PSF fit sees it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from desgw.errors import DataTypeError
from desgw.se.background import BackgroundConfig, estimate_background, residual_background


def _field(n_faint: int, n_bright: int, seed: int = 2):
    """1024 x 1024 px: sky 1000 e- with a 4 % gradient; ``n_faint`` stars of 100-600 e- (each
    below 3 sigma: undetectable) and ``n_bright`` of 1e4-1e6 e-, in a Moffat beta 2.5 PSF of
    FWHM 4 px (drawn to 40 px), and noise. Returns the image, the sky, the mean light of the
    faint stars (e-/px), the bright stars' noiseless image and a mask of their footprints
    (above 1 sigma, grown by 4 px as the background's object mask is)."""
    rng = np.random.default_rng(seed)
    ny = nx = 1024
    r = np.hypot(*np.mgrid[-40:41, -40:41])
    alpha = 4.0 / (2 * np.sqrt(2 ** (1 / 2.5) - 1))
    kern = (1 + (r / alpha) ** 2) ** -2.5
    kern /= kern.sum()
    out = []
    for n, lo, hi in ((n_faint, 100.0, 600.0), (n_bright, 1e4, 1e6)):
        pts = np.zeros((ny, nx))
        flux = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        np.add.at(pts, (rng.integers(0, ny, n), rng.integers(0, nx, n)), flux)
        out.append((fftconvolve(pts, kern, mode="same"), flux.sum() / (ny * nx)))
    (faint, mean_light), (bright, _) = out
    xx = np.mgrid[:ny, :nx][1]
    sky = 1000.0 * (1 + 0.04 * (xx / nx - 0.5))
    stars = faint + bright
    img = sky + stars + rng.normal(size=(ny, nx)) * np.sqrt(sky + 49.0 + np.maximum(stars, 0))
    foot = ndimage.binary_dilation(bright > 32.0, iterations=4)
    return img.astype(np.float32), sky, mean_light, bright.astype(np.float32), foot


@pytest.mark.parametrize("n_faint", [5000, 20000])
def test_mean_level_of_unresolved_light(n_faint):
    img, sky, mean_light, _, _ = _field(n_faint, 0)
    mode = estimate_background(img, config=BackgroundConfig(mesh=128))
    mean = residual_background(mode, img)  # nothing detected: the model is empty
    d_mean = float(np.median(mean.level - sky)) - mean_light
    # measured +0.03 / -0.03 e- of the 1.3 / 5.4 e- per pixel of unresolved light (the
    # estimate's noise is ~0.05 e-)
    assert abs(d_mean) < 0.15, (d_mean, mean_light)
    # the gradient is kept
    assert np.ptp(mean.level[512]) == pytest.approx(40.0, abs=3.0)


@pytest.mark.parametrize("n_bright", [300, 1200])
def test_wings_of_detected_stars_leave_the_level(n_bright):
    """The clipped mode with the stars' footprints masked still holds their wings beyond the
    masks (Moffat beta 2.5); less the stars' models, the mean is the sky and unresolved light."""
    img, sky, mean_light, bright, foot = _field(5000, n_bright)
    mode = estimate_background(img, foot.astype(np.int32), config=BackgroundConfig(mesh=128,
                               mask_bits=1))
    mean = residual_background(mode, img - bright)
    d_mode = float(np.median(mode.level - sky)) - mean_light
    d_mean = float(np.median(mean.level - sky)) - mean_light
    # measured: the mode is +0.73 / +2.58 e- high (300 / 1,200 bright stars), the mean
    # +0.04 / +0.04 e-
    assert d_mode > 0.2, d_mode
    assert abs(d_mean) < 0.15, d_mean


def test_unmodelled_object_excluded_or_modelled():
    img, sky, mean_light, _, _ = _field(5000, 0)
    # a bright extended blob (r ~ 140 px above 1 e-)
    yy, xx = np.mgrid[:1024, :1024]
    r = np.hypot(xx - 300, yy - 700)
    blob = 400.0 * np.exp(-0.5 * r ** 2 / 40.0 ** 2)
    img2 = (img + blob).astype(np.float32)
    bkg = estimate_background(img2, config=BackgroundConfig(mesh=128))
    far, near = r > 400, r < 60
    excl = residual_background(bkg, img2, exclude=blob > 1.0)
    model = residual_background(bkg, img2 - blob)
    none = residual_background(bkg, img2)

    def off(b, where):
        return float(np.median((b.level - sky)[where])) - mean_light

    # measured far from the blob: -0.01 e- for each
    for b in (excl, model, none):
        assert abs(off(b, far)) < 0.15
    # measured at the blob: mode +5.6 e-, mean of the residual +7.9 (the blob is not
    # modelled: its light is sky), +0.48 with its model subtracted, and +5.1 with its pixels
    # excluded (meshes with < 20 % usable pixels keep the input level)
    assert off(none, near) > 5.0
    assert abs(off(model, near)) < 1.0
    assert off(excl, near) == pytest.approx(off(bkg, near), abs=1.0)
    mask = np.zeros(img.shape, np.int32)
    with pytest.raises(DataTypeError):
        residual_background(bkg, img2[:, :100])
    with pytest.raises(DataTypeError):
        residual_background(bkg, img2, mask[:100])
