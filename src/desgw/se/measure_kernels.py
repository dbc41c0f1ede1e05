"""Numba kernels of the per-source measurement loops (apertures, half-light radii, windowed
centroids and their errors, PSF flux, SPREAD_MODEL, segment statistics).

They are compiled once per process (``cache=True`` keeps the machine code on disk) and loop
over sources in plain Python-free code: a full CCD with ~2000 sources takes a few tens of ms,
where the equivalent numpy per-source loop takes about a second.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from desgw.util.lanczos import shift_taps_into

__all__ = ["psf_fit_all", "psf_fit_stamps", "render_psf_stamps", "add_psf_sources",
           "add_psf_stamps", "window_errors_all", "segment_stats",
           "kron_neighbours_all",
           "circular_apertures", "flux_radius_all", "winpos_all", "winpos_stamps",
           "bad_from_mask", "prepare_measurement"]


@njit(cache=True)
def _render(coeffs: np.ndarray, terms: np.ndarray, wx: np.ndarray, wy: np.ndarray, order: int,
            tmp: np.ndarray, out: np.ndarray) -> None:
    """Model at the given polynomial terms, moved by the shift whose taps are ``wx``, ``wy``
    (:func:`desgw.util.lanczos.shift_taps_into`), normalised to sum 1."""
    nt, n, _ = coeffs.shape
    for a in range(n):
        for b in range(n):
            v = 0.0
            for k in range(nt):
                v += terms[k] * coeffs[k, a, b]
            out[a, b] = v
    for a in range(n):
        for b in range(n):
            v = 0.0
            for m in range(-order, order + 1):
                bb = b - m
                if 0 <= bb < n:
                    v += wx[m + order] * out[a, bb]
            tmp[a, b] = v
    s = 0.0
    for a in range(n):
        for b in range(n):
            v = 0.0
            for m in range(-order, order + 1):
                aa = a - m
                if 0 <= aa < n:
                    v += wy[m + order] * tmp[aa, b]
            out[a, b] = v
            s += v
    for a in range(n):
        for b in range(n):
            out[a, b] /= s


@njit(cache=True)
def _add_stamp(out, xc, yc, f, p):
    """``out += f * p`` with the (s, s) stamp ``p`` centred on ``out``'s pixel (``xc``, ``yc``),
    clipped at ``out``'s edges."""
    my, mx = out.shape
    s = p.shape[0]
    h = s // 2
    for a in range(s):
        yy = yc - h + a
        if yy < 0 or yy >= my:
            continue
        for b in range(s):
            xx = xc - h + b
            if 0 <= xx < mx:
                out[yy, xx] += f * p[a, b]


@njit(cache=True)
def add_psf_sources(out, x0, y0, xs, ys, flux, terms, coeffs, order):
    """Add ``flux * PSF`` of point sources to an image, in place.

    Parameters
    ----------
    out : float64 (my, mx)
        Image whose pixel ``[0, 0]`` is CCD pixel ``(x0, y0)``; sources are clipped at its edges.
    x0, y0 : int
        CCD position of ``out[0, 0]`` (0-based column, row).
    xs, ys : float64 (n,)
        0-based CCD positions of the sources.
    flux : float64 (n,)
        Source fluxes (e-).
    terms : float64 (n, n_terms)
        PSF polynomial terms at each position.
    coeffs : float64 (n_terms, s, s)
        PSF basis (rendered normalised to sum 1 over the stamp).
    order : int
        Lanczos order of the sub-pixel shift.
    """
    s = coeffs.shape[1]
    tmp = np.empty((s, s))
    p = np.empty((s, s))
    wx = np.empty(2 * order + 1)
    wy = np.empty(2 * order + 1)
    scratch = np.empty(8 * order + 24)  # desgw.util.lanczos.scratch_size(order)
    for i in range(xs.shape[0]):
        ic = int(np.floor(xs[i] + 0.5))
        jc = int(np.floor(ys[i] + 0.5))
        shift_taps_into(xs[i] - ic, order, wx, scratch)
        shift_taps_into(ys[i] - jc, order, wy, scratch)
        _render(coeffs, terms[i], wx, wy, order, tmp, p)
        _add_stamp(out, ic - x0, jc - y0, flux[i], p)


@njit(cache=True)
def render_psf_stamps(xs, ys, terms, coeffs, order):
    """The PSF model rendered at each source's sub-pixel position, and its pixelated FWHM.

    Parameters
    ----------
    xs, ys : float64 (n,)
        0-based source positions (pix).
    terms : float64 (n, n_terms)
        PSF polynomial terms at each position.
    coeffs : float64 (n_terms, s, s)
        PSF basis.
    order : int
        Lanczos order of the sub-pixel shift.

    Returns
    -------
    stamps : float64 (n, s, s)
        Stamp ``i`` (sum 1) is centred on pixel ``(floor(xs[i] + 0.5), floor(ys[i] + 0.5))``
        and holds the model moved by the fractional remainder: what :func:`add_psf_sources`
        and :func:`psf_fit_all` render per source, kept for :func:`add_psf_stamps` and
        :func:`psf_fit_stamps` to reuse.
    fwhm : float64 (n,)
        ``2 sqrt(A / pi)`` with ``A`` the number of stamp pixels at or above half its maximum
        (pix).
    """
    n = xs.shape[0]
    s = coeffs.shape[1]
    out = np.empty((n, s, s))
    fwhm = np.empty(n)
    tmp = np.empty((s, s))
    wx = np.empty(2 * order + 1)
    wy = np.empty(2 * order + 1)
    scratch = np.empty(8 * order + 24)  # desgw.util.lanczos.scratch_size(order)
    for i in range(n):
        ic = int(np.floor(xs[i] + 0.5))
        jc = int(np.floor(ys[i] + 0.5))
        shift_taps_into(xs[i] - ic, order, wx, scratch)
        shift_taps_into(ys[i] - jc, order, wy, scratch)
        p = out[i]
        _render(coeffs, terms[i], wx, wy, order, tmp, p)
        pmax = 0.0
        for a in range(s):
            for b in range(s):
                if p[a, b] > pmax:
                    pmax = p[a, b]
        cnt = 0
        for a in range(s):
            for b in range(s):
                if p[a, b] >= 0.5 * pmax:
                    cnt += 1
        fwhm[i] = 2.0 * np.sqrt(cnt / np.pi)
    return out, fwhm


@njit(cache=True)
def add_psf_stamps(out, x0, y0, xs, ys, flux, stamps):
    """Add ``flux * stamp`` of point sources to an image, in place: :func:`add_psf_sources`
    with the stamps of :func:`render_psf_stamps` (the same sums, in the same order).

    Parameters
    ----------
    out : float32 or float64 (my, mx)
        Image whose pixel ``[0, 0]`` is CCD pixel ``(x0, y0)``; sources are clipped at its edges.
    x0, y0 : int
        CCD position of ``out[0, 0]`` (0-based column, row).
    xs, ys : float64 (n,)
        0-based CCD positions of the sources (those the stamps were rendered at).
    flux : float64 (n,)
        Source fluxes (e-).
    stamps : float64 (n, s, s)
        :func:`render_psf_stamps` at ``xs``, ``ys``.
    """
    for i in range(xs.shape[0]):
        ic = int(np.floor(xs[i] + 0.5))
        jc = int(np.floor(ys[i] + 0.5))
        _add_stamp(out, ic - x0, jc - y0, flux[i], stamps[i])


@njit(cache=True)
def _fit_pixels(data, weight, bad, x, y, ic, jc, s, r2max, pa, pb, dv, v0):
    """The usable pixels of the stamp centred on ``(ic, jc)`` within ``sqrt(r2max)`` of
    ``(x, y)``, in row-major order: stamp indices into ``pa``, ``pb``, data and background
    variance ``1 / weight`` (float64) into ``dv``, ``v0``; returns their number.

    Only the rows and columns that can reach the circle are visited; the test per pixel is
    the one of the whole-stamp loop, so the same pixels come out in the same order.
    """
    ny, nx = data.shape
    h = s // 2
    r = np.sqrt(r2max)
    a_lo = max(0, int(np.floor(y - r)) - 1 - (jc - h))
    a_hi = min(s - 1, int(np.ceil(y + r)) + 1 - (jc - h))
    b_lo = max(0, int(np.floor(x - r)) - 1 - (ic - h))
    b_hi = min(s - 1, int(np.ceil(x + r)) + 1 - (ic - h))
    m = 0
    for a in range(a_lo, a_hi + 1):
        yy = jc - h + a
        if yy < 0 or yy >= ny:
            continue
        for b in range(b_lo, b_hi + 1):
            xx = ic - h + b
            if xx < 0 or xx >= nx:
                continue
            if bad[yy, xx] or weight[yy, xx] <= 0:
                continue
            ddx = xx - x
            ddy = yy - y
            if ddx * ddx + ddy * ddy > r2max:
                continue
            pa[m] = a
            pb[m] = b
            dv[m] = data[yy, xx]
            v0[m] = 1.0 / weight[yy, xx]
            m += 1
    return m


@njit(cache=True)
def _fit_flux(p, pa, pb, dv, v0, m, own, gain, max_iter):
    """Weighted least-squares flux of the model ``p`` on the ``m`` pixels of
    :func:`_fit_pixels`, re-weighted with the source's photon noise until the flux changes by
    less than ``1e-5`` relative + 1e-3 e-; returns (flux, flux error, iterations)."""
    f = 0.0
    ferr = np.nan
    it = 0
    converged = False
    while it < max_iter and not converged:
        spd = 0.0
        spp = 0.0
        for k in range(m):
            pk = p[pa[k], pb[k]]
            var = v0[k]
            if it > 0 and f * pk > 0:
                var += f * pk / gain
            spd += pk * (dv[k] + own * pk) / var
            spp += pk * pk / var
        if spp <= 0:
            break
        fnew = spd / spp
        it += 1
        if it > 1 and abs(fnew - f) <= 1e-5 * abs(fnew) + 1e-3:
            converged = True
        f = fnew
        ferr = 1.0 / np.sqrt(spp)
    return f, ferr, it


@njit(cache=True)
def psf_fit_stamps(data, weight, bad, xs, ys, stamps, fwhm_stamps, terms, gcoeffs, order,
                   radius, gain, max_iter, own, full):
    """:func:`psf_fit_all` with the PSF already rendered per source (:func:`render_psf_stamps`);
    with ``full`` False only the flux, its error and the iterations (the others NaN or 0,
    and the SPREAD_MODEL model not rendered), e.g. for the Jacobi steps before the last.

    Parameters and returns as :func:`psf_fit_all`, with ``stamps``, ``fwhm_stamps`` the two
    outputs of :func:`render_psf_stamps` at ``xs``, ``ys`` in place of ``coeffs``.
    """
    n = xs.shape[0]
    s = stamps.shape[1]
    flux = np.full(n, np.nan)
    fluxerr = np.full(n, np.nan)
    chi2 = np.full(n, np.nan)
    niter = np.zeros(n, dtype=np.int16)
    spread = np.full(n, np.nan)
    spreaderr = np.full(n, np.nan)
    fwhm_psf = np.full(n, np.nan)
    npix_fit = np.zeros(n, dtype=np.int32)
    tmp = np.empty((s, s))
    g = np.empty((s, s))
    wx = np.empty(2 * order + 1)
    wy = np.empty(2 * order + 1)
    scratch = np.empty(8 * order + 24)  # desgw.util.lanczos.scratch_size(order)
    pa = np.empty(s * s, np.int64)
    pb = np.empty(s * s, np.int64)
    dv = np.empty(s * s)
    v0 = np.empty(s * s)
    for i in range(n):
        ic = int(np.floor(xs[i] + 0.5))
        jc = int(np.floor(ys[i] + 0.5))
        p = stamps[i]
        if full:
            fwhm_psf[i] = fwhm_stamps[i]
        r2max = radius[i] * radius[i]
        m = _fit_pixels(data, weight, bad, xs[i], ys[i], ic, jc, s, r2max, pa, pb, dv, v0)
        f, ferr, it = _fit_flux(p, pa, pb, dv, v0, m, own[i], gain, max_iter)
        fluxerr[i] = ferr
        if it == 0:
            continue
        flux[i] = f
        niter[i] = it
        if not full:
            continue
        shift_taps_into(xs[i] - ic, order, wx, scratch)  # the shift of the PSF's stamp
        shift_taps_into(ys[i] - jc, order, wy, scratch)
        _render(gcoeffs, terms[i], wx, wy, order, tmp, g)
        # chi2 and SPREAD_MODEL sums with the final variance.
        c2 = 0.0
        gwx = 0.0
        pwx = 0.0
        gwp = 0.0
        pwp = 0.0
        gwg = 0.0
        for k in range(m):
            pk = p[pa[k], pb[k]]
            gk = g[pa[k], pb[k]]
            var = v0[k]
            if f * pk > 0:
                var += f * pk / gain
            w = 1.0 / var
            d = dv[k] + own[i] * pk
            r = d - f * pk
            c2 += r * r * w
            gwx += gk * w * d
            pwx += pk * w * d
            gwp += gk * w * pk
            pwp += pk * w * pk
            gwg += gk * w * gk
        npix_fit[i] = m
        if m > 1:
            chi2[i] = c2 / (m - 1)
        if pwx != 0.0 and pwp > 0:
            spread[i] = gwx / pwx - gwp / pwp
            v = pwx * pwx * gwg - 2.0 * gwx * pwx * gwp + gwx * gwx * pwp
            if v > 0:
                spreaderr[i] = np.sqrt(v) / (pwx * pwx)
    return flux, fluxerr, chi2, niter, spread, spreaderr, fwhm_psf, npix_fit


@njit(cache=True)
def psf_fit_all(data, weight, bad, xs, ys, terms, coeffs, gcoeffs, order, radius, gain, max_iter,
                own):
    """PSF flux (weighted linear least squares at fixed position) and SPREAD_MODEL per source.

    Parameters
    ----------
    data : float32 (ny, nx)
        Background-subtracted image, e-; or that image less a model of the sources (then
        ``own`` gives each source's flux in that model, added back to its own fit).
    weight : float32 (ny, nx)
        Background inverse variance, e-**-2.
    bad : bool (ny, nx)
        Unusable pixels.
    xs, ys : float64 (n,)
        0-based source positions.
    terms : float64 (n, n_terms)
        PSF polynomial terms at each position.
    coeffs, gcoeffs : float64 (n_terms, s, s)
        PSF basis and the same convolved with the SPREAD_MODEL exponential disk.
    order : int
        Lanczos order.
    radius : float64 (n,)
        Fit radius per source (pix).
    gain : float
        e- per image unit (source photon noise).
    max_iter : int
        Maximum number of re-weighting iterations.
    own : float64 (n,)
        Flux (e-) of each source in the model subtracted from ``data`` (zeros when none is):
        source ``i`` is fitted to ``data + own[i] * PSF_i``, i.e. with its neighbours'
        models subtracted and its own kept.

    Returns
    -------
    flux, fluxerr, chi2, niter, spread, spreaderr, fwhm_psf, npix
        ``fwhm_psf`` is the half-maximum-area FWHM of the rendered PSF (pix, pixelated).
    """
    stamps, fwhm = render_psf_stamps(xs, ys, terms, coeffs, order)
    return psf_fit_stamps(data, weight, bad, xs, ys, stamps, fwhm, terms, gcoeffs, order, radius,
                          gain, max_iter, own, True)


@njit(cache=True)
def window_errors_all(data, weight, bad, xs, ys, sig, gain):
    """Covariance of the windowed centroid and the windowed signal-to-noise per source.

    The centroid solves ``sum_i w_i I_i (x_i - xw) = 0`` with the Gaussian window ``w``;
    linear propagation of the pixel variance ``1 / weight + max(I, 0) / gain`` through this
    equation gives the covariance ``J^-1 C J^-T`` (``C``: covariance of the sums, ``J``: their
    derivatives with respect to the centroid). ``SNR_WIN = sum w I / sqrt(sum w**2 var)``.

    Returns
    -------
    errx2, erry2, errxy, snr : float64 (n,)
    """
    n = xs.shape[0]
    ny, nx = data.shape
    errx2 = np.full(n, np.nan)
    erry2 = np.full(n, np.nan)
    errxy = np.full(n, np.nan)
    snr = np.full(n, np.nan)
    for i in range(n):
        sg = sig[i]
        rmax = 4.0 * sg
        x0 = int(np.floor(xs[i] - rmax))
        x1 = int(np.ceil(xs[i] + rmax))
        y0 = int(np.floor(ys[i] - rmax))
        y1 = int(np.ceil(ys[i] + rmax))
        inv2 = 1.0 / (sg * sg)
        s0 = 0.0
        sww = 0.0
        jxx = 0.0
        jyy = 0.0
        jxy = 0.0
        cxx = 0.0
        cyy = 0.0
        cxy = 0.0
        for yy in range(max(y0, 0), min(y1 + 1, ny)):
            for xx in range(max(x0, 0), min(x1 + 1, nx)):
                if bad[yy, xx] or weight[yy, xx] <= 0:
                    continue
                dx = xx - xs[i]
                dy = yy - ys[i]
                r2 = dx * dx + dy * dy
                if r2 > rmax * rmax:
                    continue
                w = np.exp(-0.5 * r2 * inv2)
                d = data[yy, xx]
                var = 1.0 / weight[yy, xx]
                if d > 0:
                    var += d / gain
                wi = w * d
                s0 += wi
                sww += w * w * var
                jxx += wi * (dx * dx * inv2 - 1.0)
                jyy += wi * (dy * dy * inv2 - 1.0)
                jxy += wi * dx * dy * inv2
                cxx += w * w * var * dx * dx
                cyy += w * w * var * dy * dy
                cxy += w * w * var * dx * dy
        if sww > 0:
            snr[i] = s0 / np.sqrt(sww)
        det = jxx * jyy - jxy * jxy
        if det == 0.0:
            continue
        # Inverse of J = [[jxx, jxy], [jxy, jyy]].
        ixx = jyy / det
        iyy = jxx / det
        ixy = -jxy / det
        # cov = Jinv C Jinv^T
        a11 = ixx * cxx + ixy * cxy
        a12 = ixx * cxy + ixy * cyy
        a21 = ixy * cxx + iyy * cxy
        a22 = ixy * cxy + iyy * cyy
        errx2[i] = a11 * ixx + a12 * ixy
        errxy[i] = a11 * ixy + a12 * iyy
        erry2[i] = a21 * ixy + a22 * iyy
    return errx2, erry2, errxy, snr


@njit(cache=True)
def segment_stats(data, mask, segmap, n, xmin, xmax, ymin, ymax):
    """Per-segment statistics.

    Returns
    -------
    imaflags : int32 (n,)
        OR of the mask bits over the segment's pixels and the pixels touching it (8-connected).
    nimaflags : int32 (n,)
        Number of such flagged pixels.
    fwhm : float64 (n,)
        ``2 sqrt(A / pi)`` with ``A`` the number of segment pixels at or above half the peak.
    """
    ny, nx = data.shape
    imaflags = np.zeros(n, dtype=np.int32)
    nimaflags = np.zeros(n, dtype=np.int32)
    fwhm = np.full(n, np.nan)
    for i in range(n):
        sid = i + 1
        peak = -np.inf
        for yy in range(ymin[i], ymax[i] + 1):
            for xx in range(xmin[i], xmax[i] + 1):
                if segmap[yy, xx] == sid and data[yy, xx] > peak:
                    peak = data[yy, xx]
        cnt = 0
        for yy in range(ymin[i], ymax[i] + 1):
            for xx in range(xmin[i], xmax[i] + 1):
                if segmap[yy, xx] == sid and data[yy, xx] >= 0.5 * peak:
                    cnt += 1
        if cnt > 0 and peak > 0:
            fwhm[i] = 2.0 * np.sqrt(cnt / np.pi)
        for yy in range(max(ymin[i] - 1, 0), min(ymax[i] + 2, ny)):
            for xx in range(max(xmin[i] - 1, 0), min(xmax[i] + 2, nx)):
                m = mask[yy, xx]
                if m == 0:
                    continue
                touch = False
                for ay in range(max(yy - 1, 0), min(yy + 2, ny)):
                    for ax in range(max(xx - 1, 0), min(xx + 2, nx)):
                        if segmap[ay, ax] == sid:
                            touch = True
                if touch:
                    imaflags[i] |= m
                    nimaflags[i] += 1
    return imaflags, nimaflags, fwhm


@njit(cache=True)
def kron_neighbours_all(segmap, bad, xs, ys, a, b, theta, scale):
    """Fraction of the pixels in each Kron ellipse that belong to other objects or are unusable.

    The ellipse has semi-axes ``scale * a``, ``scale * b`` at angle ``theta`` (rad).
    """
    n = xs.shape[0]
    ny, nx = segmap.shape
    frac = np.zeros(n)
    for i in range(n):
        ra = scale[i] * a[i]
        rb = max(scale[i] * b[i], 1e-3)
        c = np.cos(theta[i])
        s = np.sin(theta[i])
        x0 = int(np.floor(xs[i] - ra))
        x1 = int(np.ceil(xs[i] + ra))
        y0 = int(np.floor(ys[i] - ra))
        y1 = int(np.ceil(ys[i] + ra))
        tot = 0
        other = 0
        for yy in range(max(y0, 0), min(y1 + 1, ny)):
            for xx in range(max(x0, 0), min(x1 + 1, nx)):
                dx = xx - xs[i]
                dy = yy - ys[i]
                u = (c * dx + s * dy) / ra
                v = (-s * dx + c * dy) / rb
                if u * u + v * v > 1.0:
                    continue
                tot += 1
                sv = segmap[yy, xx]
                if bad[yy, xx] or (sv != 0 and sv != i + 1):
                    other += 1
        if tot > 0:
            frac[i] = other / tot
    return frac


@njit(cache=True)
def circular_apertures(data, weight, bad, xs, ys, radii, gain, subpix):
    """Sums in concentric circular apertures, with exact-ish pixel overlap at the edge.

    Pixels whose centre is within 0.7072 pix of an aperture boundary are split into
    ``subpix x subpix`` sub-pixels; unusable pixels are left out (and flagged). A pixel wholly
    inside aperture ``k`` is also inside every larger one, so it is added once to the ring of
    the smallest such aperture and the rings are cumulated at the end.

    Parameters
    ----------
    data, weight : float32 (ny, nx)
        Background-subtracted image (e-) and inverse background variance (e-**-2), > 0
        wherever ``bad`` is False; a pixel's variance is ``float32(1 / weight)``, as
        :func:`prepare_measurement` stored it in a whole-CCD map before (the apertures read
        ~1 % of a sparse CCD: the map cost a 32 MB write and a division per pixel).
    bad : bool (ny, nx)
        Unusable pixels.
    xs, ys : float64 (n,)
        0-based centres.
    radii : float64 (k,)
        Aperture radii (pix), increasing.
    gain : float
        e- per unit for the photon noise of positive sums.
    subpix : int
        Sub-sampling of boundary pixels.

    Returns
    -------
    flux, fluxerr : float64 (n, k)
    flags : int32 (n, k)
        16 = aperture truncated by the image edge, 32 = contains unusable pixels.
    """
    n = xs.shape[0]
    nk = radii.shape[0]
    ny, nx = data.shape
    flux = np.zeros((n, nk))
    fvar = np.zeros((n, nk))
    flags = np.zeros((n, nk), dtype=np.int32)
    rmax = radii[nk - 1]
    half = 0.70711
    reach = rmax + half
    step = 1.0 / subpix
    inner = np.empty(nk)
    for k in range(nk):
        inner[k] = radii[k] - half
    ring_f = np.zeros(nk)
    ring_v = np.zeros(nk)
    for i in range(n):
        xc = xs[i]
        yc = ys[i]
        for k in range(nk):
            r = radii[k]
            if xc - r < -0.5 or yc - r < -0.5 or xc + r > nx - 0.5 or yc + r > ny - 0.5:
                flags[i, k] |= 16
            ring_f[k] = 0.0
            ring_v[k] = 0.0
        x0 = max(int(np.floor(xc - rmax - 1)), 0)
        x1 = min(int(np.ceil(xc + rmax + 1)), nx - 1)
        y0 = max(int(np.floor(yc - rmax - 1)), 0)
        y1 = min(int(np.ceil(yc + rmax + 1)), ny - 1)
        for yy in range(y0, y1 + 1):
            dy = yy - yc
            # the row's chord of the disc of radius rmax + half, a pixel wider on each side
            # (the test below decides, so the same pixels are summed in the same order)
            c2 = reach * reach - dy * dy
            if c2 < 0:
                continue
            c = np.sqrt(c2)
            for xx in range(max(x0, int(np.floor(xc - c)) - 1),
                            min(x1, int(np.ceil(xc + c)) + 1) + 1):
                dx = xx - xc
                rr = np.sqrt(dx * dx + dy * dy)
                if rr > reach:
                    continue
                # smallest aperture that contains the whole pixel (``inner`` increases: found
                # from the largest down, the few steps of the outer rings that hold most pixels)
                kfull = nk
                for k in range(nk - 1, -1, -1):
                    if rr < inner[k]:
                        kfull = k
                    else:
                        break
                if bad[yy, xx]:
                    for k in range(nk):
                        if rr - half < radii[k]:
                            flags[i, k] |= 32
                    continue
                d = data[yy, xx]
                v = np.float32(1.0 / weight[yy, xx])
                if kfull < nk:
                    ring_f[kfull] += d
                    ring_v[kfull] += v
                # partial overlap with the smaller apertures whose boundary crosses the pixel
                for k in range(kfull - 1, -1, -1):
                    r = radii[k]
                    if rr > r + half:
                        break
                    cnt = 0
                    r2 = r * r
                    for sy in range(subpix):
                        ey = dy - 0.5 + (sy + 0.5) * step
                        for sx in range(subpix):
                            ex = dx - 0.5 + (sx + 0.5) * step
                            if ex * ex + ey * ey < r2:
                                cnt += 1
                    frac = cnt / (subpix * subpix)
                    flux[i, k] += frac * d
                    fvar[i, k] += frac * v
        cf = 0.0
        cv = 0.0
        for k in range(nk):
            cf += ring_f[k]
            cv += ring_v[k]
            flux[i, k] += cf
            fvar[i, k] += cv
    fluxerr = np.empty((n, nk))
    for i in range(n):
        for k in range(nk):
            v = fvar[i, k]
            if flux[i, k] > 0:
                v += flux[i, k] / gain
            fluxerr[i, k] = np.sqrt(v)
    return flux, fluxerr, flags


@njit(cache=True)
def _enclosed_binned(r, d, starts, pref, nb, radius):
    """Flux within ``radius`` of pixels grouped by ``floor(r)`` (``r``, ``d`` in bin order,
    bin ``b`` at ``starts[b]:starts[b + 1]``, ``pref[b]``: flux of the bins below ``b``), each
    pixel counted as a 1-pix-wide ramp ``clip(radius - r + 0.5, 0, 1)``.

    The pixels of the bins below ``floor(radius - 0.5)`` lie at ``r < radius - 0.5`` (whole),
    those of the bins above ``floor(radius + 0.5)`` at ``r >= radius + 0.5`` (none): only the
    two bins between are summed pixel by pixel.
    """
    b0 = int(np.floor(radius - 0.5))
    if b0 < 0:
        b0 = 0
    if b0 >= nb:
        return pref[nb]
    b1 = min(b0 + 2, nb)
    s = pref[b0]
    for j in range(starts[b0], starts[b1]):
        w = radius - r[j] + 0.5
        if w >= 1.0:
            s += d[j]
        elif w > 0.0:
            s += w * d[j]
    return s


@njit(cache=True)
def flux_radius_all(data, bad, xs, ys, rmax, normflux, frac):
    """Radius (pix) enclosing ``frac`` of ``normflux`` (or, where normflux is NaN or <= 0, of
    the flux within ``rmax``), by bisection on the curve of growth of the usable pixels within
    ``rmax`` (each pixel a 1-pix-wide ramp at its centre distance). NaN where undefined.

    The pixels are grouped by ``floor(r)`` (a counting sort, not a comparison sort of each
    window), so a bisection step sums two 1-pix rings: the same curve of growth up to the
    order of the float64 sums, several times faster on crowded CCDs (bench numbers in the
    commit that made it).
    """
    n = xs.shape[0]
    ny, nx = data.shape
    out = np.full(n, np.nan)
    cap = 1
    nbmax = 1
    for i in range(n):
        rm = rmax[i]
        if rm > 0:
            side = 2 * int(np.ceil(rm)) + 2
            cap = max(cap, side * side)
            nbmax = max(nbmax, int(rm) + 1)
    rr = np.empty(cap)
    dd = np.empty(cap)
    bb = np.empty(cap, np.int64)
    r_s = np.empty(cap)
    d_s = np.empty(cap)
    cursor = np.zeros(nbmax + 1, np.int64)
    starts = np.zeros(nbmax + 1, np.int64)
    pref = np.zeros(nbmax + 1)
    for i in range(n):
        xc = xs[i]
        yc = ys[i]
        rm = rmax[i]
        if not (rm > 0):
            continue
        x0 = max(int(np.floor(xc - rm)), 0)
        x1 = min(int(np.ceil(xc + rm)), nx - 1)
        y0 = max(int(np.floor(yc - rm)), 0)
        y1 = min(int(np.ceil(yc + rm)), ny - 1)
        nb = int(rm) + 1
        cursor[:nb + 1] = 0
        k = 0
        for yy in range(y0, y1 + 1):
            dy = yy - yc
            for xx in range(x0, x1 + 1):
                if bad[yy, xx]:
                    continue
                dx = xx - xc
                r = np.sqrt(dx * dx + dy * dy)
                if r > rm:
                    continue
                b = int(r)
                rr[k] = r
                dd[k] = data[yy, xx]
                bb[k] = b
                cursor[b] += 1
                k += 1
        if k == 0:
            continue
        starts[0] = 0
        for b in range(nb):
            starts[b + 1] = starts[b] + cursor[b]
            cursor[b] = starts[b]
        for j in range(k):
            c = cursor[bb[j]]
            r_s[c] = rr[j]
            d_s[c] = dd[j]
            cursor[bb[j]] = c + 1
        pref[0] = 0.0
        for b in range(nb):
            s = 0.0
            for j in range(starts[b], starts[b + 1]):
                s += d_s[j]
            pref[b + 1] = pref[b] + s
        tot = normflux[i]
        if not (tot > 0):
            tot = pref[nb]
        if not (tot > 0):
            continue
        target = frac * tot
        lo = 0.0
        hi = rm + 0.5
        if _enclosed_binned(r_s, d_s, starts, pref, nb, hi) < target:
            out[i] = hi
            continue
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if _enclosed_binned(r_s, d_s, starts, pref, nb, mid) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-3:
                break
        out[i] = 0.5 * (lo + hi)
    return out


@njit(cache=True)
def _winpos_one(data, bad, x, y, sig, max_iter, use_bad=True):  # pragma: no cover - numba
    """One windowed centroid (see `winpos_all`) in a 2-D image; returns (x, y, niter, ok).

    The Gaussian window is separable, ``exp(-dx**2 / 2 sig**2) exp(-dy**2 / 2 sig**2)``: one
    exponential per row and per column of the window instead of one per pixel (5-10x fewer
    on a window 8 sig wide; the weights agree with the 2-D exponential to 1e-16). Each row
    is read over its chord of the window disc only, whose ends are found with the disc test
    ``dx**2 + dy**2 <= (4 sig)**2`` itself (it grows with ``|dx|``), so the pixels between
    them need no test; with ``use_bad=False`` (``data`` already 0 on the bad pixels, which
    then add exact zeros) neither do they need the bad-pixel test: the same sums, bit for bit.
    """
    ny, nx = data.shape
    inv2 = 0.5 / (sig * sig)
    rm = 4.0 * sig
    rm2 = rm * rm
    nw = int(2.0 * rm) + 3
    wx = np.empty(nw)
    wy = np.empty(nw)
    it = 0
    while it < max_iter:
        sw = 0.0
        sx = 0.0
        sy = 0.0
        ya = max(int(np.floor(y - rm)), 0)
        yb = min(int(np.ceil(y + rm)), ny - 1)
        xa = max(int(np.floor(x - rm)), 0)
        xb = min(int(np.ceil(x + rm)), nx - 1)
        for yy in range(ya, yb + 1):
            dy = yy - y
            wy[yy - ya] = np.exp(-dy * dy * inv2)
        for xx in range(xa, xb + 1):
            dx = xx - x
            wx[xx - xa] = np.exp(-dx * dx * inv2)
        for yy in range(ya, yb + 1):
            dy = yy - y
            h2 = rm2 - dy * dy
            if h2 < 0:
                continue
            wyy = wy[yy - ya]
            # the row's chord of the window disc: a pixel wider on each side, then trimmed
            # with the disc test, so that exactly the pixels within rm remain
            h = np.sqrt(h2)
            xlo = max(xa, int(np.floor(x - h)) - 1)
            xhi = min(xb, int(np.ceil(x + h)) + 1)
            while xlo <= xhi and (xlo - x) * (xlo - x) + dy * dy > rm2:
                xlo += 1
            while xhi >= xlo and (xhi - x) * (xhi - x) + dy * dy > rm2:
                xhi -= 1
            for xx in range(xlo, xhi + 1):
                if use_bad and bad[yy, xx]:
                    continue
                dx = xx - x
                w = wyy * wx[xx - xa] * data[yy, xx]
                sw += w
                sx += w * dx
                sy += w * dy
        it += 1
        if sw <= 0:
            return x, y, it, False
        ddx = 2.0 * sx / sw
        ddy = 2.0 * sy / sw
        x += ddx
        y += ddy
        if ddx * ddx + ddy * ddy < 1e-8:
            break
    return x, y, it, True


@njit(cache=True)
def winpos_all(data, bad, xs, ys, sig, max_iter, use_bad=True):
    """SExtractor windowed centroids: ``x += 2 sum(w I dx) / sum(w I)`` with a Gaussian window
    of width ``sig`` (pixels within 4 sig), until the step is below 1e-4 pix.

    ``bad`` pixels are left out; ``use_bad=False`` reads every pixel, for ``data`` that is
    already 0 where ``bad`` (as :func:`desgw.se.detect.detect_sources` prepares it): the same
    centroids bit for bit, without the test per pixel.

    Returns
    -------
    xw, yw : float64 (n,)
        Centroids; the start position where the iteration fails (non-positive sum).
    niter : int32 (n,)
        Iterations done (0 = failed).
    """
    n = xs.shape[0]
    xw = xs.copy()
    yw = ys.copy()
    niter = np.zeros(n, dtype=np.int32)
    for i in range(n):
        x, y, it, ok = _winpos_one(data, bad, xs[i], ys[i], sig[i], max_iter, use_bad)
        if ok:
            xw[i] = x
            yw[i] = y
            niter[i] = it
    return xw, yw, niter


@njit(cache=True)
def winpos_stamps(stamps, bad, xs, ys, sig, max_iter):
    """Windowed centroids (as :func:`winpos_all`) of a stack of stamps (n, ny, nx), one source
    per stamp at stamp coordinates ``(xs[i], ys[i])``, one window width ``sig`` for all; the
    window is confined to the stamp.

    Returns
    -------
    xw, yw : float64 (n,)
    niter : int32 (n,)
        Iterations done (0 = failed; the start position is returned).
    """
    n = stamps.shape[0]
    xw = xs.copy()
    yw = ys.copy()
    niter = np.zeros(n, dtype=np.int32)
    for i in range(n):
        x, y, it, ok = _winpos_one(stamps[i], bad[i], xs[i], ys[i], sig, max_iter)
        if ok:
            xw[i] = x
            yw[i] = y
            niter[i] = it
    return xw, yw, niter


@njit(cache=True)
def bad_from_mask(mask, bits):
    """Boolean map (ny, nx) of the pixels with any of ``bits`` set in the integer ``mask``."""
    ny, nx = mask.shape
    out = np.empty((ny, nx), dtype=np.bool_)
    for j in range(ny):
        for i in range(nx):
            out[j, i] = (mask[j, i] & bits) != 0
    return out


@njit(cache=True)
def prepare_measurement(image, level, weight, mask, bits, want_err):
    """One pass over a CCD: background-subtracted data, noise and unusable map.

    Returns
    -------
    data : float32 (ny, nx)
        ``image - level``, 0 where unusable.
    err : float32 (ny, nx), or (1, 1) zeros unless ``want_err``
        ``sqrt(1 / weight)``, 0 where unusable (sep's Kron sums read the whole map; the
        apertures take the variance from the weight, :func:`circular_apertures`).
    bad : bool (ny, nx)
        Mask bits in ``bits``, weight <= 0 or non-finite data.
    """
    ny, nx = image.shape
    data = np.empty((ny, nx), dtype=np.float32)
    err = (np.empty((ny, nx), dtype=np.float32) if want_err
           else np.zeros((1, 1), dtype=np.float32))
    bad = np.empty((ny, nx), dtype=np.bool_)
    for j in range(ny):
        for i in range(nx):
            d = image[j, i] - level[j, i]
            w = weight[j, i]
            b = ((mask[j, i] & bits) != 0) or not (w > 0) or not np.isfinite(d)
            bad[j, i] = b
            if b:
                data[j, i] = 0.0
                if want_err:
                    err[j, i] = 0.0
            else:
                data[j, i] = d
                if want_err:
                    err[j, i] = np.sqrt(1.0 / w)
    return data, err, bad
