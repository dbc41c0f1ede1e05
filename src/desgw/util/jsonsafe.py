"""Plain-JSON values from what the pipeline produces (numpy scalars and arrays, tuples,
non-finite floats), the one converter every JSON writer uses (QC files, efficiency files,
simulator truth, Parquet table metadata)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["json_safe"]


def json_safe(value: Any, *, nonfinite_to_none: bool = True,
              fallback: Callable[[Any], Any] | None = None) -> Any:
    """``value`` converted to plain JSON types, recursively.

    numpy integers, floats and booleans become ``int``, ``float`` and ``bool``; arrays, tuples
    and lists become lists; mappings become dicts with ``str`` keys.

    Parameters
    ----------
    value : object
        What to convert.
    nonfinite_to_none : bool, optional
        NaN and infinities become ``None`` (JSON ``null``; strict JSON has no NaN). When
        False they stay floats (Python's ``json`` writes them as ``NaN``/``Infinity``).
    fallback : callable, optional
        Applied to values of any other type (e.g. ``str``); by default those raise.

    Returns
    -------
    object
        ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` or ``dict``.

    Raises
    ------
    TypeError
        A value of another type and no ``fallback``.
    """
    if value is None or (isinstance(value, bool | int) and not isinstance(value, np.generic)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return None if nonfinite_to_none and not math.isfinite(v) else v
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, nonfinite_to_none=nonfinite_to_none, fallback=fallback)
                for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
        if not isinstance(value, list):  # 0-d array
            return json_safe(value, nonfinite_to_none=nonfinite_to_none, fallback=fallback)
    if isinstance(value, list | tuple):
        return [json_safe(v, nonfinite_to_none=nonfinite_to_none, fallback=fallback)
                for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item(), nonfinite_to_none=nonfinite_to_none, fallback=fallback)
    if fallback is not None:
        return fallback(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
