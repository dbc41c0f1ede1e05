"""Ingest Gaia-archive tables into a HEALPix-partitioned Parquet store.

Layout of a store directory::

    index.json                      StoreIndex (order, nside, columns, per-pixel counts, ...)
    order=7/pix=012345.parquet      one file per non-empty nested HEALPix pixel

Ingest streams its inputs in chunks: each chunk is sorted by pixel and staged as an
uncompressed Arrow IPC file in a hidden staging folder; a second pass memory-maps the
staged chunks and writes every pixel's rows (gathered from all chunks, duplicates of the
same ``source_id`` removed) to its Parquet file. Peak memory is about one chunk plus the
largest pixel. Every file is written atomically and ``index.json`` last, so a store whose
index exists is complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from astropy_healpix import HEALPix

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.atomic import atomic_write_path, atomic_write_text, temp_name_for
from desgw.refcat.readers import SUPPORTED_SUFFIXES, iter_source_chunks, source_columns
from desgw.refcat.schema import OPTIONAL, REQUIRED, arrow_schema

__all__ = [
    "INDEX_NAME",
    "StoreIndex",
    "ingest_gaia",
    "pixel_path",
    "expand_sources",
    "refcat_ingest_main",
]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
_FORMAT_VERSION = 1


def pixel_path(store_dir: str | os.PathLike[str], order: int, pix: int) -> Path:
    """Path of the Parquet file of nested pixel ``pix`` at HEALPix ``order``."""
    width = max(6, len(str(12 * 4 ** order - 1)))
    return Path(store_dir) / f"order={order}" / f"pix={pix:0{width}d}.parquet"


@dataclass(frozen=True)
class StoreIndex:
    """Summary of a reference-catalog store (the content of ``index.json``).

    Attributes
    ----------
    store_dir : pathlib.Path
        The store directory.
    order : int
        HEALPix order (nside = 2**order), nested scheme.
    nside : int
        HEALPix nside.
    columns : tuple of str
        Stored columns, in file order.
    pixel_counts : dict[int, int]
        Rows per non-empty pixel.
    total : int
        Total rows.
    ref_epoch : float or None
        The common reference epoch (Julian year) of all rows, or None if they differ.
    ref_epoch_min, ref_epoch_max : float
        Range of the reference epochs (NaN for an empty store).
    max_pm_masyr : float
        Largest total proper motion in the store (mas/yr); used to pad query regions.
    sources : tuple of str
        Input files.
    """

    store_dir: Path
    order: int
    nside: int
    columns: tuple[str, ...]
    pixel_counts: dict[int, int] = field(repr=False)
    total: int
    ref_epoch: float | None
    ref_epoch_min: float
    ref_epoch_max: float
    max_pm_masyr: float
    sources: tuple[str, ...] = field(repr=False)

    def to_json(self) -> str:
        """JSON text of the index (without the store directory)."""
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)
        doc = {
            "format": "desgw-refcat", "version": _FORMAT_VERSION,
            "scheme": "nested", "order": self.order, "nside": self.nside,
            "columns": list(self.columns), "total": self.total,
            "ref_epoch": self.ref_epoch,
            "ref_epoch_min": num(self.ref_epoch_min), "ref_epoch_max": num(self.ref_epoch_max),
            "max_pm_masyr": float(self.max_pm_masyr),
            "sources": list(self.sources),
            "pixels": {str(k): int(v) for k, v in sorted(self.pixel_counts.items())},
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def read(cls, store_dir: str | os.PathLike[str]) -> StoreIndex:
        """Read ``index.json`` of a store.

        Raises
        ------
        desgw.errors.MissingFileError
            No index (not a store, or an ingest that did not finish).
        desgw.errors.DesgwInputError
            The index is not valid JSON or lacks keys.
        """
        path = Path(store_dir) / INDEX_NAME
        if not path.is_file():
            raise MissingFileError(path, None, "no refcat store index (run ingest first)")
        try:
            doc = json.loads(path.read_text())
            def flt(x: float | None) -> float:
                return float("nan") if x is None else float(x)
            return cls(
                store_dir=Path(store_dir), order=int(doc["order"]), nside=int(doc["nside"]),
                columns=tuple(doc["columns"]),
                pixel_counts={int(k): int(v) for k, v in doc["pixels"].items()},
                total=int(doc["total"]),
                ref_epoch=None if doc["ref_epoch"] is None else float(doc["ref_epoch"]),
                ref_epoch_min=flt(doc["ref_epoch_min"]), ref_epoch_max=flt(doc["ref_epoch_max"]),
                max_pm_masyr=float(doc["max_pm_masyr"]), sources=tuple(doc["sources"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DesgwInputError(path, None, f"invalid refcat index: {exc}") from exc


def expand_sources(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories into the supported table files they hold (sorted, not recursive).

    Files are returned as given; a directory without supported files raises
    :class:`desgw.errors.DesgwInputError`.
    """
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and any(
                q.name.lower().endswith(suf) for suf in SUPPORTED_SUFFIXES))
            if not found:
                raise DesgwInputError(p, None, "directory holds no CSV, FITS or Parquet tables")
            out.extend(found)
        else:
            out.append(p)
    return out


def _plan_columns(sources: Sequence[Path]) -> tuple[list[dict[str, tuple[str, str]]],
                                                    list[int | None], tuple[str, ...]]:
    """Check required columns of every source; choose the optional columns to keep."""
    per_source: list[dict[str, str]] = []
    hdus: list[int | None] = []
    for src in sources:
        names, hdu = source_columns(src)
        for spec in REQUIRED:
            if spec.name not in names:
                raise DesgwInputError(src, hdu, f"missing required column {spec.name!r}",
                                      column=spec.name)
        per_source.append(names)
        hdus.append(hdu)
    optional = [c for c in OPTIONAL if any(c.name in names for names in per_source)]
    wanted = []
    for names in per_source:
        w = {c.name: (names[c.name], c.dtype) for c in REQUIRED}
        w.update({c.name: (names[c.name], c.dtype) for c in optional if c.name in names})
        wanted.append(w)
    columns = tuple(c.name for c in REQUIRED) + tuple(c.name for c in optional) + ("pm_missing",)
    return wanted, hdus, columns


def _prepare_chunk(chunk: dict[str, np.ndarray], columns: tuple[str, ...], src: Path
                   ) -> tuple[dict[str, np.ndarray], int]:
    n = len(chunk["ra"])
    finite = np.isfinite(chunk["ra"]) & np.isfinite(chunk["dec"])
    with np.errstate(invalid="ignore"):
        good = finite & (np.abs(chunk["dec"]) <= 90)
    nbad = int(n - good.sum())
    n_nonfinite = int(n - finite.sum())
    if n_nonfinite:
        logger.warning("%s: dropped %d rows with non-finite ra/dec", src, n_nonfinite)
    if nbad - n_nonfinite:
        logger.warning("%s: dropped %d rows with dec out of range (|dec| > 90 deg)", src,
                       nbad - n_nonfinite)
    out: dict[str, np.ndarray] = {}
    for name in columns:
        if name == "pm_missing":
            continue
        arr = chunk.get(name)
        if arr is None:  # optional column absent from this source
            arr = np.full(n, np.nan, dtype=np.float32)
        out[name] = arr[good] if nbad else arr
    pm_missing = ~(np.isfinite(out["pmra"]) & np.isfinite(out["pmdec"])
                   & np.isfinite(out["ref_epoch"]))
    if pm_missing.any():
        out["pmra"] = np.where(pm_missing, np.float32(0), out["pmra"]).astype(np.float32)
        out["pmdec"] = np.where(pm_missing, np.float32(0), out["pmdec"]).astype(np.float32)
    out["pm_missing"] = pm_missing
    out["ra"] = out["ra"] % 360.0
    return out, nbad


def ingest_gaia(sources: Sequence[str | os.PathLike[str]], store_dir: str | os.PathLike[str],
                *, order: int = 7, overwrite: bool = False,
                chunk_rows: int = 1_000_000) -> StoreIndex:
    """Ingest Gaia-archive tables into a HEALPix-partitioned Parquet store.

    Parameters
    ----------
    sources : sequence of path
        CSV (``.csv``, ``.csv.gz``), FITS binary-table (``.fits``, ``.fit``, ``.fits.gz``)
        or Parquet files with Gaia archive column names (matched case-insensitively).
        Required: source_id, ra, dec, pmra, pmdec, ref_epoch, phot_g_mean_mag,
        phot_bp_mean_mag, phot_rp_mean_mag. Kept if present in any source (NaN where a
        source lacks them): ra_error, dec_error, pmra_error, pmdec_error,
        phot_{g,bp,rp}_mean_flux_over_error. Rows with non-finite ra/dec (or |dec| > 90) are dropped
        (logged). Rows with no proper motion (or no ref_epoch) get pmra = pmdec = 0 and
        ``pm_missing = True``. Repeated ``source_id`` values are kept once.
    store_dir : path
        Output directory (created).
    order : int
        HEALPix order of the partition (nside = 2**order, nested); 0 <= order <= 13.
        Order 7 pixels are about 0.46 deg across.
    overwrite : bool
        Replace an existing store in ``store_dir``; otherwise an existing store raises
        ``FileExistsError``.
    chunk_rows : int
        Rows read per chunk (memory bound).

    Returns
    -------
    StoreIndex
        The written index.

    Raises
    ------
    desgw.errors.DesgwInputError
        A source is missing, unreadable, of an unsupported type, or lacks a required
        column (the message names the file and the column).
    FileExistsError
        ``store_dir`` holds a store and ``overwrite`` is False.
    ValueError
        Bad ``order`` or ``chunk_rows``, or no sources.
    """
    if not 0 <= int(order) <= 13:
        raise ValueError(f"order must be in [0, 13], got {order}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise ValueError("no sources to ingest")
    store = Path(store_dir)
    if (store / INDEX_NAME).exists() and not overwrite:
        raise FileExistsError(f"{store} already holds a refcat store (use overwrite=True)")
    t0 = time.perf_counter()
    wanted, hdus, columns = _plan_columns(srcs)
    schema = arrow_schema(columns)
    nside = 2 ** int(order)
    hp = HEALPix(nside=nside, order="nested")

    store.mkdir(parents=True, exist_ok=True)
    staging = temp_name_for(store / "staging")
    staging.mkdir()
    try:
        stage_files: list[Path] = []
        stage_pix: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        n_in = n_bad = 0
        for src, w, hdu in zip(srcs, wanted, hdus):
            for chunk in iter_source_chunks(src, w, chunk_rows=chunk_rows, hdu=hdu):
                n_in += len(chunk["ra"])
                data, nbad = _prepare_chunk(chunk, columns, src)
                n_bad += nbad
                if len(data["ra"]) == 0:
                    continue
                pix = np.asarray(hp.lonlat_to_healpix(data["ra"] * u.deg, data["dec"] * u.deg),
                                 dtype=np.int64)
                srt = np.argsort(pix, kind="stable")
                pix = pix[srt]
                table = pa.Table.from_arrays([pa.array(data[c][srt]) for c in columns],
                                             schema=schema)
                path = staging / f"chunk{len(stage_files):06d}.arrow"
                with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as wr:
                    wr.write_table(table)
                upix, starts, npix = np.unique(pix, return_index=True, return_counts=True)
                stage_files.append(path)
                stage_pix.append((upix, starts, npix))
        logger.info("staged %d rows from %d sources in %d chunks (%.1f s)", n_in - n_bad,
                    len(srcs), len(stage_files), time.perf_counter() - t0)

        staged = [ipc.open_file(pa.memory_map(str(p), "r")).read_all() for p in stage_files]
        all_pix = np.unique(np.concatenate([sp[0] for sp in stage_pix])) if stage_pix \
            else np.zeros(0, dtype=np.int64)
        lookup = [dict(zip(sp[0].tolist(), zip(sp[1].tolist(), sp[2].tolist())))
                  for sp in stage_pix]
        counts: dict[int, int] = {}
        n_dup = 0
        ep_min, ep_max, pm_max = np.inf, -np.inf, 0.0
        for p in all_pix.tolist():
            parts = [tab.slice(lk[p][0], lk[p][1]) for tab, lk in zip(staged, lookup) if p in lk]
            tab = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
            sid = tab.column("source_id").to_numpy()
            _, first = np.unique(sid, return_index=True)
            if first.size != sid.size:
                n_dup += sid.size - first.size
                tab = tab.take(pa.array(np.sort(first)))
            ep = tab.column("ref_epoch").to_numpy(zero_copy_only=False)
            fin = ep[np.isfinite(ep)]
            if fin.size:
                ep_min, ep_max = min(ep_min, float(fin.min())), max(ep_max, float(fin.max()))
            pm = np.hypot(tab.column("pmra").to_numpy(zero_copy_only=False).astype(np.float64),
                          tab.column("pmdec").to_numpy(zero_copy_only=False).astype(np.float64))
            if pm.size:
                pm_max = max(pm_max, float(np.max(pm)))
            with atomic_write_path(pixel_path(store, order, p)) as tmp:
                pq.write_table(tab, tmp, compression="snappy")
            counts[p] = tab.num_rows
        del staged
        if n_dup:
            logger.info("removed %d repeated source_id rows", n_dup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    total = int(sum(counts.values()))
    index = StoreIndex(
        store_dir=store, order=int(order), nside=nside, columns=columns, pixel_counts=counts,
        total=total,
        ref_epoch=float(ep_min) if total and ep_min == ep_max else None,
        ref_epoch_min=float(ep_min) if np.isfinite(ep_min) else float("nan"),
        ref_epoch_max=float(ep_max) if np.isfinite(ep_max) else float("nan"),
        max_pm_masyr=pm_max, sources=tuple(str(s) for s in srcs),
    )
    atomic_write_text(store / INDEX_NAME, index.to_json())
    _remove_stale(store, order, counts)
    logger.info("ingested %d rows into %d pixels (order %d) in %.1f s", total, len(counts),
                order, time.perf_counter() - t0)
    return index


def _remove_stale(store: Path, order: int, counts: dict[int, int]) -> None:
    """Delete pixel files of an earlier store that the new index does not list."""
    keep = {pixel_path(store, order, p).name for p in counts}
    for sub in store.glob("order=*"):
        if not sub.is_dir():
            continue
        same_order = sub.name == f"order={order}"
        for f in sub.glob("pix=*.parquet"):
            if not same_order or f.name not in keep:
                f.unlink()
        if not same_order and not any(sub.iterdir()):
            sub.rmdir()


def refcat_ingest_main(sources: Sequence[str | os.PathLike[str]],
                       store: str | os.PathLike[str], *, order: int = 7,
                       overwrite: bool = False) -> StoreIndex:
    """Entry point for ``desgw refcat ingest SOURCES... --store DIR --order N``.

    Directories among ``sources`` are expanded to the CSV/FITS/Parquet files they hold.
    Returns the :class:`StoreIndex`; errors propagate (see :func:`ingest_gaia`).
    """
    files = expand_sources(sources)
    index = ingest_gaia(files, store, order=order, overwrite=overwrite)
    logger.info("refcat store %s: %d stars in %d pixels (order %d, nside %d)",
                index.store_dir, index.total, len(index.pixel_counts), index.order, index.nside)
    return index
