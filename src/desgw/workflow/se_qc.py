"""The CCD and exposure QC JSON files of the SE runner: quality results to and from JSON values
(the format lives here rather than in :mod:`desgw.io` because it is built from the
:mod:`desgw.se.quality` types, which io may not import).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any


from desgw.errors import DesgwInputError, MissingFileError

from .se_types import CCDSummary

if TYPE_CHECKING:  # pragma: no cover
    from desgw.se.quality import QCMetrics, QCResult

__all__ = [
    "finished_ccd_summary",
    "QC_FORMAT",
    "load_ccd_summary",
    "qc_from_dict",
    "qc_to_dict",
]

log = logging.getLogger(__name__)


#: Version of the CCD QC JSON layout.
QC_FORMAT = 1


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


def qc_to_dict(qc: Any) -> dict[str, Any] | None:
    if qc is None:
        return None
    if hasattr(qc, "metrics"):
        return {"passed": bool(qc.passed), "reasons": list(qc.reasons),
                "metrics": dataclasses.asdict(qc.metrics)}
    return {"passed": None, "reasons": [], "metrics": dataclasses.asdict(qc)}


def _metrics_from_dict(d: Mapping[str, Any]) -> QCMetrics:
    from desgw.se.quality import QCMetrics, TeffResult

    teff = TeffResult(**{k: _nan_if_none(v) for k, v in d["teff"].items()})
    values: dict[str, Any] = {}
    for f in dataclasses.fields(QCMetrics):
        if f.name == "teff":
            continue
        v = d[f.name]
        if f.name == "band":
            values[f.name] = str(v)
        elif f.name == "n_stars":
            values[f.name] = int(v)
        else:
            values[f.name] = _nan_if_none(v)
    return QCMetrics(teff=teff, **values)


def qc_from_dict(d: Mapping[str, Any] | None) -> QCResult | None:
    if d is None:
        return None
    from desgw.se.quality import QCResult

    return QCResult(passed=bool(d["passed"]), reasons=tuple(d["reasons"]),
                    metrics=_metrics_from_dict(d["metrics"]))


def finished_ccd_summary(paths: Any, ccdnum: int, *, overwrite: bool) -> CCDSummary | None:
    """The summary of a CCD whose products are all there (the resume check), or None when it
    must be processed: ``overwrite``, a product missing, or a QC file that is not desgw's
    (logged; the CCD is then processed again).

    Parameters
    ----------
    paths : desgw.io.product_paths.CCDProductPaths
        The CCD's product paths (``complete()``, ``qc``).
    ccdnum : int
    overwrite : bool
    """
    if overwrite or not paths.complete():
        return None
    try:
        return load_ccd_summary(paths.qc, ccdnum)
    except DesgwInputError as exc:
        log.warning("CCD %d: %s; processing it again", ccdnum, exc)
        return None


def load_ccd_summary(qc_path: str | os.PathLike[str], ccdnum: int) -> CCDSummary:
    """Summary of a finished CCD from its ``_qc.json`` (used by the resume check).

    Raises
    ------
    DesgwInputError
        The file is not a desgw CCD QC file.
    """
    p = Path(qc_path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        corners = d.get("corners")
        return CCDSummary(
            ccdnum=int(ccdnum), ok=True, skipped=True, qc=qc_from_dict(d.get("qc")),
            zp=_nan_if_none(d.get("zeropoint", {}).get("zp")),
            zp_err=_nan_if_none(d.get("zeropoint", {}).get("zp_err")),
            timings={k: float(v) for k, v in d.get("timings", {}).items() if v is not None},
            corners=None if corners is None else (tuple(float(v) for v in corners["ra"]),
                                                  tuple(float(v) for v in corners["dec"])),
            config_hash=d.get("config_hash"),
            astrometric_rms_arcsec=_nan_if_none(d.get("astrometry", {}).get("rms_arcsec")),
            n_objects=int(d.get("n_objects", 0)),
        )
    except FileNotFoundError:
        raise MissingFileError(p, None, "CCD QC file not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DesgwInputError(p, None, f"not a desgw CCD QC file ({type(exc).__name__}: "
                              f"{exc})") from None
