"""zogy() against a plain reference computation of the same tiled ZOGY (float64 numpy FFTs of
whole tiles, filters written out from the paper's formulas): the pruned and batched transforms
of :mod:`desgw.diff.zogy` must give the same difference, variance, score and flux."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.zogy import ZogyConfig, zogy
from desgw.diff.zogy_psf import ConstantPSF


def _gauss(sigma: float, size: int = 15, e: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    p = np.exp(-0.5 * (x**2 / (sigma * (1 + e)) ** 2 + y**2 / (sigma * (1 - e)) ** 2))
    return p / p.sum()


def _hat(stamp: np.ndarray, k: int) -> np.ndarray:
    a = np.zeros((k, k))
    h, c = stamp.shape[0] // 2, k // 2
    a[c - h:c + h + 1, c - h:c + h + 1] = stamp
    return np.fft.fft2(np.fft.ifftshift(a))


def _on_tile(kernel_hat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-plane transform on the tile grid of the (k, k) real kernel with spectrum
    ``kernel_hat``, its centre at the tile origin, and the kernel itself (real space)."""
    k = kernel_hat.shape[0]
    real = np.fft.fftshift(np.fft.ifft2(kernel_hat).real)
    a = np.zeros(shape)
    h = k // 2
    for dy in range(k):
        for_y = (dy - h) % shape[0]
        a[for_y, (np.arange(k) - h) % shape[1]] = real[dy]
    return np.fft.fft2(a), real


def _tile_median(v: np.ndarray) -> float:
    """Median of the positive values of every 4th pixel of a tile (of all, with < 64)."""
    sub = v[::4, ::4][v[::4, ::4] > 0]
    return float(np.median(sub if sub.size >= 64 else v[v > 0]))


def _reference(n, r, vn, vr, pn, pr, fn, fr, tile, border, bad):
    """The tiled ZOGY of zogy()'s docstring, written out plainly in float64."""
    ny, nx = n.shape
    k = 2 * border
    shape = (tile + 2 * border, tile + 2 * border)
    out = {key: np.zeros((ny, nx)) for key in ("diff", "diff_var", "score", "flux")}
    ok = ~bad & (vn > 0) & (vr > 0)
    n0, r0 = np.where(ok, n, 0.0), np.where(ok, r, 0.0)
    vn0, vr0 = np.where(ok, vn, 0.0), np.where(ok, vr, 0.0)
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            bufs = []
            for img in (n0, r0, vn0, vr0):
                b = np.zeros(shape)
                ey0, ex0 = max(y0 - border, 0), max(x0 - border, 0)
                ey1 = min(y0 - border + shape[0], ny)
                ex1 = min(x0 - border + shape[1], nx)
                b[ey0 - (y0 - border):ey1 - (y0 - border),
                  ex0 - (x0 - border):ex1 - (x0 - border)] = img[ey0:ey1, ex0:ex1]
                bufs.append(b)
            inner = (slice(border, border + y1 - y0), slice(border, border + x1 - x0))
            s_n, s_r = (_tile_median(bufs[i][inner]) for i in (2, 3))
            phn, phr = _hat(pn, k), _hat(pr, k)
            an, ar = np.abs(phn) ** 2, np.abs(phr) ** 2
            den = s_r * fn**2 * an + s_n * fr**2 * ar
            f_d = fr * fn / np.sqrt(s_n * fr**2 + s_r * fn**2)
            filt = [fr**2 * fn * np.conj(phn) * ar / den, fn**2 * fr * np.conj(phr) * an / den,
                    fn * fr * phr / (np.sqrt(den) * f_d), fn * fn * phn / (np.sqrt(den) * f_d)]
            hats, reals = zip(*(_on_tile(f, shape) for f in filt))
            sq = [_on_tile(np.fft.fft2(np.fft.ifftshift(x * x)), shape)[0] for x in reals]
            f_s = np.sum(fn**2 * fr**2 * an * ar / den).real / k**2
            ft = [np.fft.fft2(b) for b in bufs]
            s = np.fft.ifft2(hats[0] * ft[0] - hats[1] * ft[1]).real[inner]
            d = np.fft.ifft2(hats[2] * ft[0] - hats[3] * ft[1]).real[inner]
            vs = np.fft.ifft2(sq[0] * ft[2] + sq[1] * ft[3]).real[inner]
            vd = np.fft.ifft2(sq[2] * ft[2] + sq[3] * ft[3]).real[inner]
            box = (slice(y0, y1), slice(x0, x1))
            out["diff"][box] = d
            out["diff_var"][box] = vd
            out["score"][box] = s / np.sqrt(vs)
            out["flux"][box] = s * fn / f_s
    return out


@pytest.mark.parametrize("shape", [(192, 160), (150, 230)])
def test_zogy_equals_plain_reference(shape):
    rng = np.random.default_rng(7)
    ny, nx = shape
    pn, pr = _gauss(1.6, e=0.1), _gauss(2.3)
    fn, fr = 1.0, 0.8
    yy, xx = np.mgrid[:ny, :nx]
    vn = (100.0 + 40.0 * xx / nx).astype(np.float32)
    vr = (60.0 + 30.0 * yy / ny).astype(np.float32)
    n = rng.normal(0, np.sqrt(vn)).astype(np.float32)
    r = rng.normal(0, np.sqrt(vr)).astype(np.float32)
    for x, y, a in ((40.3, 50.7, 5e4), (100.0, 120.2, 2e4), (130.6, 20.1, 8e3)):
        if x < nx and y < ny:  # a transient in N and a star in both
            n[int(y) - 7:int(y) + 8, int(x) - 7:int(x) + 8] += (a * fn * pn).astype(np.float32)
    ys = ny - 30  # a star in both images
    n[ys - 7:ys + 8, 30:45] += (3e4 * fn * pn).astype(np.float32)
    r[ys - 7:ys + 8, 30:45] += (3e4 * fr * pr).astype(np.float32)
    mask = np.zeros(shape, np.int32)
    mask[60:63, 70:72] = 4
    vn[10, 10] = 0.0
    cfg = ZogyConfig(tile=64, border=16, flux_nodes=False)
    res = zogy(n, r, vn, vr, pn, pr, f_new=fn, f_ref=fr, mask=mask, mask_bits=4, config=cfg)
    # the stamps zogy renders (float32): a broad reference PSF makes the difference filter of
    # R a deconvolution, sensitive to the last bits of the PSF at high frequencies
    pn64, pr64 = (np.asarray(ConstantPSF(p).render(0.0, 0.0), float) for p in (pn, pr))
    ref = _reference(n.astype(float), r.astype(float), vn.astype(float), vr.astype(float),
                     pn64, pr64, fn, fr, 64, 16, mask != 0)
    got = {"diff": res.diff, "diff_var": res.diff_var, "score": res.score, "flux": res.flux}
    for key, want in ref.items():
        scale = np.abs(want).max()
        err = np.abs(got[key] - want).max() / scale
        # float32 transforms against float64: ~3e-6 for the difference, whose filter of R
        # amplifies round-off (a misplaced filter or tile column is off by > 1e-2)
        assert err < 1e-5, (key, err)
    # the transient's flux at its peak pixel
    assert res.flux[50, 40] == pytest.approx(ref["flux"][50, 40], rel=1e-5)
