"""Streaming readers of Gaia-archive tables in CSV (optionally gzipped), FITS and Parquet.

Each reader yields chunks as ``dict[str, numpy.ndarray]`` keyed by the lower-case Gaia
column name, so ingest never holds a whole input file in memory (FITS is memory-mapped
when uncompressed). Column names are matched case-insensitively.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits

from desgw.errors import CorruptFileError, DesgwInputError, MissingFileError
from desgw.refcat.schema import BOOLEAN_COLUMNS, TEXT_FLAG_COLUMNS

__all__ = ["SUPPORTED_SUFFIXES", "flag_values", "iter_source_chunks", "source_columns",
           "source_format"]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".csv": "csv", ".csv.gz": "csv", ".csv.bz2": "csv",
    ".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".parquet": "parquet", ".pq": "parquet",
}


def source_format(path: str | os.PathLike[str]) -> str:
    """Return "csv", "fits" or "parquet" from the file name suffix.

    Raises
    ------
    desgw.errors.DesgwInputError
        The suffix is not one of :data:`SUPPORTED_SUFFIXES`.
    """
    name = Path(path).name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUPPORTED_SUFFIXES[suffix]
    raise DesgwInputError(path, None, "unsupported file type (expected one of "
                          + ", ".join(SUPPORTED_SUFFIXES) + ")")


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise MissingFileError(path, None, "file does not exist")


def _fits_table_hdu(path: Path, hdul: fits.HDUList) -> int:
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU):
            return i
    raise DesgwInputError(path, None, "no binary table HDU")


def _csv_reader(path: Path, include: Sequence[str] | None = None,
                types: dict[str, pa.DataType] | None = None,
                block_size: int = 1 << 24) -> pacsv.CSVStreamingReader:
    stream = pa.input_stream(str(path), compression="detect")
    convert = pacsv.ConvertOptions(include_columns=list(include) if include else None,
                                   column_types=types or {})
    return pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=block_size),
                          convert_options=convert)


def source_columns(path: str | os.PathLike[str]) -> tuple[dict[str, str], int | None]:
    """Column names of a source file.

    Parameters
    ----------
    path : str or os.PathLike
        CSV, FITS or Parquet file.

    Returns
    -------
    names : dict[str, str]
        Lower-case name -> name as spelled in the file (an exact lower-case spelling
        wins over other spellings of the same name).
    hdu : int or None
        The FITS binary-table HDU index (None for CSV and Parquet).

    Raises
    ------
    desgw.errors.MissingFileError, desgw.errors.CorruptFileError
    """
    p = Path(path)
    _check_exists(p)
    fmt = source_format(p)
    hdu_index: int | None = None
    try:
        if fmt == "csv":
            raw = _csv_reader(p, block_size=1 << 16).schema.names
        elif fmt == "parquet":
            raw = pq.ParquetFile(p).schema_arrow.names
        else:
            with fits.open(p, memmap=True) as hdul:
                hdu_index = _fits_table_hdu(p, hdul)
                raw = list(hdul[hdu_index].columns.names)
    except DesgwInputError:
        raise
    except (OSError, ValueError, pa.ArrowException, TypeError, EOFError) as exc:
        raise CorruptFileError(p, None, f"cannot read {fmt} table: {exc}") from exc
    names: dict[str, str] = {}
    for n in raw:
        low = n.lower()
        if low not in names or n == low:
            names[low] = n
    return names, hdu_index


_TRUE_TEXTS = frozenset({"true", "t", "1", "yes", "y"})


def flag_values(values: np.ndarray | pa.Array | pa.ChunkedArray, true_text: str) -> np.ndarray:
    """A flag column as float64 1.0 / 0.0 / NaN (null or empty) from booleans, numbers or text;
    text is true when it is ``true_text`` or a spelling of true ("true", "t", "1", "yes", "y"),
    case-insensitive."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = np.asarray(values)
        if arr.dtype.kind == "b":
            return arr.astype(np.float64)
        if arr.dtype.kind in "iuf":
            num = np.asarray(arr, dtype=np.float64)
            return np.where(np.isfinite(num), (num != 0).astype(np.float64), np.nan)
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "ascii", "replace")
        values = pa.array(arr.astype(object) if arr.dtype.kind != "O" else arr, type=pa.string())
    if pa.types.is_boolean(values.type):
        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        num = np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        return np.where(np.isfinite(num), (num != 0).astype(np.float64), np.nan)
    text = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    true = pc.is_in(text, value_set=pa.array(sorted(_TRUE_TEXTS | {true_text.lower()})))
    empty = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
    out = np.array(true.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    out[np.asarray(empty.fill_null(True).to_numpy(zero_copy_only=False), bool)] = np.nan
    return out


def _as_numpy(col: pa.ChunkedArray | pa.Array, dtype: str, true_text: str = "") -> np.ndarray:
    if true_text:
        return flag_values(col, true_text).astype(dtype)
    if pa.types.is_boolean(col.type):  # true/false -> 1.0/0.0, null -> NaN
        col = col.cast(pa.float64())
    if np.dtype(dtype).kind != "f" and col.null_count:
        raise ValueError(f"{col.null_count} null values in an integer column")
    arr = col.to_numpy(zero_copy_only=False)
    if np.dtype(dtype).kind == "f":
        return np.asarray(arr, dtype=np.float64).astype(dtype, copy=False)
    return np.asarray(arr).astype(dtype, copy=False)


def iter_source_chunks(path: str | os.PathLike[str], wanted: dict[str, tuple[str, str]],
                       *, chunk_rows: int = 500_000, hdu: int | None = None
                       ) -> Iterator[dict[str, np.ndarray]]:
    """Yield chunks of selected columns.

    Parameters
    ----------
    path : str or os.PathLike
        Source file.
    wanted : dict[str, tuple[str, str]]
        Lower-case output name -> (name as spelled in the file, numpy dtype string).
    chunk_rows : int
        Approximate rows per chunk (exact for FITS and Parquet; CSV chunks follow
        pyarrow's byte blocks).
    hdu : int or None
        FITS binary-table HDU index (from :func:`source_columns`).

    Yields
    ------
    dict[str, ndarray]
        One 1-D array per wanted column, all the same length; nulls become NaN in float
        columns.

    Raises
    ------
    desgw.errors.CorruptFileError
        The file cannot be parsed, or an integer column holds nulls or non-numbers.
    """
    p = Path(path)
    fmt = source_format(p)
    try:
        if fmt == "csv":
            types = {}
            for out_name, (src, dt) in wanted.items():
                types[src] = (pa.string() if out_name in TEXT_FLAG_COLUMNS else
                              pa.bool_() if out_name in BOOLEAN_COLUMNS else
                              pa.int64() if np.dtype(dt).kind == "i" else pa.float64())
            # ~100 bytes per Gaia row with our columns; full archive rows are longer
            reader = _csv_reader(p, include=[s for s, _ in wanted.values()], types=types,
                                 block_size=max(1 << 20, min(chunk_rows * 200, 1 << 28)))
            for batch in reader:
                yield {out: _as_numpy(batch.column(src), dt, TEXT_FLAG_COLUMNS.get(out, ""))
                       for out, (src, dt) in wanted.items()}
        elif fmt == "parquet":
            pf = pq.ParquetFile(p)
            for batch in pf.iter_batches(batch_size=chunk_rows,
                                         columns=[s for s, _ in wanted.values()]):
                yield {out: _as_numpy(batch.column(src), dt, TEXT_FLAG_COLUMNS.get(out, ""))
                       for out, (src, dt) in wanted.items()}
        else:
            with fits.open(p, memmap=True) as hdul:
                index = _fits_table_hdu(p, hdul) if hdu is None else hdu
                data = hdul[index].data
                nrows = 0 if data is None else len(data)
                cols = {out: data[src] for out, (src, _dt) in wanted.items()} if nrows else {}
                for start in range(0, nrows, chunk_rows):
                    stop = min(start + chunk_rows, nrows)
                    yield {out: (flag_values(cols[out][start:stop], TEXT_FLAG_COLUMNS[out])
                                 .astype(dt) if out in TEXT_FLAG_COLUMNS else
                                 np.asarray(cols[out][start:stop]).astype(dt))
                           for out, (_src, dt) in wanted.items()}
    except DesgwInputError:
        raise
    except (OSError, ValueError, pa.ArrowException, TypeError, EOFError) as exc:
        raise CorruptFileError(p, hdu, f"cannot read {fmt} table: {exc}") from exc
