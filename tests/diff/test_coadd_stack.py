"""Template stacks against truth (issue 13 item 5): the sources' Poisson noise of a coadd of
several templates with different scales and weights (Coadd.gain), and its use by the
subtraction (a five-exposure stack's source noise is not counted five times)."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.coadd import coadd_templates
from desgw.diff.resample import Resampled

SHAPE = (200, 200)
ZPS = (30.0, 30.3, 29.8, 30.1, 30.5)
ZP_TARGET = 30.2
SKY = (300.0, 500.0, 200.0, 800.0, 400.0)   # e- per pixel
READ = 6.0


def _template(rng: np.random.Generator, level: np.ndarray, sky: float) -> Resampled:
    """A template in e- of a scene ``level`` (e- per pixel), sky subtracted, Poisson + read
    noise, weight = inverse background variance (as SE gives)."""
    img = rng.poisson(level + sky).astype(np.float32) - np.float32(sky)
    img += rng.normal(0.0, READ, SHAPE).astype(np.float32)
    w = np.full(SHAPE, 1.0 / (sky + READ ** 2), np.float32)
    return Resampled(image=img, mask=np.zeros(SHAPE, np.int32), weight=w,
                     coverage=np.ones(SHAPE, bool), mapping=None, noise_correlation_factor=1.0)


@pytest.mark.parametrize("method", ["weighted", "mean"])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_coadd_pixel_variance_is_background_plus_sources_over_gain(n: int, method: str) -> None:
    """A uniform bright scene (2e4 e- per pixel on the target scale, far above the sky): the
    coadd's pixel variance over 40,000 pixels equals 1 / weight + value / gain within 3 %; the
    former gain 1 / mean(scale) overestimates it by ~n."""
    rng = np.random.default_rng(n)
    scales = [10 ** (0.4 * (ZP_TARGET - zp)) for zp in ZPS[:n]]
    level = 2e4
    temps = [_template(rng, np.full(SHAPE, level / f), sky)
             for f, sky in zip(scales, SKY[:n])]
    c = coadd_templates(temps, ZPS[:n], ZP_TARGET, method=method)
    assert c.gain is not None and c.gain.shape == SHAPE
    measured = float(np.var(c.image))
    predicted = float(np.mean(1.0 / c.weight + c.image / c.gain))
    assert measured == pytest.approx(predicted, rel=0.03), (measured, predicted)
    # the source part dominates: the former 1 / mean(scale) counts it ~n times
    old = float(np.mean(1.0 / c.weight + c.image * np.mean(scales)))
    if n >= 3:
        assert old > 2.0 * measured
    if n == 1:
        np.testing.assert_allclose(c.gain, 1.0 / scales[0], rtol=1e-6)
    # where no template is good the gain is 0 (no source noise added)
    t0 = temps[0]
    masked = Resampled(image=t0.image, mask=t0.mask, weight=np.zeros(SHAPE, np.float32),
                       coverage=t0.coverage, mapping=None, noise_correlation_factor=1.0)
    c2 = coadd_templates([masked] * 2, ZPS[:2], ZP_TARGET, method=method)
    assert np.all(c2.gain == 0)


def test_subtract_with_a_gain_map_equals_the_scalar_gain_it_replaces() -> None:
    from dataclasses import replace

    from desgw.diff.subtract import SubtractConfig, subtract
    from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair

    shape = (256, 256)
    ps, pt = MoffatPSFField(4.0, image_shape=shape), MoffatPSFField(3.0, image_shape=shape)
    pair = make_image_pair(shape, ps, pt, seed=2, n_stars=40, star_flux_range=(1e4, 3e5))
    mask = np.zeros(shape, np.int32)
    cfg = SubtractConfig(tile=128, border=32)
    args = (pair.search, pair.search_var, mask, ps, pair.template, pair.template_var, mask, pt)
    kw = {"zp_search": pair.zp_search, "zp_template": pair.zp_template}
    a = subtract(*args, **kw, config=replace(cfg, template_gain=0.37))
    b = subtract(*args, **kw, config=cfg, template_gain_map=np.full(shape, 0.37, np.float32))
    c = subtract(*args, **kw, config=replace(cfg, template_gain=3.7))
    np.testing.assert_allclose(b.diff_var, a.diff_var, rtol=2e-5)
    np.testing.assert_allclose(b.score, a.score, rtol=2e-4, atol=2e-5)
    # and the gain matters: ten times more electrons per unit, less variance at the stars
    assert np.nanmax(a.diff_var / c.diff_var) > 1.2
