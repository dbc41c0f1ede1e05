"""The difference mask computed once per search CCD (issue 12): the prediction made before the
fakes are injected (:func:`desgw.diff.subtract.predict_difference_mask`), updated for the image
with the fakes (:meth:`MaskPrediction.update`) and handed to :func:`subtract`, is exactly the
mask a full computation gives, with fakes next to template columns, cosmic rays, hot pixels and
stars cut by the columns (where a fake changes how far a defect is grown)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from desgw.diff.fakes import inject_fakes
from desgw.diff.subtract import (
    MaskPrediction,
    SubtractConfig,
    predict_difference_mask,
    subtract,
)
from desgw.diff.zogy_synth import MoffatPSFField, add_sources, make_image_pair
from desgw.se import maskbits

SHAPE = (320, 320)
CFG = SubtractConfig(tile=256, border=48)


class _PSF:
    """A constant Moffat PSF with the ``render(x, y, size=, dx=, dy=)`` of the SE model."""

    def __init__(self, fwhm: float) -> None:
        self.field = MoffatPSFField(fwhm=fwhm, beta=3.0, image_shape=SHAPE, stamp=31)

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        return self.field.render(x, y, size=size, dx=dx, dy=dy)


@pytest.fixture(scope="module")
def scene():
    ps, pt = _PSF(4.2), _PSF(5.6)
    pair = make_image_pair(SHAPE, ps.field, pt.field, seed=11, n_stars=40,
                           star_flux_range=(3e3, 2e5), n_transients=0)
    rng = np.random.default_rng(5)
    s_img, t_img = pair.search.copy(), pair.template.copy()
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    cols = (60, 150, 240)
    # stars on the columns (cut in both images: their growth depends on the light around)
    sx = np.array([c + 3.4 for c in cols] + [c - 2.2 for c in cols])
    sy = np.array([70.3, 120.8, 200.1, 250.6, 40.2, 150.7])
    sf = np.array([4e4, 1.2e4, 9e4, 2.5e4, 6e3, 3e4])
    add_sources(s_img, ps, sx, sy, sf)
    add_sources(t_img, pt, sx, sy, sf * 0.7)
    for c in cols:
        t_msk[:, c:c + 3] |= maskbits.BADPIX
        t_img[:, c:c + 3] += 2e3
    for img, msk, bit, n in ((s_img, s_msk, maskbits.CRAY, 60),
                             (t_img, t_msk, maskbits.BADPIX, 30)):
        ys = rng.integers(5, SHAPE[0] - 5, n)
        xs = rng.integers(5, SHAPE[1] - 5, n)
        img[ys, xs] += rng.uniform(2e3, 2e4, n).astype(np.float32)
        msk[ys, xs] |= bit
    s_var, t_var = pair.search_var.copy(), pair.template_var.copy()
    s_var[(s_msk & maskbits.UNUSABLE) != 0] = np.inf
    t_var[(t_msk & maskbits.UNUSABLE) != 0] = np.inf
    # fakes 2-9 px from the columns, next to the stars on them, next to cosmic rays and on
    # blank sky; a few bright enough to change the growth of what they touch
    fx = [c + 3 + d for c in cols for d in (2.5, 6.0)] + [c - 4.5 for c in cols]
    fy = [30.5, 95.2, 180.7, 280.3, 60.9, 230.4, 11.0 + 60, 120.8 + 7, 250.6 - 6]
    fx += list(sx[:3] + 6.0)
    fy += list(sy[:3] + 1.5)
    cy, cx = np.nonzero(s_msk)
    fx += list(cx[:6] + 3.3)
    fy += list(cy[:6] - 2.1)
    fx += [100.2, 200.7]
    fy += [100.4, 40.9]
    n = len(fx)
    fakes = Table({"x": np.asarray(fx, float), "y": np.asarray(fy, float),
                   "mag": rng.uniform(14.5, 19.0, n)})
    gain = np.full(SHAPE, 1.4, np.float32)
    return {"pair": pair, "ps": ps, "pt": pt, "s": (s_img, s_var, s_msk),
            "t": (t_img, t_var, t_msk), "fakes": fakes, "gain": gain}


def _predict(scene, image: np.ndarray) -> MaskPrediction:
    pair = scene["pair"]
    s_var, s_msk = scene["s"][1:]
    t_img, t_var, t_msk = scene["t"]
    return predict_difference_mask(image, s_var, s_msk, scene["ps"], t_img, t_var, t_msk,
                                   scene["pt"], zp_search=pair.zp_search,
                                   zp_template=pair.zp_template, config=CFG,
                                   template_gain_map=scene["gain"])


def _subtract(scene, image: np.ndarray, prediction: MaskPrediction | None = None):
    pair = scene["pair"]
    s_var, s_msk = scene["s"][1:]
    t_img, t_var, t_msk = scene["t"]
    return subtract(image, s_var, s_msk, scene["ps"], t_img, t_var, t_msk, scene["pt"],
                    zp_search=pair.zp_search, zp_template=pair.zp_template, config=CFG,
                    template_gain_map=scene["gain"], mask_prediction=prediction)


def test_updated_prediction_is_exactly_the_mask_of_the_subtraction_with_fakes(scene) -> None:
    s_img = scene["s"][0]
    before = _predict(scene, s_img)
    inj = inject_fakes(s_img, None, scene["ps"], scene["fakes"], zp=scene["pair"].zp_search,
                       rng=np.random.default_rng(2))
    updated = before.update(inj.image)
    full = _predict(scene, inj.image)
    assert np.array_equal(updated.mask, full.mask)
    assert updated.growth == full.growth
    # the fakes changed how far some clusters grow (the partial regrowth was exercised)
    assert updated._clusters is not None and before._clusters is not None
    changed = updated._clusters.r_cl != before._clusters.r_cl
    assert changed.sum() >= 2, changed.sum()
    assert not np.array_equal(updated.mask, before.mask)
    sub = _subtract(scene, inj.image)
    assert np.array_equal(updated.mask, sub.mask)
    reused = _subtract(scene, inj.image, updated)
    assert np.array_equal(reused.mask, sub.mask)
    assert reused.meta["mask_growth"] == sub.meta["mask_growth"]
    assert reused.meta["masked_fraction"] == sub.meta["masked_fraction"]
    for name in ("diff", "diff_var", "score", "flux_image", "flux_err_image"):
        assert np.array_equal(getattr(reused, name), getattr(sub, name)), name


def test_update_given_the_injection_windows_is_the_full_update(scene) -> None:
    s_img = scene["s"][0]
    before = _predict(scene, s_img)
    inj = inject_fakes(s_img, None, scene["ps"], scene["fakes"], zp=scene["pair"].zp_search,
                       rng=np.random.default_rng(2))
    assert len(inj.windows) == len(scene["fakes"])
    outside = np.ones(s_img.shape, bool)
    for y0, y1, x0, x1 in inj.windows:
        outside[y0:y1, x0:x1] = False
    assert np.array_equal(inj.image[outside], s_img[outside])  # the windows hold every change
    full = before.update(inj.image)
    windowed = before.update(inj.image, windows=inj.windows)
    assert np.array_equal(windowed.mask, full.mask)
    assert windowed.growth == full.growth
    assert not np.array_equal(windowed.mask, before.mask)
    # windows that miss the fakes: their clusters are not decided again (so the windows are
    # what is compared), and no window at all is no change
    assert np.array_equal(before.update(inj.image, windows=np.zeros((0, 4), int)).mask,
                          before.mask)
    with pytest.raises(ValueError, match="windows"):
        before.update(inj.image, windows=np.array([[-1, 5, 0, 5]]))


def test_update_without_changes_and_with_pixels_losing_data(scene) -> None:
    s_img = scene["s"][0]
    before = _predict(scene, s_img)
    same = before.update(s_img.copy())
    assert np.array_equal(same.mask, before.mask)
    # a pixel that lost its data (NaN) changes the combined mask: computed again in full
    img = s_img.copy()
    img[150, 100] = np.nan
    assert np.array_equal(before.update(img).mask, _predict(scene, img).mask)


def test_a_prediction_for_other_inputs_is_refused(scene) -> None:
    s_img = scene["s"][0]
    before = _predict(scene, s_img)
    with pytest.raises(ValueError, match="other inputs"):
        _subtract(scene, s_img.copy(), before)
