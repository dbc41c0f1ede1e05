"""Columns of the Gaia reference-catalog store: names (Gaia archive), types and units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "ALL_SOURCE_COLUMNS",
    "BOOLEAN_COLUMNS",
    "DERIVED",
    "OPTIONAL",
    "REQUIRED",
    "TEXT_FLAG_COLUMNS",
    "ColumnSpec",
    "arrow_schema",
    "column_unit",
]


@dataclass(frozen=True)
class ColumnSpec:
    """One stored column.

    Attributes
    ----------
    name : str
        Gaia archive column name (lower case).
    dtype : numpy dtype string
        Stored type.
    unit : str
        Unit ("" when dimensionless).
    boolean : bool
        A true/false column in the Gaia archive, stored as 1.0 / 0.0 (NaN when null).
    true_text : str
        For a flag the Gaia archive writes as text (e.g. ``phot_variable_flag``:
        "VARIABLE" / "NOT_AVAILABLE"): the text that means true, case-insensitive; every
        other non-empty text is false. A source file may also hold the column as true/false
        (as legacypipe's Gaia chunks do).
    """

    name: str
    dtype: str
    unit: str
    boolean: bool = False
    true_text: str = ""


#: Columns every input must have (matched case-insensitively).
REQUIRED: tuple[ColumnSpec, ...] = (
    ColumnSpec("source_id", "int64", ""),
    ColumnSpec("ra", "float64", "deg"),
    ColumnSpec("dec", "float64", "deg"),
    ColumnSpec("pmra", "float32", "mas / yr"),
    ColumnSpec("pmdec", "float32", "mas / yr"),
    ColumnSpec("ref_epoch", "float64", "yr"),
    ColumnSpec("phot_g_mean_mag", "float32", "mag"),
    ColumnSpec("phot_bp_mean_mag", "float32", "mag"),
    ColumnSpec("phot_rp_mean_mag", "float32", "mag"),
)

#: Columns kept when any input has them; NaN-filled for inputs that lack them.
OPTIONAL: tuple[ColumnSpec, ...] = (
    ColumnSpec("ra_error", "float32", "mas"),
    ColumnSpec("dec_error", "float32", "mas"),
    ColumnSpec("pmra_error", "float32", "mas / yr"),
    ColumnSpec("pmdec_error", "float32", "mas / yr"),
    ColumnSpec("phot_g_mean_flux_over_error", "float32", ""),
    ColumnSpec("phot_bp_mean_flux_over_error", "float32", ""),
    ColumnSpec("phot_rp_mean_flux_over_error", "float32", ""),
    # quality columns of desgw.refcat.quality (float so that a source file without them, or
    # a null, is NaN; duplicated_source is 1.0 / 0.0)
    ColumnSpec("astrometric_excess_noise", "float32", "mas"),
    ColumnSpec("duplicated_source", "float32", "", boolean=True),
    ColumnSpec("phot_bp_rp_excess_factor", "float32", ""),
    ColumnSpec("visibility_periods_used", "float32", ""),
    # Gaia's photometric variability flag: variable stars are left out of the zeropoints
    ColumnSpec("phot_variable_flag", "float32", "", boolean=True, true_text="VARIABLE"),
)

#: Columns computed at ingest.
DERIVED: tuple[ColumnSpec, ...] = (
    # True where the input had no proper motion (NaN/null): pmra, pmdec are then stored as 0
    ColumnSpec("pm_missing", "bool", ""),
)

ALL_SOURCE_COLUMNS: tuple[ColumnSpec, ...] = REQUIRED + OPTIONAL
#: Columns read as true/false (CSV text "True"/"false"/"1"...) and stored as float 1/0/NaN.
BOOLEAN_COLUMNS: frozenset[str] = frozenset(c.name for c in ALL_SOURCE_COLUMNS if c.boolean)
#: Flag columns that may be text in the source (name -> the text meaning true).
TEXT_FLAG_COLUMNS: dict[str, str] = {c.name: c.true_text for c in ALL_SOURCE_COLUMNS
                                     if c.true_text}

_UNITS = {c.name: c.unit for c in REQUIRED + OPTIONAL + DERIVED}


def column_unit(name: str) -> str:
    """Unit string of a stored column ("" when dimensionless or unknown)."""
    return _UNITS.get(name, "")


def arrow_schema(names: tuple[str, ...]) -> pa.Schema:
    """Arrow schema for the stored columns ``names`` (in that order)."""
    specs = {c.name: c for c in REQUIRED + OPTIONAL + DERIVED}
    return pa.schema([pa.field(n, pa.from_numpy_dtype(np.dtype(specs[n].dtype)))
                      for n in names])
