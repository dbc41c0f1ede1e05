"""estimate_background: sky level and noise against truth, masking, object masking."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.errors import DataTypeError
from desgw.se import maskbits
from desgw.se.background import (Background, BackgroundConfig, estimate_background,
                                 residual_background)
from desgw.se.detect import DetectConfig, detect_sources
from test_psf_synth import make_field


def test_level_and_rms_match_truth():
    f = make_field(shape=(1024, 1024), n_stars=200, n_gal=40, seed=9)
    bkg = estimate_background(f.image, f.mask)
    assert isinstance(bkg, Background)
    assert bkg.level.dtype == np.float32 and bkg.rms.dtype == np.float32
    assert bkg.level.shape == f.image.shape
    true_rms = np.sqrt(f.sky + f.read_noise ** 2)
    # The sky gradient is followed to ~0.15% (sources push the clipped mode up by ~1.5 e-).
    assert np.abs(np.median(bkg.level - f.sky)) < 2.0
    assert np.percentile(np.abs(bkg.level - f.sky), 99) < 4.0
    assert np.abs(np.median(bkg.rms / true_rms) - 1) < 0.03
    assert bkg.global_level == pytest.approx(float(np.median(f.sky)), rel=0.01)
    assert bkg.global_rms == pytest.approx(float(np.median(true_rms)), rel=0.03)
    # without the noise map: the same level and global values, and no map
    lean = estimate_background(f.image, f.mask, rms_map=False)
    assert lean.rms_map is None
    with pytest.raises(ValueError, match="no rms map"):
        _ = lean.rms
    np.testing.assert_array_equal(lean.level, bkg.level)
    assert (lean.global_level, lean.global_rms) == (bkg.global_level, bkg.global_rms)
    with pytest.raises(ValueError, match="no rms map"):
        residual_background(lean, f.image)


def test_masked_pixels_ignored():
    rng = np.random.default_rng(1)
    img = (1000.0 + rng.normal(0, 30, (512, 512))).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    # A dead amplifier-like block with a plausible (not outlying) offset of +150 e-.
    img[:, 256:] += 150.0
    mask[:, 256:] |= maskbits.BADAMP
    masked = estimate_background(img, mask, config=BackgroundConfig(mesh=64))
    unmasked = estimate_background(img, None, config=BackgroundConfig(mesh=64))
    assert np.abs(np.median(masked.level[:, :200]) - 1000) < 2
    assert np.abs(np.median(masked.level[:, 300:]) - 1000) < 5  # extrapolated from good meshes
    assert np.median(unmasked.level[:, 300:]) > 1100


def test_object_mask_reduces_source_bias():
    f = make_field(shape=(1024, 1024), n_stars=300, n_gal=60, seed=10, mag_range=(15.0, 21.0))
    first = estimate_background(f.image, f.mask)
    det = detect_sources(f.image - first.level, first.rms, f.mask, config=DetectConfig(filter_fwhm=4.0))
    second = estimate_background(f.image, f.mask, objects=det.segmap)
    bias1 = np.median(first.level - f.sky)
    bias2 = np.median(second.level - f.sky)
    assert bias1 > 0.3  # sources push the clipped mode up
    assert bias2 < 0.7 * bias1


def test_mesh_size_follows_gradient_but_not_galaxies():
    ny = nx = 1024
    yy, xx = np.mgrid[:ny, :nx]
    sky = 800.0 + 0.2 * xx  # 200 e- across the image
    rng = np.random.default_rng(0)
    # A large galaxy (exponential, scale 20 px, 2e6 e-) that a small mesh would absorb.
    r = np.hypot(xx - 512, yy - 512)
    gal = 2e6 / (2 * np.pi * 20.0 ** 2) * np.exp(-r / 20.0)
    img = (sky + gal + rng.normal(0, 30, (ny, nx))).astype(np.float32)
    big = estimate_background(img, None, config=BackgroundConfig(mesh=256))
    small = estimate_background(img, None, config=BackgroundConfig(mesh=32, filter=1))
    centre = (slice(492, 532), slice(492, 532))
    assert np.abs(big.level - sky)[centre].max() < 30  # the galaxy is kept out of the sky
    assert np.abs(small.level - sky)[centre].max() > 100  # a 32-px mesh eats it
    edge = (slice(0, 1024), slice(0, 200))
    assert np.median(np.abs(big.level - sky)[edge]) < 3  # gradient followed


def test_bad_input():
    with pytest.raises(DataTypeError):
        estimate_background(np.zeros((10,)), None)
    with pytest.raises(DataTypeError):
        estimate_background(np.zeros((64, 64), np.float32), np.zeros((32, 32), np.int32))
    with pytest.raises(DataTypeError):
        estimate_background(np.zeros((64, 64), np.float32), None, objects=np.zeros((3, 3)))
    with pytest.raises(ValueError):
        BackgroundConfig(mesh=4)
    with pytest.raises(ValueError):
        BackgroundConfig(filter=2)
