"""numba kernels of the sparse L.A.Cosmic used by :mod:`desgw.se.cosmics` (private to it).

All quantities follow van Dokkum (2001) as implemented by astroscrappy, evaluated only where
needed: ``L+`` (Laplacian of the 2x subsampled image, clipped at 0, block-averaged), the noise
``N = sqrt(gain * med5(I + sky) + rn^2) / gain``, ``S = L+ / (2 N)``, ``S' = S - med5(S)`` and
the fine-structure contrast ``f = (med3(I) - med7(med3(I))) / N`` (clipped at 0.01).
Images are indexed with edge clamping (``mode='nearest'``). Masked neighbours do not add
curvature: in ``L+`` they take the centre pixel's value.

Speed notes: the 3x3 and 5x5 medians are selection networks
(:mod:`desgw.se.lacosmic_median`, 9x faster than a branchy selection); the prefilter tests
every pixel in a branch-free row loop and runs the exact test on the few hits (76 -> 17 ms
sparse, 101 -> 25 ms dense); no array is reassigned inside a loop (numba then updates a
reference count on every iteration: a prefilter variant that grew its lists that way took
4x longer), lists are allocated at their bound instead. Measured on simulated CCDs (one
core, best of 5, loaded machine), ``find_cosmic_rays`` 204-216 -> 95-108 ms on a sparse
field (~900 objects) and 526-554 -> 346-359 ms on a dense one (~4300), with the same
cosmic-ray pixels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from desgw.se.lacosmic_median import med9, med25

__all__: list[str] = []


@njit(cache=True, inline="always")
def _clamp(i, n):
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@njit(cache=True)
def _median_inplace(buf, n):
    """Median of buf[:n] (reorders it): Wirth's selection, mean of the two middles if n even."""
    k = n // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = buf[k]
        i, j = lo, hi
        while True:
            while buf[i] < pivot:
                i += 1
            while pivot < buf[j]:
                j -= 1
            if i <= j:
                t = buf[i]
                buf[i] = buf[j]
                buf[j] = t
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    upper = buf[k]
    if n % 2 == 1:
        return upper
    lower = buf[0]
    for i in range(1, k):
        if buf[i] > lower:
            lower = buf[i]
    return 0.5 * (lower + upper)


@njit(cache=True)
def _med_box(img, y, x, r, buf):
    ny, nx = img.shape
    n = 0
    for dy in range(-r, r + 1):
        yy = _clamp(y + dy, ny)
        for dx in range(-r, r + 1):
            buf[n] = img[yy, _clamp(x + dx, nx)]
            n += 1
    if n == 25:
        return med25(buf)
    if n == 9:
        return med9(buf)
    return _median_inplace(buf, n)


@njit(cache=True)
def _lplus(img, bad, y, x):
    ny, nx = img.shape
    c = img[y, x]
    yu, yd = _clamp(y - 1, ny), _clamp(y + 1, ny)
    xl, xr = _clamp(x - 1, nx), _clamp(x + 1, nx)
    u = c if bad[yu, x] else img[yu, x]
    d = c if bad[yd, x] else img[yd, x]
    left = c if bad[y, xl] else img[y, xl]
    r = c if bad[y, xr] else img[y, xr]
    tot = 0.0
    v = 2.0 * c - u - left
    if v > 0:
        tot += v
    v = 2.0 * c - u - r
    if v > 0:
        tot += v
    v = 2.0 * c - d - left
    if v > 0:
        tot += v
    v = 2.0 * c - d - r
    if v > 0:
        tot += v
    return 0.25 * tot


@njit(cache=True)
def _sky_at(sky, y, x):
    if sky.shape[0] == 1 and sky.shape[1] == 1:
        return sky[0, 0]
    return sky[y, x]


@njit(cache=True)
def _noise(img, sky, y, x, gain, rn, buf):
    m5 = _med_box(img, y, x, 2, buf) + _sky_at(sky, y, x)
    if m5 < 0.0001:
        m5 = 0.0001
    return np.sqrt(gain * m5 + rn * rn) / gain


@njit(cache=True)
def _s_value(img, bad, sky, y, x, gain, rn, memo, stamp, it, buf):
    if stamp[y, x] == it:
        return memo[y, x]
    s = _lplus(img, bad, y, x) / (2.0 * _noise(img, sky, y, x, gain, rn, buf))
    memo[y, x] = s
    stamp[y, x] = it
    return s


@njit(cache=True)
def _sprime_above(img, bad, sky, y, x, gain, rn, memo, stamp, it, buf, buf2, thr):
    """``S'`` at (y, x) if it can exceed ``thr``, else a value <= ``thr``.

    ``S' = S - med5(S) <= S`` because ``S >= 0``, so the 5x5 median of ``S`` (25 more ``S``
    values) is only computed when ``S`` itself exceeds ``thr``.
    """
    s = _s_value(img, bad, sky, y, x, gain, rn, memo, stamp, it, buf)
    if s <= thr:
        return s
    ny, nx = img.shape
    n = 0
    for dy in range(-2, 3):
        yy = _clamp(y + dy, ny)
        for dx in range(-2, 3):
            xx = _clamp(x + dx, nx)
            buf2[n] = _s_value(img, bad, sky, yy, xx, gain, rn, memo, stamp, it, buf)
            n += 1
    return s - med25(buf2)


@njit(cache=True)
def _med3_at(img, y, x, keys, vals, buf):
    """3x3 median of ``img`` at (y, x) through a direct-mapped cache (``keys``: the pixel
    index ``y * nx + x`` held by each slot, -1 empty; ``vals``: its median): the 7x7 windows
    of the fine structure of neighbouring candidates (star cores, tracks) share most of their
    medians. A median of 9 values is one of them, so the float32 cache holds it exactly. A
    small table (not image-sized memo arrays) touches a few hundred KB, not pages all over a
    CCD."""
    idx = y * img.shape[1] + x
    slot = idx & (keys.size - 1)
    if keys[slot] == idx:
        return vals[slot]
    m = _med_box(img, y, x, 1, buf)
    keys[slot] = idx
    vals[slot] = m
    return m


@njit(cache=True)
def _fine_contrast(img, sky, y, x, gain, rn, buf, buf3, keys3, vals3):
    ny, nx = img.shape
    n = 0
    for dy in range(-3, 4):
        yy = _clamp(y + dy, ny)
        for dx in range(-3, 4):
            buf3[n] = _med3_at(img, yy, _clamp(x + dx, nx), keys3, vals3, buf)
            n += 1
    m3 = _med3_at(img, y, x, keys3, vals3, buf)
    f = (m3 - _median_inplace(buf3, n)) / _noise(img, sky, y, x, gain, rn, buf)
    if f < 0.01:
        f = 0.01
    return f


@njit(cache=True)
def _passes(img, bad, sky, y, x, gain, rn, thresh):
    if bad[y, x]:
        return False
    sk = _sky_at(sky, y, x)
    if sk < 0.0001:
        sk = 0.0001
    return _lplus(img, bad, y, x) > 2.0 * thresh * np.sqrt(gain * sk + rn * rn) / gain


@njit(cache=True)
def _row_hits(img, bad, y, quick, hit):
    """``hit[x]`` (1 <= x < nx - 1) for an interior row ``y``: L+ exceeds ``quick``.

    L+ exactly as :func:`_lplus` computes it (masked neighbours take the centre's value, the
    same sums in the same order), written without branches so that LLVM vectorises it.
    """
    nx = img.shape[1]
    rm = img[y - 1]
    r0 = img[y]
    rp = img[y + 1]
    bm = bad[y - 1]
    b0 = bad[y]
    bp = bad[y + 1]
    for x in range(1, nx - 1):
        c = r0[x]
        u = c if bm[x] else rm[x]
        d = c if bp[x] else rp[x]
        left = c if b0[x - 1] else r0[x - 1]
        r = c if b0[x + 1] else r0[x + 1]
        v1 = 2.0 * c - u - left
        v2 = 2.0 * c - u - r
        v3 = 2.0 * c - d - left
        v4 = 2.0 * c - d - r
        t = 0.0
        t += v1 if v1 > 0 else 0.0
        t += v2 if v2 > 0 else 0.0
        t += v3 if v3 > 0 else 0.0
        t += v4 if v4 > 0 else 0.0
        hit[x] = np.uint8(0.25 * t > quick)


@njit(cache=True)
def _hit_map(img, bad, quick, hit):
    """``hit`` (uint8, image shape): 1 where the pixel may pass :func:`_passes` (the L+ test
    against the smallest sky ``quick``, and every edge pixel); returns the number of hits."""
    ny, nx = img.shape
    n = 0
    for y in range(ny):
        row = hit[y]
        if y == 0 or y == ny - 1:
            row[:] = 1
            n += nx
            continue
        _row_hits(img, bad, y, quick, row)
        row[0] = 1
        row[nx - 1] = 1
        for x in range(nx):
            n += row[x]
    return n


@njit(cache=True)
def _collect_passing(img, bad, sky, gain, rn, thresh, hit, cap):
    """(ys, xs), row-major, of the pixels with ``hit`` that pass :func:`_passes`; at most
    ``cap`` (the number of hits: no reallocation in the loop, which costs numba a reference
    count update per iteration)."""
    ny, nx = img.shape
    ys = np.empty(cap, np.int32)
    xs = np.empty(cap, np.int32)
    n = 0
    for y in range(ny):
        for x in range(nx):
            if hit[y, x] != 0 and _passes(img, bad, sky, y, x, gain, rn, thresh):
                ys[n] = y
                xs[n] = x
                n += 1
    return ys[:n], xs[:n]


def prefilter(img: np.ndarray, bad: np.ndarray, sky: np.ndarray, gain: float, rn: float,
              thresh: float, sky_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (ys, xs), row-major, whose L+ / (2 N_sky) exceeds ``thresh``: a superset of CR
    seeds.

    ``N_sky`` is the noise of the pixel's sky alone (no object light), so it is not larger
    than the L.A.Cosmic noise and ``S' <= S <= L+ / (2 N_sky)``. A first, vectorised test of
    every interior pixel against the smallest sky of the image (``sky_min``) keeps a few
    thousand pixels per CCD (:func:`_hit_map`); the exact test (:func:`_passes`) runs on
    those. The result equals the pixel-by-pixel test.
    """
    sk = max(float(sky_min), 0.0001)
    quick = 2.0 * thresh * np.sqrt(gain * sk + rn * rn) / gain
    hit = np.empty(img.shape, np.uint8)
    n_hit = _hit_map(img, bad, quick, hit)
    return _collect_passing(img, bad, sky, gain, rn, thresh, hit, n_hit)


@njit(cache=True)
def detect_iteration(img, bad, sky, cr, ys, xs, gain, rn, sigclip, sigfrac, objlim, memo, stamp,
                     it, ngrow):
    """One L.A.Cosmic pass over candidate pixels; sets ``cr`` and returns the new CR pixels.

    Seeds: candidates with ``S' > sigclip`` and ``S' / f > objlim``. Growth (astroscrappy's):
    8-neighbours with ``S' > sigclip``, then ``ngrow - 1`` more rings with
    ``S' > sigfrac * sigclip``. ``memo``/``stamp`` (``S``) are image-sized scratch arrays,
    valid where the stamp equals ``it``; the 3x3 medians of the fine structure go through a
    65536-slot cache made here (the image changes between calls).
    """
    ny, nx = img.shape
    buf = np.empty(49, np.float64)
    buf2 = np.empty(49, np.float64)
    buf3 = np.empty(49, np.float64)
    keys3 = np.full(1 << 16, -1, np.int64)
    vals3 = np.empty(1 << 16, np.float32)
    newy = np.empty(ys.size + 16, np.int32)
    newx = np.empty(ys.size + 16, np.int32)
    nnew = 0
    for k in range(ys.size):
        y, x = ys[k], xs[k]
        if bad[y, x] or cr[y, x]:
            continue
        sp = _sprime_above(img, bad, sky, y, x, gain, rn, memo, stamp, it, buf, buf2, sigclip)
        if sp <= sigclip:
            continue
        f = _fine_contrast(img, sky, y, x, gain, rn, buf, buf3, keys3, vals3)
        if sp / f > objlim:
            newy[nnew] = y
            newx[nnew] = x
            nnew += 1
    for k in range(nnew):
        cr[newy[k], newx[k]] = True
    # growth rings: every grown pixel lies within ``ngrow`` of a seed, which bounds the list
    # (allocated once: an array reassigned inside a numba loop costs a refcount per iteration)
    cap = nnew * (2 * ngrow + 1) * (2 * ngrow + 1) + 1
    ally = np.empty(cap, np.int32)
    allx = np.empty(cap, np.int32)
    ally[:nnew] = newy[:nnew]
    allx[:nnew] = newx[:nnew]
    nall = nnew
    for ring in range(ngrow):
        # each ring dilates the whole set so far by one pixel (3x3), as L.A.Cosmic does
        thr = sigclip if ring == 0 else sigfrac * sigclip
        f1 = nall
        for k in range(f1):
            y0, x0 = ally[k], allx[k]
            for dy in range(-1, 2):
                y = y0 + dy
                if y < 0 or y >= ny:
                    continue
                for dx in range(-1, 2):
                    x = x0 + dx
                    if x < 0 or x >= nx or cr[y, x] or bad[y, x]:
                        continue
                    if _sprime_above(img, bad, sky, y, x, gain, rn, memo, stamp, it, buf, buf2,
                                     thr) > thr:
                        cr[y, x] = True
                        ally[nall] = y
                        allx[nall] = x
                        nall += 1
        if nall == f1:
            break
    return ally[:nall], allx[:nall]


@njit(cache=True)
def clean_pixels(img, bad, cr, ys, xs):
    """Replace CR pixels by the mean of the good, non-CR pixels of their 5x5 box."""
    ny, nx = img.shape
    vals = np.empty(ys.size, img.dtype)
    for k in range(ys.size):
        y, x = ys[k], xs[k]
        tot = 0.0
        n = 0
        for dy in range(-2, 3):
            yy = y + dy
            if yy < 0 or yy >= ny:
                continue
            for dx in range(-2, 3):
                xx = x + dx
                if xx < 0 or xx >= nx or cr[yy, xx] or bad[yy, xx]:
                    continue
                tot += img[yy, xx]
                n += 1
        vals[k] = tot / n if n > 0 else img[y, x]
    for k in range(ys.size):
        img[ys[k], xs[k]] = vals[k]


@njit(cache=True)
def candidates_near(img, bad, sky, gain, rn, thresh, ys, xs, r, seen, it):
    """Pixels within a (2r+1)^2 box of (ys, xs) that pass the prefilter test on ``img``.

    ``seen`` (int32, image shape) is scratch space: pixels stamped ``it`` are skipped. The
    output is allocated at its bound (every box pixel) so that the loop never reallocates.
    """
    ny, nx = img.shape
    cap = ys.size * (2 * r + 1) * (2 * r + 1)
    outy = np.empty(cap, np.int32)
    outx = np.empty(cap, np.int32)
    n = 0
    for k in range(ys.size):
        for dy in range(-r, r + 1):
            y = ys[k] + dy
            if y < 0 or y >= ny:
                continue
            for dx in range(-r, r + 1):
                x = xs[k] + dx
                if x < 0 or x >= nx or seen[y, x] == it:
                    continue
                seen[y, x] = it
                if _passes(img, bad, sky, y, x, gain, rn, thresh):
                    outy[n] = y
                    outx[n] = x
                    n += 1
    return outy[:n], outx[:n]


@njit(cache=True)
def prune_faint_groups(img, sky, cr, ys, xs, gain, rn, nsigma, seen, mark):
    """Unflag connected CR groups (8-connected) whose brightest pixel exceeds its 5x5 median
    by less than ``nsigma`` times the noise.

    L.A.Cosmic's ``S' > sigclip`` passes sky-noise spikes (with their grown neighbours) at a
    rate of ~2e-5 per pixel; a real hit has at least one pixel well above its surroundings.
    ``ys, xs`` list the CR pixels; ``seen`` (int32, image shape) is scratch space: pixels
    stamped ``mark`` are taken (no other pixel may carry ``mark`` on entry).
    Returns the number of pixels unflagged.
    """
    ny, nx = img.shape
    buf = np.empty(49, np.float64)
    stack_y = np.empty(ys.size + 1, np.int32)
    stack_x = np.empty(ys.size + 1, np.int32)
    comp_y = np.empty(ys.size + 1, np.int32)
    comp_x = np.empty(ys.size + 1, np.int32)
    removed = 0
    for k in range(ys.size):
        y0, x0 = ys[k], xs[k]
        if seen[y0, x0] == mark or not cr[y0, x0]:
            continue
        seen[y0, x0] = mark
        top = 0
        stack_y[0], stack_x[0] = y0, x0
        top = 1
        nc = 0
        best = -1e30
        while top > 0:
            top -= 1
            y, x = stack_y[top], stack_x[top]
            comp_y[nc], comp_x[nc] = y, x
            nc += 1
            excess = (img[y, x] - _med_box(img, y, x, 2, buf)) / _noise(img, sky, y, x, gain,
                                                                         rn, buf)
            if excess > best:
                best = excess
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy, xx = y + dy, x + dx
                    if (0 <= yy < ny and 0 <= xx < nx and cr[yy, xx]
                            and seen[yy, xx] != mark):
                        seen[yy, xx] = mark
                        stack_y[top], stack_x[top] = yy, xx
                        top += 1
        if best < nsigma:
            for j in range(nc):
                cr[comp_y[j], comp_x[j]] = False
            removed += nc
    return removed
