"""Benchmark: FITS tile-compression codecs of one 4096 x 2048 CCD product (SCI, MSK, WGT).

Usage: ``python bench/bench_codecs.py [--repeat 3]``

One core (CPU affinity pinned, BLAS threads 1), CPU seconds (best of ``--repeat``) to write
the three planes and to read them back with astropy and with fitsio, the file size, the SCI
quantisation error (in units of the noise sigma) and the largest relative WGT error, for:
the former immask (astropy, RICE q = 16 with cfitsio's per-row noise estimate, GZIP_2 weight),
absolute quantisation steps (sigma / 16 for SCI, smallest weight / 1024 for WGT) with astropy
and with fitsio, DES's choice (SCI and WGT RICE q = 16 with the noise estimate, MSK PLIO_1),
lossless weights (GZIP_1 / GZIP_2) and no compression, and ``desgw`` (what
:func:`desgw.io.products.write_immask` does now: the codecs of "fitsio, SCI+WGT RICE abs step,
MSK RICE", encoded by :mod:`desgw.io.rice`, with the steps computed and the inputs checked). The scene: 20 e- sky noise varying over the
CCD, 400 stars, 2 % masked pixels (weight 0).

Prints one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io import fits

from desgw.io.fitscodec import noise_step, weight_step
from desgw.io.products import write_immask


def _scene(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    ny, nx, sig = 4096, 2048, 20.0
    img = rng.normal(0, sig, (ny, nx)).astype(np.float32)
    for y, x in zip(rng.uniform(0, ny, 400), rng.uniform(0, nx, 400)):
        y0, x0 = int(y), int(x)
        s = (slice(max(y0 - 8, 0), min(y0 + 9, ny)), slice(max(x0 - 8, 0), min(x0 + 9, nx)))
        gy, gx = np.mgrid[s]
        img[s] += (10 ** rng.uniform(2, 5)) * np.exp(-((gy - y) ** 2 + (gx - x) ** 2)
                                                      / (2 * 1.8**2)) / (2 * np.pi * 1.8**2)
    msk = np.zeros((ny, nx), np.int16)
    msk[rng.random((ny, nx)) < 0.02] = 16
    msk[:, 1000:1002] = 1
    yy, xx = np.mgrid[0:ny, 0:nx]
    wgt = (1 / (sig**2 * (1 + 0.05 * np.sin(yy / 900) + 0.03 * xx / nx))).astype(np.float32)
    wgt[msk > 0] = 0
    return img, msk, wgt, sig


def _best(f: Callable[[], Any], n: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.process_time()
        out = f()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    img, msk, wgt, sig = _scene()
    step, wstep = noise_step(wgt), weight_step(wgt)
    tmp = Path(tempfile.mkdtemp(prefix="bench_codecs_"))
    path = tmp / "x.fits.fz"

    def astropy_writer(sci: dict[str, Any], wg: dict[str, Any], mk: dict[str, Any]):
        def f() -> None:
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, name="SCI", **sci),
                          fits.CompImageHDU(msk, name="MSK", **mk),
                          fits.CompImageHDU(wgt, name="WGT", **wg)]).writeto(path,
                                                                              overwrite=True)
        return f

    def fitsio_writer(sci: dict[str, Any], wg: dict[str, Any], mk: dict[str, Any]):
        def f() -> None:
            with fitsio.FITS(str(path), "rw", clobber=True) as out:
                out.write(img, extname="SCI", **sci)
                out.write(msk, extname="MSK", **mk)
                out.write(wgt, extname="WGT", **wg)
        return f

    a_q16 = dict(compression_type="RICE_1", quantize_level=16.0, quantize_method=2,
                 dither_seed=1)
    a_abs = dict(compression_type="RICE_1", quantize_level=-step, quantize_method=2,
                 dither_seed=1)
    a_wabs = dict(compression_type="RICE_1", quantize_level=-wstep, quantize_method=2,
                  dither_seed=1)
    a_gz2 = dict(compression_type="GZIP_2", quantize_level=0.0)
    f_abs = dict(compress="RICE", qlevel=-step, qmethod="SUBTRACTIVE_DITHER_2", dither_seed=1)
    f_wabs = dict(compress="RICE", qlevel=-wstep, qmethod="SUBTRACTIVE_DITHER_2", dither_seed=1)
    f_q16 = dict(compress="RICE", qlevel=16.0, qmethod="SUBTRACTIVE_DITHER_2", dither_seed=1)
    cases: dict[str, Callable[[], Any]] = {
        "former immask: astropy, SCI RICE q16 noise estimate, MSK RICE, WGT GZIP_2":
            astropy_writer(a_q16, a_gz2, dict(compression_type="RICE_1")),
        "astropy, SCI RICE abs step, MSK RICE, WGT GZIP_2":
            astropy_writer(a_abs, a_gz2, dict(compression_type="RICE_1")),
        "astropy, SCI+WGT RICE abs step, MSK PLIO":
            astropy_writer(a_abs, a_wabs, dict(compression_type="PLIO_1")),
        "fitsio, DES: SCI+WGT RICE q16 noise estimate, MSK PLIO":
            fitsio_writer(f_q16, f_q16, dict(compress="PLIO")),
        "fitsio, SCI RICE abs step, MSK PLIO, WGT GZIP_2":
            fitsio_writer(f_abs, dict(compress="GZIP_2", qlevel=0), dict(compress="PLIO")),
        "fitsio, SCI RICE abs step, MSK PLIO, WGT GZIP_1":
            fitsio_writer(f_abs, dict(compress="GZIP", qlevel=0), dict(compress="PLIO")),
        "fitsio, SCI+WGT RICE abs step, MSK RICE":
            fitsio_writer(f_abs, f_wabs, dict(compress="RICE")),
        "fitsio, SCI+WGT RICE abs step, MSK PLIO":
            fitsio_writer(f_abs, f_wabs, dict(compress="PLIO")),
        "fitsio, uncompressed": fitsio_writer({}, {}, {}),
        "desgw write_immask": lambda: write_immask(path, img, msk, wgt),
    }

    def read_astropy() -> list[np.ndarray]:
        with fits.open(path, memmap=False) as h:
            return [np.array(h[n].data) for n in ("SCI", "MSK", "WGT")]

    def read_fitsio() -> list[np.ndarray]:
        with fitsio.FITS(str(path)) as f:
            return [f[n].read() for n in ("SCI", "MSK", "WGT")]

    out: dict[str, Any] = {"load_avg": os.getloadavg(), "shape": list(img.shape),
                           "sci_step_e": step, "wgt_step": wstep, "cases": {}}
    for name, writer in cases.items():
        tw, _ = _best(writer, args.repeat)
        tra, a = _best(read_astropy, args.repeat)
        trf, b = _best(read_fitsio, args.repeat)
        good = wgt > 0
        err = a[0] - img
        out["cases"][name] = {
            "write_s": round(tw, 3), "read_astropy_s": round(tra, 3),
            "read_fitsio_s": round(trf, 3), "mb": round(path.stat().st_size / 1e6, 2),
            "sci_err_rms_sigma": round(float(err.std() / sig), 5),
            "sci_err_mean_sigma": float(err.mean() / sig),
            "wgt_max_rel_err": float(np.max(np.abs(a[2][good] / wgt[good] - 1))),
            "wgt_zeros_kept": bool(np.all(a[2][~good] == 0)),
            "mask_exact": bool(np.array_equal(a[1], msk)),
            "readers_agree": all(np.array_equal(x, y) for x, y in zip(a, b))}
    path.unlink(missing_ok=True)
    tmp.rmdir()
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
