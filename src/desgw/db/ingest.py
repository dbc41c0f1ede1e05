"""Registering exposures: read primary headers, keep science exposures, explain the rest.

An exposure is a raw DECam file or a NOIRLab Community Pipeline InstCal image (``*_ooi_*``,
PROCTYPE ``InstCal``); the database records which (``kind``), so the planners run the matching
single-epoch processing. Rejected (with the reason):
* calibration and engineering exposures, by OBSTYPE: zero, bias, dark, dome flat, flat,
  sky flat, twilight flat, test, junk, pointing, focus (and anything that is not
  ``object``: desgw processes only science exposures);
* exposures whose OBJECT names them junk, test, pointing, focus, donut, flat, bias, zero or
  dark (whole words, any case), and those whose PROPID is in ``reject_propids`` or names
  them test, junk or engineering;
* science exposures lacking what the pipeline needs: a filter band, a pointing, or a
  positive exposure time;
* files that cannot be read: the reason is the io error text (missing, corrupt, bad header);
* CP InstCal masks and weights (``_ood_``, ``_oow_``, or PRODTYPE dqmask / wtmap): they are
  read with their image, which is the exposure's file; CP master calibrations and other
  CP products that are not InstCal images.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from desgw.errors import DesgwInputError
from desgw.io.raw import read_exposure_header

from .database import Database
from .writes import register_exposures

__all__ = [
    "CALIBRATION_OBSTYPES",
    "JUNK_OBJECT_WORDS",
    "JUNK_PROPID_WORDS",
    "IngestReport",
    "ingest_raw",
    "non_science_reason",
]

log = logging.getLogger(__name__)

#: OBSTYPE values of calibration / engineering exposures (compared lower-case, spaces squeezed).
CALIBRATION_OBSTYPES: frozenset[str] = frozenset({
    "zero", "bias", "dark", "dome flat", "domeflat", "flat", "sky flat", "skyflat",
    "twilight flat", "test", "junk", "pointing", "focus",
})
#: Words in OBJECT that mark an exposure as not science.
JUNK_OBJECT_WORDS: frozenset[str] = frozenset({
    "junk", "test", "pointing", "focus", "donut", "flat", "bias", "zero", "dark",
})
#: Words in PROPID that mark an exposure as not science.
JUNK_PROPID_WORDS: frozenset[str] = frozenset({"test", "junk", "eng", "engineering"})

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class IngestReport:
    """What :func:`ingest_raw` did.

    Attributes
    ----------
    registered : tuple of int
        Exposure numbers registered (or updated), in input order.
    rejected : tuple of (str, str)
        ``(path, reason)`` for each file not registered, in input order.
    """

    registered: tuple[int, ...]
    rejected: tuple[tuple[str, str], ...]


def non_science_reason(obstype: str | None, object_name: str | None, propid: str | None, *,
                       reject_propids: Iterable[str] = ()) -> str | None:
    """Why an exposure is not a science exposure, or None when it is one.

    Parameters
    ----------
    obstype, object_name, propid : str or None
        Header keywords OBSTYPE, OBJECT and PROPID.
    reject_propids : iterable of str
        Further proposal ids to reject (exact match).
    """
    if obstype is None or not str(obstype).strip():
        return "no OBSTYPE keyword: cannot tell whether this is a science exposure"
    kind = " ".join(str(obstype).lower().split())
    if kind in CALIBRATION_OBSTYPES:
        return f"calibration/engineering exposure (OBSTYPE={obstype!r})"
    if kind != "object":
        return f"not a science exposure (OBSTYPE={obstype!r}, expected 'object')"
    if object_name:
        words = set(_WORD.findall(str(object_name).lower()))
        junk = sorted(words & JUNK_OBJECT_WORDS)
        if junk:
            return f"OBJECT {object_name!r} marks a non-science exposure ({', '.join(junk)})"
    if propid:
        if str(propid).strip() in {str(p).strip() for p in reject_propids}:
            return f"PROPID {propid!r} is in the rejected proposal list"
        junk = sorted(set(_WORD.findall(str(propid).lower())) & JUNK_PROPID_WORDS)
        if junk:
            return f"PROPID {propid!r} marks a non-science exposure ({', '.join(junk)})"
    return None


def _unusable_reason(header: Any) -> str | None:
    if not header.band:
        return "no filter band (BAND/FILTER)"
    if header.ra_deg is None or header.dec_deg is None:
        return "no telescope pointing (TELRA/TELDEC or RA/DEC)"
    if not header.exptime > 0:
        return f"exposure time is {header.exptime} s"
    return None


def _not_an_exposure_file(name: str, primary: Any) -> str | None:
    """Why a readable DECam file is not an exposure's own file (a CP mask, weight, master
    calibration or other CP product), or None."""
    from desgw.io.instcal import decam_file_kind, instcal_plane

    kind = decam_file_kind(primary)
    base = os.path.basename(name)
    if kind == "instcal":
        # the name first: cut-outs copy the image's primary header into the mask and weight
        plane = ("image" if "_ooi_" in base else "mask" if "_ood_" in base
                 else "weight" if "_oow_" in base else instcal_plane(primary))
        if plane in ("mask", "weight"):
            return f"a CP InstCal {plane}, read with its image (_ooi_), not an exposure"
        return None
    if kind == "cp_calibration":
        return "a CP master calibration, not an exposure (desgw calib import reads it)"
    if kind == "other":
        return (f"PROCTYPE {primary.get('PROCTYPE')!r}: neither a raw exposure nor a CP "
                "InstCal image")
    return None


def ingest_raw(db: Database, paths: Iterable[str | os.PathLike[str]], *,
               reject_propids: Iterable[str] = ()) -> IngestReport:
    """Register the science exposures among raw files and CP InstCal images; report the
    others with the reason.

    The exposure's ``kind`` is ``"instcal"`` for a CP InstCal image, ``"raw"`` otherwise.
    Reads only primary headers (:func:`desgw.io.raw.read_exposure_header`). A file that
    cannot be read is rejected with the io error text; it does not stop the others. A second
    file with the EXPNUM of an earlier one is rejected with a reason naming the first.
    All accepted exposures are registered in one transaction.

    Parameters
    ----------
    db : Database
    paths : iterable of path
        Raw DECam exposures (``.fits`` or ``.fits.fz``).
    reject_propids : iterable of str
        Proposal ids to reject in addition to the built-in rules.

    Returns
    -------
    IngestReport
    """
    reject = tuple(reject_propids)
    accepted: list[tuple[Any, str]] = []
    rejected: list[tuple[str, str]] = []
    first_file: dict[int, str] = {}
    for path in paths:
        name = os.fspath(path)
        try:
            header = read_exposure_header(name)
        except (DesgwInputError, OSError) as exc:
            rejected.append((name, str(exc)))
            log.warning("rejected %s: %s", name, exc)
            continue
        reason = (_not_an_exposure_file(name, header.header)
                  or non_science_reason(header.obstype, header.object, header.propid,
                                        reject_propids=reject)
                  or _unusable_reason(header))
        if reason is not None:
            rejected.append((name, f"exposure {header.expnum}: {reason}"))
            log.info("rejected %s: exposure %d: %s", name, header.expnum, reason)
            continue
        expnum = int(header.expnum)
        if expnum in first_file:
            why = (f"exposure {expnum}: same EXPNUM as {first_file[expnum]} (registered from "
                   "that file)")
            rejected.append((name, why))
            log.warning("rejected %s: %s", name, why)
            continue
        first_file[expnum] = name
        accepted.append((header, name))
    records = register_exposures(db, accepted)
    log.info("ingest: %d exposures registered, %d files rejected", len(records), len(rejected))
    return IngestReport(registered=tuple(r.expnum for r in records), rejected=tuple(rejected))
