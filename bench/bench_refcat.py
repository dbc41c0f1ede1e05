"""Benchmark of desgw.refcat: ingest of a >= 1e6-star synthetic Gaia catalog and
DECam-CCD-sized footprint queries.

Builds a dense 10 x 10 deg patch (default 1.2e6 stars) written as two Parquet files, ingests
it into a temporary store (HEALPix order 7), then times footprint queries of 0.15 x 0.30 deg
rotated rectangles at random positions inside the patch (margin 10 arcsec, epoch 2019.5):
the first query on a fresh store (cold: reads the pixel files) and then repeated queries
(warm: most pixels cached). Prints one JSON object to stdout.

Usage: python bench/bench_refcat.py [--n-stars N] [--n-queries Q] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from desgw.refcat import RefCatStore, ingest_gaia
from desgw.refcat.geometry import gnomonic_inverse


def _write_catalog(path_dir: Path, n: int, rng: np.random.Generator) -> list[Path]:
    paths = []
    first = 1
    for k, m in enumerate((n // 2, n - n // 2)):
        ra = rng.uniform(30.0, 40.0, m)
        # uniform in area: sin(dec) uniform
        s = rng.uniform(np.sin(np.radians(-25.0)), np.sin(np.radians(-15.0)), m)
        dec = np.degrees(np.arcsin(s))
        g = rng.uniform(12, 21, m).astype(np.float32)
        col = rng.uniform(0, 3, m).astype(np.float32)
        tab = pa.table({
            "source_id": np.arange(first, first + m, dtype=np.int64),
            "ra": ra, "dec": dec,
            "ra_error": rng.uniform(0.02, 1, m).astype(np.float32),
            "dec_error": rng.uniform(0.02, 1, m).astype(np.float32),
            "pmra": rng.normal(0, 8, m).astype(np.float32),
            "pmdec": rng.normal(0, 8, m).astype(np.float32),
            "pmra_error": rng.uniform(0.02, 1, m).astype(np.float32),
            "pmdec_error": rng.uniform(0.02, 1, m).astype(np.float32),
            "ref_epoch": np.full(m, 2016.0),
            "phot_g_mean_mag": g,
            "phot_bp_mean_mag": g + 0.4 * col,
            "phot_rp_mean_mag": g - 0.6 * col,
            "phot_g_mean_flux_over_error": rng.uniform(10, 1e3, m).astype(np.float32),
            "phot_bp_mean_flux_over_error": rng.uniform(10, 1e3, m).astype(np.float32),
            "phot_rp_mean_flux_over_error": rng.uniform(10, 1e3, m).astype(np.float32),
        })
        p = path_dir / f"gaia_{k}.parquet"
        pq.write_table(tab, p)
        paths.append(p)
        first += m
    return paths


def _ccd_corners(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ra0 = rng.uniform(30.5, 39.5)
    dec0 = rng.uniform(-24.5, -15.5)
    ang = np.radians(rng.uniform(0, 180))
    x = np.array([0.075, -0.075, -0.075, 0.075])
    y = np.array([0.15, 0.15, -0.15, -0.15])
    xr = x * np.cos(ang) - y * np.sin(ang)
    yr = x * np.sin(ang) + y * np.cos(ang)
    return gnomonic_inverse(xr, yr, ra0, dec0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-stars", type=int, default=1_200_000)
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_refcat_") as tmp:
        tmp_dir = Path(tmp)
        srcs = _write_catalog(tmp_dir, args.n_stars, rng)
        t0 = time.perf_counter()
        index = ingest_gaia(srcs, tmp_dir / "store", order=args.order, chunk_rows=500_000)
        ingest_s = time.perf_counter() - t0

        store = RefCatStore(tmp_dir / "store")
        corners = [_ccd_corners(rng) for _ in range(args.n_queries)]
        t0 = time.perf_counter()
        first = store.query_footprint(*corners[0], margin_arcsec=10.0, epoch=2019.5)
        cold_ms = (time.perf_counter() - t0) * 1e3

        # cold queries: cache cleared before each one (every pixel read from disk)
        cold = []
        for ra, dec in corners[1:21]:
            store.clear_cache()
            t0 = time.perf_counter()
            store.query_footprint(ra, dec, margin_arcsec=10.0, epoch=2019.5)
            cold.append((time.perf_counter() - t0) * 1e3)
        # warm: fill the cache, then time every footprint
        for ra, dec in corners:
            store.query_footprint(ra, dec, margin_arcsec=10.0, epoch=2019.5)
        times, counts = [], []
        for ra, dec in corners:
            t0 = time.perf_counter()
            t = store.query_footprint(ra, dec, margin_arcsec=10.0, epoch=2019.5)
            times.append((time.perf_counter() - t0) * 1e3)
            counts.append(len(t))
        out = {
            "n_stars": int(index.total),
            "order": index.order,
            "n_pixels": len(index.pixel_counts),
            "ingest_s": round(ingest_s, 3),
            "query_ms_median": round(float(np.median(times)), 3),
            "query_ms_p95": round(float(np.percentile(times, 95)), 3),
            "cold_query_ms": round(cold_ms, 3),
            "cold_cache_cleared_ms_median": round(float(np.median(cold)), 3),
            "stars_per_query": round(float(np.mean(counts)), 1),
            "first_query_stars": len(first),
            "n_queries": args.n_queries,
        }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
