"""The batched tile transforms of :func:`desgw.diff.zogy._tile_outputs` against a plain
float64 convolution of every input with every filter (each output computed on its own)."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.zogy import (
    _finalise_tile,
    _lagrange3,
    _tile_outputs,
    _zero_outside,
    tile_plan,
    zogy_kernels,
)
from desgw.diff.zogy_synth import MoffatPSFField


def _circular(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Circular convolution (float64) of a tile with a (K, K) kernel centred at (K//2, K//2)."""
    k = kernel.shape[0]
    pad = np.zeros(img.shape)
    pad[:k, :k] = kernel
    pad = np.roll(pad, (-(k // 2), -(k // 2)), axis=(0, 1))
    return np.fft.irfft2(np.fft.rfft2(img.astype(np.float64)) * np.fft.rfft2(pad), s=img.shape)


@pytest.mark.parametrize("shape, k, astro", [((160, 192), 32, (0.0, 0.0)),
                                             ((192, 160), 48, (0.15, 0.05))])
def test_tile_outputs_match_direct_convolution(shape, k, astro):
    rng = np.random.default_rng(7)
    pn = MoffatPSFField(3.4, e1=0.05, image_shape=(64, 64), stamp=21).render(0, 0)
    pr = MoffatPSFField(4.1, e2=-0.04, image_shape=(64, 64), stamp=21).render(0, 0)
    kern = zogy_kernels(np.asarray(pn, float), np.asarray(pr, float), var_new=90.0,
                        var_ref=40.0, f_new=1.0, f_ref=0.8, kernel_size=k)
    tiles = np.empty((4, *shape), np.float32)
    tiles[0] = rng.normal(0, 10, shape) + 500 * np.exp(-((np.arange(shape[1]) - 70) ** 2
                                                         + (np.arange(shape[0])[:, None] - 90)
                                                         ** 2) / 8.0)
    tiles[1] = rng.normal(0, 6, shape)
    tiles[2] = rng.uniform(80, 120, shape)
    tiles[3] = rng.uniform(30, 50, shape)
    tiles[2:, 40:60, 50:90] = 0.0  # an in-painted hole: variance 0
    cols = slice(k // 2, shape[1] - k // 2)
    d, vd, s, vs = _tile_outputs(tile_plan(shape, k), kern, tiles.copy(), astro, cols)
    n, r, vn, vr = tiles
    ref = {
        "s": _circular(n, kern.k_new) - _circular(r, kern.k_ref),
        "d": _circular(n, kern.d_new) - _circular(r, kern.d_ref),
        "vs": _circular(vn, kern.k_new ** 2) + _circular(vr, kern.k_ref ** 2),
        "vd": _circular(vn, kern.d_new ** 2) + _circular(vr, kern.d_ref ** 2),
    }
    sx, sy = astro
    for sig, axis in ((sx, 1), (sy, 0)):
        if sig > 0:
            for img, kk in ((n, kern.k_new), (r, kern.k_ref)):
                sn = _circular(img, kk)
                # the gradient by a central spectral derivative: d/dx of the band-limited S_N
                freq = np.fft.fftfreq(shape[axis])
                spec = np.fft.fft(sn, axis=axis) * (2j * np.pi * (freq if axis == 1 else
                                                                  freq[:, None]))
                g = np.fft.ifft(spec, axis=axis).real
                ref["vs"] += sig ** 2 * g * g
    for name, got in (("s", s), ("d", d), ("vs", vs), ("vd", vd)):
        want = ref[name][:, cols]
        assert got.dtype == np.float32 and got.shape == want.shape
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 2e-5, (name, err)


def test_zero_outside_clears_only_the_strips():
    bufs = np.ones((4, 12, 10), np.float32)
    _zero_outside(bufs, 2, 9, 3, 10)
    inside = np.zeros((12, 10), bool)
    inside[2:9, 3:10] = True
    assert (bufs[:, inside] == 1).all() and (bufs[:, ~inside] == 0).all()


@pytest.mark.parametrize("f_score, f_diff", [(1.0, 1.0), (1.37, 1.12)])
def test_finalise_tile_writes_its_box_by_the_formulas(f_score, f_diff):
    """One tile interior written into views of larger outputs: diff copied, the
    variance of diff clipped at 0 and scaled, score ``S / sqrt(f V(S))``, flux ``S c`` and
    its error ``sqrt(f V(S)) c`` with the biquadratic normalisation ``c`` (the node values
    at the node centres), blank where ``V(S) <= vmin``; nothing outside the box touched."""
    rng = np.random.default_rng(5)
    ny, nx, y0, x0 = 33, 45, 7, 13  # nodes on pixels: 5, 16, 27 and 7, 22, 37
    d, vd, s = rng.normal(size=(3, ny, nx)).astype(np.float32)
    vs = rng.uniform(0.2, 3.0, (ny, nx)).astype(np.float32)
    vs[::4, ::3] = 0.0  # in-painted everywhere: only round-off left
    vs[1, 2] = np.float32(-1e-6)
    vmin = np.float32(0.1)
    nodes_y, ly = _lagrange3(ny)
    nodes_x, lx = _lagrange3(nx)
    cnode = rng.uniform(0.5, 2.0, (3, 3))
    outs = [np.full((50, 70), 7.0, np.float32) for _ in range(5)]
    box = (slice(y0, y0 + ny), slice(x0, x0 + nx))
    _finalise_tile(d, vd, s, vs, vmin, lx, ly, cnode, f_score, f_diff, *(o[box] for o in outs))
    c = ly.T @ cnode @ lx  # (ny, nx) float64
    sd = np.sqrt(np.maximum(vs, 0).astype(np.float64) * f_score)
    ok = vs > vmin
    np.testing.assert_array_equal(outs[0][box], d)
    np.testing.assert_allclose(outs[1][box], np.maximum(vd, 0) * f_diff, rtol=1e-6)
    np.testing.assert_allclose(outs[2][box], np.where(ok, s / np.where(ok, sd, 1), 0),
                               rtol=1e-6, atol=0)
    np.testing.assert_allclose(outs[3][box], np.where(ok, s * c, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outs[4][box], np.where(ok, sd * c, np.inf), rtol=1e-6)
    # the node values at the node centres (Lagrange weights 1 there)
    np.testing.assert_allclose(c[np.ix_(nodes_y.astype(int), nodes_x.astype(int))], cnode,
                               rtol=1e-12)
    for o in outs:
        rest = np.ones(o.shape, bool)
        rest[box] = False
        assert (o[rest] == 7.0).all()
