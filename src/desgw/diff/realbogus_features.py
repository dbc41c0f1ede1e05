"""Real/bogus features of difference-image candidates (catalog columns + 51 x 51 stamps + context).

Every feature is scale free: lengths are in units of the difference-image PSF FWHM ``f``
(candidate column ``fwhm_psf``, pixels), fluxes are ratios, pixel values are in units of the local
noise. The difference stamp is *sign corrected* (multiplied by -1 for a negative candidate) and
the "new" image is the one holding the extra flux: the search image for a positive candidate,
the (scaled) template for a negative one; "ref" is the other. Radii ``r`` are measured from the
candidate's sub-pixel position. ``sigma`` is the local noise of the difference stamp: the robust
standard deviation (1.4826 x MAD) of its valid, non-zero pixels at ``r > 3 f`` (all such pixels
when fewer than 50). Non-finite inputs give the documented fill values, so features are always
finite.

==  ======================  ======================================================================
 #  name                    definition
==  ======================  ======================================================================
 0  ``log_snr``             log10 of ``|snr|`` clipped to [1, 1e4]
 1  ``log_psf_chi2``        log10 of ``psf_chi2`` clipped to [0.01, 1e4] (NaN -> 4)
 2  ``fwhm_ratio``          ``fwhm_ratio`` clipped to [0, 5] (NaN -> 0)
 3  ``moment_ellip``        ``|(mxx - myy, 2 mxy)| / (mxx + myy)`` of the windowed moments,
                            [0, 1] (NaN or trace <= 0 -> 1)
 4  ``dipole_ratio``        ``dipole_ratio`` clipped to [0, 5] (NaN -> 5)
 5  ``lobe_rel``            opposite-lobe ``S_corr`` over the peak's: ``-sign *
                            dipole_lobe_score / |score|`` clipped to [-1, 2]
 6  ``masked_frac``         ``masked_frac`` (NaN -> 1)
 7  ``psf_over_zogy``       ``flux_psf / flux`` clipped to [-2, 4] (NaN -> -2)
 8  ``aper_over_psf``       ``diff_flux_aper / flux_psf`` clipped to [-2, 4] (NaN -> -2)
 9  ``diff_over_new``       ``sign * diff_flux_aper / |new aperture flux|`` clipped to [-2, 4]
10  ``log_ref_over_diff``   log10(1 + max(ref aperture flux, 0) / |diff_flux_aper|), [0, 6]
11  ``score_over_snr``      ``|score| / |snr|`` clipped to [0, 4]
12  ``log_noise_ratio``     log10 of ``sigma / (flux_err / sqrt(4 pi (f / 2.3548)^2))``: local
                            noise over the noise the flux error implies for white noise,
                            [-2, 2]
13  ``sharpness``           central 3 x 3 maximum of the diff stamp x ``f^2`` / (sign ``flux_psf``),
                            clipped to [-5, 20] (a point source ~1, a cosmic ray >> 1)
14  ``peak_offset``         distance of the diff maximum within ``r < 1.5 f`` from the
                            candidate position, in ``f``
15  ``neg_frac``            within ``r < 2 f``: pixels ``< -3 sigma`` over pixels with
                            ``|value| > 3 sigma`` (0 when none)
16  ``symmetry``            ``sum d rot180(d) / sum d^2`` within ``r < 2 f`` (about the centre
                            pixel): ~1 for a point source, < 0 for a dipole
17  ``concentration``       ``sum d (r < 0.5 f) / sum d (r < 1.5 f)``, clipped to [-2, 2]
18  ``outer_ring``          ``sum d (1.5 f < r < 3 f) / sum d (r < 1.5 f)``, clipped to [-3, 3]
19  ``far_clutter``         fraction of pixels at ``r > 3 f`` with ``|d| > 4 sigma``
20  ``blob_elong``          1 - b/a of the connected ``d > 2 sigma`` region holding the
                            centre (second moments; 0 when the centre is below 2 sigma)
21  ``log_blob_area``       log10(1 + pixels of that region / ``f^2``)
22  ``blob_touches_edge``   1 when that region reaches the stamp border, else 0
23  ``new_sharpness``       the same as ``sharpness`` on the new image stamp (minus its median at
                            ``r > 3 f``), over its ``r < 1.5 f`` sum, clipped to [-5, 20]
24  ``ref_sharpness``       the same on the ref image, clipped to [-5, 20] (0 for a sum <= 0)
25  ``log_ref_peak``        sign-kept log10(1 + |x|) of the ref image's central 3 x 3 maximum
                            (minus its far median) over the ref's far robust sigma
26  ``invalid_frac``        fraction of invalid pixels (any kind) in the stamp
27  ``zero_frac``           fraction of exactly-zero diff pixels (blanked, masked) within
                            ``r < 3 f``
28  ``dipole_sep``          ``dipole_sep / f`` (NaN, no opposite lobe -> 0)
29  ``col_ext_max``         column coherence (bad columns): mean of the diff in the columns
                            within ``0.5 f`` (>= 1 px) of the candidate's, at rows more than
                            ``2 f`` above the candidate, and the same below; the larger of the
                            two over the central 3 x 3 maximum of the diff, [-2, 2] (a point
                            source ~0, a column defect on one image ~0.2-1)
30  ``col_ext_min``         the smaller of the two (a column crossing the stamp), [-2, 2]
31  ``new_col``             one-pixel column anomaly of the new image: for each of the 3
                            columns nearest the candidate, the median over rows beyond ``2 f``
                            (above; below) of the pixel minus the mean of the pixels 3 columns
                            left and right; the largest, over the new image's far robust sigma,
                            [-5, 50]
32  ``ref_col``             the same on the ref image with the sign reversed (a dark column on
                            the ref makes a positive difference), [-5, 50]
33  ``ref_offset``          distance of the ref image's light centroid within ``r < 1.5 f``
                            (far median subtracted) from the candidate, in ``f``, [0, 2]; 2 when
                            that light is below 3 sigma (a star residual ~0, a transient on a
                            galaxy ~ its offset from the nucleus)
34  ``diff_ref_corr``       Pearson correlation of the diff and the ref image within ``r < 2 f``
35  ``ctx_ratio_dev``       context (see :func:`_context_features`): distance in dex of this
                            candidate's ``diff_over_new`` from the median over the other
                            same-sign candidates of the set sitting on reference point sources
36  ``ctx_ratio_frac``      the fraction of those within 0.15 dex of this candidate's ratio
37  ``ctx_sign_frac``       the fraction of the set's point-source candidates with this sign
==  ======================  ======================================================================

Features 0-34 are a function of the candidate's own row and stamps. The context features 35-37
compare it with the *other candidates of the same call*: pass one CCD's candidates at a time
(as :func:`desgw.diff.pipeline` does); a PSF-model or photometric-scale error leaves the same
fractional residual on every bright star of a CCD, which no single stamp can tell from a
transient on a compact galaxy's nucleus.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from numba import njit

from desgw.diff.stamps import Stamps

__all__ = ["FEATURE_NAMES", "FEATURE_VERSION", "REQUIRED_COLUMNS", "compute_features"]

#: Bumped whenever a feature's definition changes; models record it.
FEATURE_VERSION: int = 2

FEATURE_NAMES: tuple[str, ...] = (
    "log_snr", "log_psf_chi2", "fwhm_ratio", "moment_ellip", "dipole_ratio", "lobe_rel",
    "masked_frac", "psf_over_zogy", "aper_over_psf", "diff_over_new", "log_ref_over_diff",
    "score_over_snr", "log_noise_ratio", "sharpness", "peak_offset", "neg_frac", "symmetry",
    "concentration", "outer_ring", "far_clutter", "blob_elong", "log_blob_area",
    "blob_touches_edge", "new_sharpness", "ref_sharpness", "log_ref_peak", "invalid_frac",
    "zero_frac", "dipole_sep", "col_ext_max", "col_ext_min", "new_col", "ref_col",
    "ref_offset", "diff_ref_corr", "ctx_ratio_dev", "ctx_ratio_frac", "ctx_sign_frac",
)

#: Candidate-table columns the features use (desgw.diff.measure.measure_candidates names).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "x", "y", "negative", "score", "flux", "flux_err", "snr", "flux_psf", "psf_chi2", "mxx",
    "myy", "mxy", "fwhm_psf", "fwhm_ratio", "dipole_ratio", "dipole_sep", "dipole_lobe_score",
    "masked_frac", "search_flux_aper", "template_flux_aper", "diff_flux_aper",
)


def _col(t: Table, name: str) -> np.ndarray:
    return np.asarray(t[name], dtype=np.float64)


def _ratio(a: np.ndarray, b: np.ndarray, lo: float, hi: float, fill: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    return np.where(np.isfinite(r), np.clip(r, lo, hi), fill)


def compute_features(candidates: Table, stamps: Stamps) -> np.ndarray:
    """Feature matrix of the candidates (see the module docstring for the definitions).

    Parameters
    ----------
    candidates : astropy.table.Table
        :func:`desgw.diff.measure.measure_candidates` output (:data:`REQUIRED_COLUMNS`).
    stamps : Stamps
        Their stamps (kinds ``search``, ``template``, ``diff``; odd side >= 21 px), row for row.

    Returns
    -------
    numpy.ndarray
        (n, len(FEATURE_NAMES)) float32, all finite.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in candidates.colnames]
    if missing:
        raise ValueError(f"candidate table lacks the columns {missing}")
    n = len(candidates)
    if len(stamps) != n:
        raise ValueError(f"{len(stamps)} stamps for {n} candidates")
    for k in ("search", "template", "diff"):
        if k not in stamps.kinds:
            raise ValueError(f"stamps lack the kind {k!r} (have {stamps.kinds})")
    size = stamps.size
    if size < 21 or size % 2 == 0:
        raise ValueError(f"stamps must have an odd side >= 21, got {size}")
    out = np.zeros((n, len(FEATURE_NAMES)), np.float64)
    if n == 0:
        return out.astype(np.float32)

    neg = np.asarray(candidates["negative"], bool)
    sign = np.where(neg, -1.0, 1.0)
    snr, score = np.abs(_col(candidates, "snr")), _col(candidates, "score")
    flux, flux_err = _col(candidates, "flux"), _col(candidates, "flux_err")
    flux_psf = _col(candidates, "flux_psf")
    f = _col(candidates, "fwhm_psf")
    f = np.where(np.isfinite(f) & (f > 0.5), f, 4.0)
    mxx, myy, mxy = _col(candidates, "mxx"), _col(candidates, "myy"), _col(candidates, "mxy")
    s_ap, t_ap = _col(candidates, "search_flux_aper"), _col(candidates, "template_flux_aper")
    d_ap = _col(candidates, "diff_flux_aper")
    new_ap, ref_ap = np.where(neg, t_ap, s_ap), np.where(neg, s_ap, t_ap)

    F = {name: i for i, name in enumerate(FEATURE_NAMES)}
    out[:, F["log_snr"]] = np.log10(np.clip(np.nan_to_num(snr, nan=1.0), 1.0, 1e4))
    chi2 = _col(candidates, "psf_chi2")
    out[:, F["log_psf_chi2"]] = np.where(np.isfinite(chi2),
                                         np.log10(np.clip(chi2, 1e-2, 1e4)), 4.0)
    fr = _col(candidates, "fwhm_ratio")
    out[:, F["fwhm_ratio"]] = np.where(np.isfinite(fr), np.clip(fr, 0, 5), 0.0)
    tr = mxx + myy
    with np.errstate(divide="ignore", invalid="ignore"):
        el = np.hypot(mxx - myy, 2 * mxy) / tr
    out[:, F["moment_ellip"]] = np.where(np.isfinite(el) & (tr > 0), np.clip(el, 0, 1), 1.0)
    dr = _col(candidates, "dipole_ratio")
    out[:, F["dipole_ratio"]] = np.where(np.isfinite(dr), np.clip(dr, 0, 5), 5.0)
    out[:, F["lobe_rel"]] = _ratio(-sign * _col(candidates, "dipole_lobe_score"),
                                   np.abs(score), -1, 2, 0.0)
    mf = _col(candidates, "masked_frac")
    out[:, F["masked_frac"]] = np.where(np.isfinite(mf), mf, 1.0)
    out[:, F["psf_over_zogy"]] = _ratio(flux_psf, flux, -2, 4, -2.0)
    out[:, F["aper_over_psf"]] = _ratio(d_ap, flux_psf, -2, 4, -2.0)
    out[:, F["diff_over_new"]] = _ratio(sign * d_ap, np.abs(new_ap), -2, 4, 4.0)
    rod = _ratio(np.clip(ref_ap, 0, None), np.abs(d_ap), 0, 1e6, 1e6)
    out[:, F["log_ref_over_diff"]] = np.log10(1.0 + rod)
    out[:, F["score_over_snr"]] = _ratio(np.abs(score), snr, 0, 4, 0.0)
    dsep = _col(candidates, "dipole_sep") / f
    out[:, F["dipole_sep"]] = np.where(np.isfinite(dsep), dsep, 0.0)

    # ---- stamps
    kinds = stamps.kinds
    data = np.ascontiguousarray(stamps.data, dtype=np.float32)
    valid = np.ascontiguousarray(stamps.valid, dtype=np.bool_)
    ox = _col(candidates, "x") - stamps.x0
    oy = _col(candidates, "y") - stamps.y0
    sf = _stamp_features(data, valid, kinds.index("search"), kinds.index("template"),
                         kinds.index("diff"), neg, ox, oy, f, flux_psf, flux_err)
    for j, name in enumerate(_STAMP_FEATURES):
        if name != "invalid_frac":
            out[:, F[name]] = sf[:, j]
    out[:, F["invalid_frac"]] = 1.0 - valid.all(axis=1).mean(axis=(1, 2))
    _context_features(out, F, neg)
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32)


#: A candidate "sits on a point source of the reference" when its ``ref_offset`` is below this
#: (units of f) ...
_CTX_MAX_OFFSET: float = 0.25
#: ... and its ``log_ref_over_diff`` above this (reference flux > ~4 x the difference flux).
_CTX_MIN_REF: float = 0.7
#: Fewer such others than this: the context features get their fill values.
_CTX_MIN_OTHERS: int = 3
#: Two flux ratios are "alike" within this many dex.
_CTX_TOL_DEX: float = 0.15


def _context_features(out: np.ndarray, F: dict[str, int], neg: np.ndarray) -> None:
    """The ``ctx_*`` features (in place): how a candidate compares with the others of the set.

    A PSF-model or photometric-scale error leaves on *every* bright point source a residual of
    the same sign and the same fraction of its flux; a transient on a compact galaxy's nucleus
    is alone in doing so. Among the *other* candidates of the set with the same sign sitting on
    a point source of the reference (``ref_offset`` < 0.25 and ``log_ref_over_diff`` > 0.7):
    ``ctx_ratio_dev`` = |log10 ``diff_over_new`` - their median| (dex, [0, 3]; 3 with fewer
    than 3 of them), ``ctx_ratio_frac`` = the fraction of them within 0.15 dex of this
    candidate's ratio (0 with fewer than 3). ``ctx_sign_frac`` = the fraction of all the
    point-source candidates having this candidate's sign (0.5 with fewer than 3 others).
    All three are intensive (independent of the set's area for a given scene).
    """
    n = out.shape[0]
    ratio = np.log10(np.clip(out[:, F["diff_over_new"]], 1e-3, None))
    pt = (out[:, F["ref_offset"]] < _CTX_MAX_OFFSET) & (out[:, F["log_ref_over_diff"]]
                                                         > _CTX_MIN_REF)
    dev = np.full(n, 3.0)
    frac = np.zeros(n)
    sfrac = np.full(n, 0.5)
    idx = np.flatnonzero(pt)
    for sgn in (False, True):
        same = idx[neg[idx] == sgn]
        other = idx[neg[idx] != sgn]
        for i in range(n):
            if neg[i] != sgn:
                continue
            js = same[same != i]
            n_all = js.size + other[other != i].size
            if n_all >= _CTX_MIN_OTHERS:
                sfrac[i] = js.size / n_all
            if js.size >= _CTX_MIN_OTHERS:
                rj = ratio[js]
                dev[i] = min(abs(ratio[i] - np.median(rj)), 3.0)
                frac[i] = np.count_nonzero(np.abs(rj - ratio[i]) < _CTX_TOL_DEX) / js.size
    out[:, F["ctx_ratio_dev"]] = dev
    out[:, F["ctx_ratio_frac"]] = frac
    out[:, F["ctx_sign_frac"]] = sfrac


#: Pixels per median at most (about; far-pixel sets are subsampled with a regular stride).
_MAX_SAMPLE: int = 300

#: Features computed by :func:`_stamp_features`, in its column order.
_STAMP_FEATURES: tuple[str, ...] = (
    "log_noise_ratio", "sharpness", "peak_offset", "neg_frac", "symmetry", "concentration",
    "outer_ring", "far_clutter", "blob_elong", "log_blob_area", "blob_touches_edge",
    "new_sharpness", "ref_sharpness", "log_ref_peak", "invalid_frac", "zero_frac",
    "col_ext_max", "col_ext_min", "new_col", "ref_col", "ref_offset", "diff_ref_corr",
)


@njit(cache=True)
def _median_sigma(buf, m, want_sigma):  # pragma: no cover - numba
    """Median and 1.4826 MAD of buf[:m] (NaN, NaN when m == 0).

    More than 2 x :data:`_MAX_SAMPLE` values are subsampled with a regular stride (speed).
    """
    if m == 0:
        return np.nan, np.nan
    step = max(1, m // _MAX_SAMPLE)
    v = buf[:m:step].copy()
    med = np.median(v)
    if not want_sigma:
        return med, np.nan
    for i in range(v.size):
        v[i] = abs(v[i] - med)
    return med, 1.4826 * np.median(v)


@njit(cache=True)
def _clip(v, lo, hi, fill):  # pragma: no cover - numba
    if not np.isfinite(v):
        return fill
    return min(max(v, lo), hi)


@njit(cache=True)
def _stamp_features(data, valid, ks, kt, kd, neg, ox, oy, fwhm, flux_psf,
                    flux_err):  # pragma: no cover - numba
    n, _, size, _ = data.shape
    c = size // 2
    out = np.zeros((n, len(_STAMP_FEATURES)))
    bc = np.empty(size)
    rr = np.empty((size, size))
    d = np.empty((size, size))
    bd = np.empty(size * size)
    bd2 = np.empty(size * size)
    bn = np.empty(size * size)
    br = np.empty(size * size)
    blob = np.zeros((size, size), np.bool_)
    stack = np.empty(size * size, np.int64)
    for i in range(n):
        sgn = -1.0 if neg[i] else 1.0
        f = fwhm[i]
        kn, kr = (kt, ks) if neg[i] else (ks, kt)
        # pass 1, whole stamp: radii, the sign-corrected diff, far-pixel samples
        nfar = md = mn = mall = 0
        for y in range(size):
            for x in range(size):
                r = np.sqrt((x - c - ox[i]) ** 2 + (y - c - oy[i]) ** 2) / f
                rr[y, x] = r
                v = sgn * data[i, kd, y, x]
                d[y, x] = v
                if valid[i, kd, y, x] and v != 0:
                    bd2[mall] = v
                    mall += 1
                if r > 3.0:
                    nfar += 1
                    if valid[i, kd, y, x] and v != 0:
                        bd[md] = v
                        md += 1
                    bn[mn] = data[i, kn, y, x]
                    br[mn] = data[i, kr, y, x]
                    mn += 1
        if md < 50:
            bd[:mall] = bd2[:mall]
            md = mall
        bd2[:md] = bd[:md]
        _, sigma = _median_sigma(bd, md, True)
        if not (sigma > 0):
            sigma = np.inf
        nclut = 0
        for j in range(md):
            if abs(bd2[j]) > 4 * sigma:
                nclut += 1
        out[i, 7] = nclut / max(nfar, 1)
        med_n, sig_n = _median_sigma(bn, mn, True)
        med_r, sig_r = _median_sigma(br, mn, True)
        med_n = 0.0 if not np.isfinite(med_n) else med_n
        med_r = 0.0 if not np.isfinite(med_r) else med_r
        nea = 4 * np.pi * (f / 2.3548) ** 2
        out[i, 0] = _clip(np.log10(sigma / (flux_err[i] / np.sqrt(nea))), -2.0, 2.0, 2.0)
        cm = cn = cr = -np.inf
        for y in range(c - 1, c + 2):
            for x in range(c - 1, c + 2):
                cm = max(cm, d[y, x])
                cn = max(cn, data[i, kn, y, x] - med_n)
                cr = max(cr, data[i, kr, y, x] - med_r)
        out[i, 1] = _clip(cm * f * f / (sgn * flux_psf[i]), -5.0, 20.0, 20.0)
        # pass 2, the box holding r < 3 f
        h = min(c, int(np.ceil(3 * f + 1.5)))
        best, by, bx = -np.inf, c, c
        nneg = nsig = zer = n3 = 0
        s_sym = s_sq = s_in = s_core = s_ring = t_n = t_r = 0.0
        for y in range(c - h, c + h + 1):
            for x in range(c - h, c + h + 1):
                r, v = rr[y, x], d[y, x]
                if r >= 3.0:
                    continue
                n3 += 1
                if v == 0:
                    zer += 1
                if r < 1.5:
                    s_in += v
                    t_n += data[i, kn, y, x] - med_n
                    t_r += data[i, kr, y, x] - med_r
                    if v > best:
                        best, by, bx = v, y, x
                    if r < 0.5:
                        s_core += v
                else:
                    s_ring += v
                if r < 2.0:
                    if v < -3 * sigma:
                        nneg += 1
                    if abs(v) > 3 * sigma:
                        nsig += 1
                    yr, xr = 2 * c - y, 2 * c - x
                    w = d[yr, xr] if rr[yr, xr] < 2.0 else 0.0
                    s_sym += v * w
                    s_sq += v * v
        out[i, 2] = np.sqrt((bx - c - ox[i]) ** 2 + (by - c - oy[i]) ** 2) / f
        out[i, 3] = nneg / nsig if nsig > 0 else 0.0
        out[i, 4] = _clip(s_sym / s_sq, -1.0, 1.0, 0.0) if s_sq > 0 else 0.0
        out[i, 5] = _clip(s_core / s_in, -2.0, 2.0, 0.0) if s_in != 0 else 0.0
        out[i, 6] = _clip(s_ring / s_in, -3.0, 3.0, 0.0) if s_in != 0 else 0.0
        out[i, 15] = zer / max(n3, 1)
        out[i, 11] = _clip(cn * f * f / t_n, -5.0, 20.0, 0.0) if t_n > 0 else 20.0
        out[i, 12] = _clip(cr * f * f / t_r, -5.0, 20.0, 0.0) if t_r > 0 else 0.0
        q = _clip(cr / sig_r, -1e6, 1e6, 0.0) if sig_r > 0 else 0.0
        out[i, 13] = np.sign(q) * np.log10(1.0 + abs(q))
        # column coherence: the diff along the candidate's column beyond 2 f (above, below)
        xc, yc = c + ox[i], c + oy[i]
        xi = min(max(int(np.floor(xc + 0.5)), 3), size - 4)
        w = max(1, int(np.floor(0.5 * f + 0.5)))
        m_hi = m_lo = 0.0
        for half in range(2):
            sv = 0.0
            cnt = 0
            for y in range(size):
                dy = y - yc
                if (dy > 2 * f) if half == 0 else (dy < -2 * f):
                    for x in range(max(xi - w, 0), min(xi + w + 1, size)):
                        if valid[i, kd, y, x]:
                            sv += d[y, x]
                            cnt += 1
            mv = sv / cnt if cnt > 0 else 0.0
            if half == 0:
                m_hi = mv
            else:
                m_lo = mv
        if cm > 0:
            out[i, 16] = _clip(max(m_hi, m_lo) / cm, -2.0, 2.0, 0.0)
            out[i, 17] = _clip(min(m_hi, m_lo) / cm, -2.0, 2.0, 0.0)
        # one-pixel column anomalies of the new (+) and ref (-) images beyond 2 f
        for which in range(2):
            k, direc, sg = (kn, 1.0, sig_n) if which == 0 else (kr, -1.0, sig_r)
            best_col = -np.inf
            for xx in range(xi - 1, xi + 2):
                for half in range(2):
                    m = 0
                    for y in range(size):
                        dy = y - yc
                        if ((dy > 2 * f) if half == 0 else (dy < -2 * f)) and valid[i, k, y, xx] \
                                and valid[i, k, y, xx - 3] and valid[i, k, y, xx + 3]:
                            bc[m] = direc * (data[i, k, y, xx] - 0.5 * (data[i, k, y, xx - 3]
                                                                        + data[i, k, y, xx + 3]))
                            m += 1
                    if m >= 5:
                        best_col = max(best_col, np.median(bc[:m]))
            val = best_col / sg if (sg > 0 and np.isfinite(best_col)) else 0.0
            out[i, 18 + which] = _clip(val, -5.0, 50.0, 0.0)
        # ref light centroid within 1.5 f (offset in f; 2 when no significant ref flux) and
        # the correlation of the diff with the ref within 2 f
        s_x = s_y = s_v = 0.0
        npx_r = 0
        a_d = a_r = a_dd = a_rr = a_dr = 0.0
        n2 = 0
        for y in range(c - h, c + h + 1):
            for x in range(c - h, c + h + 1):
                r = rr[y, x]
                if r >= 2.0:
                    continue
                vr = data[i, kr, y, x] - med_r
                if r < 1.5:
                    s_x += vr * (x - xc)
                    s_y += vr * (y - yc)
                    s_v += vr
                    npx_r += 1
                vd = d[y, x]
                a_d += vd
                a_r += vr
                a_dd += vd * vd
                a_rr += vr * vr
                a_dr += vd * vr
                n2 += 1
        if sig_r > 0 and s_v > 3 * sig_r * np.sqrt(max(npx_r, 1)):
            out[i, 20] = _clip(np.sqrt((s_x / s_v) ** 2 + (s_y / s_v) ** 2) / f, 0.0, 2.0, 2.0)
        else:
            out[i, 20] = 2.0
        if n2 > 2:
            vd_ = a_dd - a_d * a_d / n2
            vr_ = a_rr - a_r * a_r / n2
            if vd_ > 0 and vr_ > 0:
                out[i, 21] = _clip((a_dr - a_d * a_r / n2) / np.sqrt(vd_ * vr_), -1.0, 1.0,
                                   0.0)
        # connected d > 2 sigma region (8-connected) holding the centre pixel
        npx = 0
        sx = sy = sxx = syy = sxy = 0.0
        touch = 0.0
        if d[c, c] > 2 * sigma and valid[i, kd, c, c]:
            blob[:, :] = False
            stack[0] = c * size + c
            blob[c, c] = True
            top = 1
            while top > 0:
                top -= 1
                p = stack[top]
                y, x = p // size, p % size
                npx += 1
                sx += x
                sy += y
                sxx += x * x
                syy += y * y
                sxy += x * y
                if y == 0 or x == 0 or y == size - 1 or x == size - 1:
                    touch = 1.0
                for yy in range(max(y - 1, 0), min(y + 2, size)):
                    for xx in range(max(x - 1, 0), min(x + 2, size)):
                        if (not blob[yy, xx] and d[yy, xx] > 2 * sigma
                                and valid[i, kd, yy, xx]):
                            blob[yy, xx] = True
                            stack[top] = yy * size + xx
                            top += 1
        if npx > 0:
            mx, my = sx / npx, sy / npx
            cxx = sxx / npx - mx * mx + 1.0 / 12
            cyy = syy / npx - my * my + 1.0 / 12
            cxy = sxy / npx - mx * my
            tt = cxx + cyy
            dd = np.sqrt((cxx - cyy) ** 2 + 4 * cxy * cxy)
            out[i, 8] = 1.0 - np.sqrt(min(max((tt - dd) / (tt + dd), 0.0), 1.0))
        out[i, 9] = np.log10(1.0 + npx / (f * f))
        out[i, 10] = touch
    return out
