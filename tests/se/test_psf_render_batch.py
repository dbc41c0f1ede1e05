"""``PSFModel.render_batch`` against one ``render`` per position, and its users.

The batch must give the single render bit for bit (the fakes and ZOGY's PSF renders use it
and their outputs must not move). Models: galsim Moffat (beta 2.5 and 4.5) and Kolmogorov
profiles whose FWHM and ellipticity vary over a 2048 x 4096 CCD, put in the pixel basis by a
least-squares fit of degree 2 (or 3) over a grid of noiseless stamps; positions anywhere on
the CCD, on and beyond its edges, with and without sub-pixel offsets, stamps cropped and
padded.
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from desgw.diff.fakes import inject_fakes
from desgw.diff.zogy import ZogyConfig, zogy
from desgw.se.psf import PSFModel, poly_terms

NX, NY = 2048, 4096


def _profile(kind: str, beta: float, x: float, y: float) -> galsim.GSObject:
    u, v = x / NX - 0.5, y / NY - 0.5
    w = 4.0 * (1 + 0.15 * u - 0.10 * v + 0.08 * u * v)
    prof = galsim.Kolmogorov(fwhm=w) if kind == "kolmogorov" else galsim.Moffat(beta=beta, fwhm=w)
    return prof.shear(e1=0.03 + 0.06 * u, e2=-0.02 + 0.05 * v)


def _model(kind: str, beta: float, stamp: int, degree: int) -> PSFModel:
    """A pixel-basis model fitted exactly (least squares) to noiseless stamps on a grid."""
    gx, gy = np.meshgrid(np.linspace(0, NX - 1, 5), np.linspace(0, NY - 1, 5))
    xs, ys = gx.ravel(), gy.ravel()
    imgs = np.stack([_profile(kind, beta, x, y).drawImage(nx=stamp, ny=stamp, scale=1.0).array
                     for x, y in zip(xs, ys)]).reshape(xs.size, -1)
    x0, xsc, y0, ysc = (NX - 1) / 2, NX / 2, (NY - 1) / 2, NY / 2
    t = poly_terms((xs - x0) / xsc, (ys - y0) / ysc, degree)
    coeffs = np.linalg.lstsq(t, imgs, rcond=None)[0].reshape(-1, stamp, stamp)
    return PSFModel(coeffs=coeffs, degree=degree, x_zero=x0, x_scale=xsc, y_zero=y0,
                    y_scale=ysc, image_shape=(NY, NX))


def _positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    x = rng.uniform(0, NX - 1, n)
    y = rng.uniform(0, NY - 1, n)
    # the corners, the edges and beyond them
    x[:6] = [0.0, NX - 1.0, -0.49, NX - 0.51, -3.2, NX + 2.7]
    y[:6] = [0.0, NY - 1.0, NY - 0.51, -0.49, 5.0, NY + 1.3]
    dx, dy = x - np.floor(x + 0.5), y - np.floor(y + 0.5)
    dx[6:12] = 0.0  # unshifted stamps (render skips the shift) and shifts along one axis
    dy[9:15] = 0.0
    return x, y, dx, dy


@pytest.mark.parametrize(("kind", "beta", "stamp", "degree"),
                         [("moffat", 2.5, 25, 2), ("moffat", 4.5, 31, 3),
                          ("kolmogorov", 0.0, 41, 2)])
def test_render_batch_equals_render(kind: str, beta: float, stamp: int, degree: int) -> None:
    psf = _model(kind, beta, stamp, degree)
    x, y, dx, dy = _positions(np.random.default_rng(3), 60)
    for size in (None, stamp, 21, stamp + 10):
        batch = psf.render_batch(x, y, size=size, dx=dx, dy=dy)
        single = np.stack([psf.render(x[k], y[k], size=size, dx=dx[k], dy=dy[k])
                           for k in range(x.size)])
        assert batch.dtype == np.float32
        assert np.array_equal(batch, single)
    # no offsets given: every stamp centred, as render's default
    assert np.array_equal(psf.render_batch(x[:5], y[:5]),
                          np.stack([psf.render(x[k], y[k]) for k in range(5)]))


def test_render_batch_places_and_varies_the_psf() -> None:
    """Physics of the batch: unit sums, centroids at the requested offsets, and the FWHM
    following the galsim truth across the CCD (one position cannot stand for another)."""
    psf = _model("moffat", 3.0, 41, 2)
    x = np.array([10.0, NX / 2, NX - 11.0, 10.0, NX - 11.0])
    y = np.array([10.0, NY / 2, NY - 11.0, NY - 11.0, 10.0])
    dx = np.array([0.3, -0.45, 0.0, 0.2, -0.1])
    dy = np.array([-0.2, 0.1, 0.4, 0.0, 0.35])
    st = psf.render_batch(x, y, dx=dx, dy=dy).astype(np.float64)
    assert np.allclose(st.sum(axis=(1, 2)), 1.0, atol=1e-6)
    g = np.arange(41) - 20.0
    cx = (st.sum(axis=1) * g).sum(axis=1)
    cy = (st.sum(axis=2) * g).sum(axis=1)
    # a Moffat's wings beyond the stamp pull the windowless centroid to the centre a little
    assert np.allclose(cx, dx, atol=0.03)
    assert np.allclose(cy, dy, atol=0.03)
    centred = psf.render_batch(x, y).astype(np.float64)
    for k in range(x.size):
        truth = _profile("moffat", 3.0, x[k], y[k]).drawImage(nx=41, ny=41, scale=1.0).array
        truth /= truth.sum()
        # the degree-2 fit of the 5 x 5 grid follows the profile to < 1.5 % of its peak (0.8 %
        # measured), while the PSF changes by ~20 % of its peak from corner to corner
        assert np.abs(centred[k] - truth).max() < 1.5e-2 * truth.max()
    peaks = centred.max(axis=(1, 2))
    assert peaks[0] / peaks[2] > 1.1  # FWHM 4.4 vs 3.6 px at the opposite corners


class _SingleOnly:
    """The same PSF without ``render_batch``: the callers' one-render-per-position path."""

    def __init__(self, psf: PSFModel) -> None:
        self.psf = psf

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        return self.psf.render(x, y, size=size, dx=dx, dy=dy)


def test_inject_fakes_batch_equals_single_renders() -> None:
    psf = _model("kolmogorov", 0.0, 31, 2)
    rng = np.random.default_rng(5)
    img = rng.normal(0.0, 10.0, (NY // 4, NX // 4)).astype(np.float32)
    wgt = np.full(img.shape, 0.01, np.float32)
    n = 80
    from astropy.table import Table
    fakes = Table({"x": rng.uniform(-2, img.shape[1] + 2, n),
                   "y": rng.uniform(-2, img.shape[0] + 2, n),
                   "mag": rng.uniform(20.0, 24.0, n)})
    a = inject_fakes(img, wgt, psf, fakes, zp=30.0, rng=np.random.default_rng(9))
    b = inject_fakes(img, wgt, _SingleOnly(psf), fakes, zp=30.0, rng=np.random.default_rng(9))
    assert a.weight is not None and b.weight is not None
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.weight, b.weight)
    assert np.array_equal(a.windows, b.windows)
    # the injected light is the fakes' flux (noiseless, wholly inside the image)
    inside = ((fakes["x"] > 20) & (fakes["x"] < img.shape[1] - 21)
              & (fakes["y"] > 20) & (fakes["y"] < img.shape[0] - 21))
    one = fakes[np.flatnonzero(inside)[:1]]
    c = inject_fakes(np.zeros_like(img), None, psf, one, zp=30.0, add_noise=False)
    assert c.image.sum() == pytest.approx(float(c.flux_e[0]), rel=1e-5)


def test_zogy_batch_equals_single_renders() -> None:
    """ZOGY renders the new PSF at every tile's centre and 3 x 3 flux nodes in one batch."""
    ny, nx = 300, 260
    psf_n = _model("moffat", 2.5, 25, 2)
    psf_r = _model("moffat", 4.5, 25, 2)
    rng = np.random.default_rng(11)
    new = rng.normal(0.0, 5.0, (ny, nx)).astype(np.float32)
    ref = rng.normal(0.0, 3.0, (ny, nx)).astype(np.float32)
    star = psf_n.render(120.0, 140.0, size=25) * 5e4
    new[128:153, 108:133] += star
    cfg = ZogyConfig(tile=128)
    a = zogy(new, ref, np.full_like(new, 25.0), np.full_like(ref, 9.0), psf_n, psf_r, config=cfg)
    b = zogy(new, ref, np.full_like(new, 25.0), np.full_like(ref, 9.0), _SingleOnly(psf_n),
             psf_r, config=cfg)
    for name in ("diff", "diff_var", "score", "flux", "flux_err"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # the star is a 5e4 e- transient in the difference
    assert a.flux[140, 120] == pytest.approx(5e4, rel=0.05)
