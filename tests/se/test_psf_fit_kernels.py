"""The PSF-fit kernels that reuse rendered stamps (``render_psf_stamps``, ``psf_fit_stamps``,
``add_psf_stamps``) against a straightforward numpy reference of the fit that
:mod:`desgw.se.measure` documents, on a small scene with masked pixels, sources at the edges,
a spatially varying model and a subtracted neighbour model."""

from __future__ import annotations

import numpy as np

from desgw.se.measure_kernels import (add_psf_sources, add_psf_stamps, psf_fit_all,
                                      psf_fit_stamps, render_psf_stamps)
from desgw.se.psf import poly_terms
from desgw.se.psf_lanczos import shift_stamp

ORDER = 4


def _basis(s: int) -> np.ndarray:
    """A degree-1 basis (3, s, s): an elliptical Moffat plus x- and y-gradients of width."""
    yy, xx = np.mgrid[:s, :s] - s // 2
    core = (1 + (xx ** 2 + 1.2 * yy ** 2 + 0.3 * xx * yy) / 2.5 ** 2) ** -2.5
    wider = (1 + (xx ** 2 + yy ** 2) / 3.2 ** 2) ** -2.5
    return np.stack([core / core.sum(), 0.3 * (wider / wider.sum() - core / core.sum()),
                     0.2 * np.roll(core / core.sum(), 1, axis=0) - 0.2 * core / core.sum()])


def _scene(seed: int = 3):
    rng = np.random.default_rng(seed)
    ny, nx, s = 90, 110, 17
    coeffs = _basis(s)
    xs = np.concatenate([rng.uniform(5, nx - 6, 22), [0.3, nx - 1.2, 40.0]])
    ys = np.concatenate([rng.uniform(5, ny - 6, 22), [20.0, 70.0, ny - 0.6]])
    terms = poly_terms((xs - nx / 2) / nx, (ys - ny / 2) / ny, 1)
    flux = rng.uniform(500, 2e5, xs.size)
    truth = np.zeros((ny, nx))
    add_psf_sources(truth, 0, 0, xs, ys, flux, terms, coeffs, ORDER)
    weight = rng.uniform(0.8, 1.2, (ny, nx)).astype(np.float32) / np.float32(100.0)
    data = (truth + rng.normal(size=truth.shape) * np.sqrt(100.0 + truth)).astype(np.float32)
    bad = np.zeros((ny, nx), bool)
    bad[30:33, 50:53] = True                   # a masked blob inside some fit windows
    weight[60, :] = 0.0                        # and a dead row
    bad[rng.integers(0, ny, 40), rng.integers(0, nx, 40)] = True
    return data, weight, bad, xs, ys, terms, coeffs, flux


def _ref_render(coeffs, t, x, y):
    ic, jc = np.floor(x + 0.5), np.floor(y + 0.5)
    img = shift_stamp(np.tensordot(t, coeffs, axes=(0, 0)), x - ic, y - jc, ORDER)
    return img / img.sum(), int(ic), int(jc)


def _ref_fit(data, weight, bad, x, y, p, g, ic, jc, radius, gain, max_iter, own):
    """The fit as measure's docstring states it, with numpy over the pixels within ``radius``."""
    s = p.shape[0]
    h = s // 2
    rows = jc - h + np.arange(s)[:, None] + np.zeros((1, s), int)
    cols = ic - h + np.arange(s)[None, :] + np.zeros((s, 1), int)
    inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    r, c = rows[inside], cols[inside]
    pp, gg = p[inside], g[inside]
    ok = ~bad[r, c] & (weight[r, c] > 0) & ((c - x) ** 2 + (r - y) ** 2 <= radius ** 2)
    r, c, pp, gg = r[ok], c[ok], pp[ok], gg[ok]
    v0 = 1.0 / weight[r, c].astype(np.float64)
    d = data[r, c].astype(np.float64) + own * pp
    f = 0.0
    for it in range(max_iter):
        var = v0 + (np.maximum(f * pp, 0) / gain if it else 0.0)
        fnew = np.sum(pp * d / var) / np.sum(pp * pp / var)
        done = it > 0 and abs(fnew - f) <= 1e-5 * abs(fnew) + 1e-3
        f = fnew
        ferr = 1.0 / np.sqrt(np.sum(pp * pp / var))
        if done:
            break
    w = 1.0 / (v0 + np.maximum(f * pp, 0) / gain)
    chi2 = np.sum((d - f * pp) ** 2 * w) / (pp.size - 1)
    gwx, pwx = np.sum(gg * w * d), np.sum(pp * w * d)
    gwp, pwp, gwg = np.sum(gg * w * pp), np.sum(pp * w * pp), np.sum(gg * w * gg)
    spread = gwx / pwx - gwp / pwp
    spreaderr = np.sqrt(pwx ** 2 * gwg - 2 * gwx * pwx * gwp + gwx ** 2 * pwp) / pwx ** 2
    return f, ferr, chi2, spread, spreaderr, it + 1


def test_psf_fit_stamps_matches_reference_fit():
    data, weight, bad, xs, ys, terms, coeffs, flux = _scene()
    gco = np.stack([np.roll(c, 1, axis=1) * 0.5 + c * 0.5 for c in coeffs])  # a wider "galaxy"
    radius = np.full(xs.size, 7.0)
    own = np.where(np.arange(xs.size) % 3 == 0, 0.5 * flux, 0.0)
    stamps, fwhm = render_psf_stamps(xs, ys, terms, coeffs, ORDER)
    out = psf_fit_stamps(data, weight, bad, xs, ys, stamps, fwhm, terms, gco, ORDER, radius,
                         1.0, 5, own, True)
    for i in range(xs.size):
        p, ic, jc = _ref_render(coeffs, terms[i], xs[i], ys[i])
        g, _, _ = _ref_render(gco, terms[i], xs[i], ys[i])
        np.testing.assert_allclose(stamps[i], p, rtol=0, atol=1e-12)
        area = np.count_nonzero(p >= 0.5 * p.max())
        assert fwhm[i] == 2.0 * np.sqrt(area / np.pi)
        ref = _ref_fit(data, weight, bad, xs[i], ys[i], p, g, ic, jc, 7.0, 1.0, 5, own[i])
        got = (out[0][i], out[1][i], out[2][i], out[4][i], out[5][i])
        np.testing.assert_allclose(got, ref[:5], rtol=1e-9, err_msg=f"source {i}")
        assert out[3][i] == ref[5]
    # without a neighbour model, the fluxes of the sources > 12 pix from any other sit at
    # the truth within their errors
    alone = psf_fit_stamps(data, weight, bad, xs, ys, stamps, fwhm, terms, gco, ORDER, radius,
                           1.0, 5, np.zeros(xs.size), True)[:2]
    dist = np.hypot(xs[:, None] - xs[None], ys[:, None] - ys[None]) + 1e3 * np.eye(xs.size)
    iso = dist.min(axis=1) > 12
    pull = (alone[0] - flux) / alone[1]
    assert iso.sum() >= 8 and np.all(np.abs(pull[iso]) < 4), pull[iso]


def test_stamp_kernels_equal_the_per_source_kernels():
    """psf_fit_all and add_psf_sources render per source; the stamp versions reuse the
    stamps: the same numbers bit for bit, and the flux-only fit gives the full fit's flux."""
    data, weight, bad, xs, ys, terms, coeffs, flux = _scene(seed=8)
    radius = np.full(xs.size, 6.0)
    own = np.where(np.arange(xs.size) % 2 == 0, flux, 0.0)
    full = psf_fit_all(data, weight, bad, xs, ys, terms, coeffs, coeffs[::-1].copy(), ORDER,
                       radius, 1.0, 5, own)
    stamps, fwhm = render_psf_stamps(xs, ys, terms, coeffs, ORDER)
    quick = psf_fit_stamps(data, weight, bad, xs, ys, stamps, fwhm, terms, coeffs, ORDER,
                           radius, 1.0, 5, own, False)
    for k in (0, 1, 3):  # flux, its error, iterations
        assert np.array_equal(quick[k], full[k], equal_nan=True)
    assert np.all(np.isnan(quick[2])) and np.all(np.isnan(quick[4]))
    for out_dtype in (np.float32, np.float64):
        a = np.zeros((70, 95), out_dtype)
        b = np.zeros((70, 95), out_dtype)
        add_psf_sources(a, 7, -3, xs, ys, flux, terms, coeffs, ORDER)
        add_psf_stamps(b, 7, -3, xs, ys, flux, stamps)
        assert np.array_equal(a, b) and a.any()


def test_fwhm_at_remembered_per_model():
    """fwhm_at's remembered values are the fit's, and a model made by dataclasses.replace
    (other coefficients) does not inherit them."""
    import dataclasses

    from desgw.se.psf import PSFModel
    from desgw.se.psf_shape import fit_moffat

    coeffs = _basis(25)
    psf = PSFModel(coeffs=coeffs, degree=1, x_zero=50.0, x_scale=100.0, y_zero=40.0,
                   y_scale=80.0, image_shape=(80, 100))
    first = psf.fwhm_at(50.0, 40.0)
    assert first == fit_moffat(psf.centred(50.0, 40.0)).fwhm
    assert psf.fwhm_at(50.0, 40.0) == first
    assert psf.fwhm_at(10.0, 70.0) != first  # the gradient terms change the width
    yy, xx = np.mgrid[:25, :25] - 12
    wide = (1 + (xx ** 2 + yy ** 2) / 4.0 ** 2) ** -2.5
    other = dataclasses.replace(psf, coeffs=np.stack([wide / wide.sum(), 0 * wide, 0 * wide]))
    assert other.fwhm_at(50.0, 40.0) > first * 1.2
