"""Writing to the desgw database: exposures, CCD products, zeropoints, templates used,
detections (with candidate association) and fakes.

Every function runs in one write transaction: all of its rows are stored or none.
Re-recording the same exposure, CCD product, zeropoint or template use updates it in place
(an upsert keyed as documented), so a re-run task does not duplicate rows.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (Integer, Table, and_, bindparam, cast, delete, func, insert, or_, select,
                        update)
from sqlalchemy.dialects import postgresql as _pg
from sqlalchemy.dialects import sqlite as _sqlite
from sqlalchemy.orm import Session

from desgw.errors import DesgwInputError

from ._sky import angular_separation_deg, mean_position, radec_box
from .database import Database
from .errors import UnknownExposureError
from .models import (EXPOSURE_KINDS, CandidateRow, CCDProductRow, DetectionRow, ExposureRow,
                     FakeRow, TemplateUsedRow, ZeropointRow)
from .records import (CCDProduct, ExposureRecord, NewDetection, NewFake, TemplateUse,
                      Zeropoint)

__all__ = [
    "register_exposure",
    "register_exposures",
    "record_ccd_product",
    "record_ccd_products",
    "record_zeropoints",
    "record_templates_used",
    "add_detections",
    "record_fakes",
    "replace_ccd_results",
    "recalibrate_detections",
    "ZP_SOURCE_EXPCALIB",
    "DEFAULT_MATCH_RADIUS_ARCSEC",
]

log = logging.getLogger(__name__)

#: Detections closer than this to a candidate join it (arcsec), as the original.
DEFAULT_MATCH_RADIUS_ARCSEC = 1.0

_CHUNK = 500
T = TypeVar("T")


# ----------------------------------------------------------------------------- helpers
def _insert_for(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return _sqlite.insert
    if name == "postgresql":
        return _pg.insert
    raise NotImplementedError(f"upsert is not implemented for the {name} dialect")


def _upsert(session: Session, model: type, rows: list[dict[str, Any]], keys: Sequence[str],
            *, keep: Sequence[str] = (), ignore: bool = False) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE (all columns but keys and keep) / DO NOTHING."""
    if not rows:
        return
    insert = _insert_for(session)
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(model).values(rows[start:start + _CHUNK])
        if ignore:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        else:
            update = {c: stmt.excluded[c] for c in rows[0] if c not in keys and c not in keep}
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
        session.execute(stmt)


def _insert_rows(session: Session, model: type, rows: list[dict[str, Any]]) -> list[int]:
    """INSERT ``rows`` (dicts with the same keys, no ``id``) in one batch; their new ids, in
    input order.

    SQLite: the write transaction holds the database write lock (``BEGIN IMMEDIATE``), so
    the ids are numbered here from ``max(id) + 1`` and the rows go to the driver's
    ``executemany`` without RETURNING (the ORM inserted them one statement per row to learn
    each id). Other dialects: ``INSERT ... RETURNING`` in the parameters' order.
    """
    if not rows:
        return []
    session.flush()
    table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "sqlite":
        start = int(session.execute(
            select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1
        ids = list(range(start, start + len(rows)))
        session.execute(insert(table), [{**r, "id": i} for r, i in zip(rows, ids)])
        return ids
    result = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                             rows)
    return [int(i) for i in result.scalars()]


def _fake_values(expnum: int, ccdnum: int, f: NewFake) -> dict[str, Any]:
    return {"expnum": int(expnum), "ccdnum": int(ccdnum), "ra": _finite(f.ra, "ra") % 360.0,
            "dec": _finite(f.dec, "dec"), "mag": _finite(f.mag, "mag"), "host": bool(f.host),
            "recovered": False, "recovered_detection_id": None}


def _finite(value: Any, name: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _template_use_values(use: TemplateUse) -> dict[str, Any]:
    """A ``templates_used`` row (non-finite registration numbers stored as NULL)."""
    method = use.reg_method
    if method is not None and method not in ("affine", "shift", "wcs"):
        raise ValueError(f"registration method must be affine, shift or wcs, got {method!r}")
    return {"search_expnum": int(use.search_expnum), "search_ccdnum": int(use.search_ccdnum),
            "template_expnum": int(use.template_expnum),
            "template_ccdnum": int(use.template_ccdnum), "reg_method": method,
            "reg_nstars": _optional_int(use.reg_nstars), "reg_dx": _optional_float(use.reg_dx),
            "reg_dy": _optional_float(use.reg_dy),
            "reg_rms_before": _optional_float(use.reg_rms_before),
            "reg_rms_after": _optional_float(use.reg_rms_after)}


def _coerce(row: T | Mapping[str, Any], cls: type[T]) -> T:
    if isinstance(row, cls):
        return row
    if not isinstance(row, Mapping):
        raise TypeError(f"expected {cls.__name__} or a mapping, got {type(row).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(row) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(map(str, unknown))}")
    return cls(**dict(row))


def _require_exposures(session: Session, expnums: Iterable[int]) -> dict[int, ExposureRow]:
    wanted = sorted({int(e) for e in expnums})
    found: dict[int, ExposureRow] = {}
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start:start + _CHUNK]
        for row in session.scalars(select(ExposureRow).where(ExposureRow.expnum.in_(part))):
            found[row.expnum] = row
    missing = [e for e in wanted if e not in found]
    if missing:
        raise UnknownExposureError(
            f"exposure {missing[0]} is not registered (register_exposure first)"
            + (f"; also missing: {missing[1:10]}" if len(missing) > 1 else ""), missing[0])
    return found


# ----------------------------------------------------------------------------- exposures
def _header_attr(header: Any, *names: str) -> Any:
    for name in names:
        value = getattr(header, name, None)
        if value is not None:
            return value
    return None


def _exposure_values(header: Any, path: str | os.PathLike[str] | None) -> dict[str, Any]:
    expnum = _header_attr(header, "expnum")
    where = os.fspath(path) if path is not None else None
    if expnum is None:
        raise DesgwInputError(where, 0, "cannot register an exposure without EXPNUM")
    values: dict[str, Any] = {
        "expnum": int(expnum),
        "nite": _header_attr(header, "nite"),
        "mjd": _header_attr(header, "mjd_obs", "mjd"),
        "band": _header_attr(header, "band"),
        "exptime": _header_attr(header, "exptime"),
        "ra": _header_attr(header, "ra_deg", "ra"),
        "dec": _header_attr(header, "dec_deg", "dec"),
    }
    labels = {"nite": "nite", "mjd": "MJD-OBS", "band": "BAND/FILTER", "exptime": "EXPTIME",
              "ra": "TELRA (pointing)", "dec": "TELDEC (pointing)"}
    missing = [labels[k] for k, v in values.items() if v is None]
    if missing:
        raise DesgwInputError(where, 0, f"cannot register exposure {values['expnum']}: "
                              f"missing {', '.join(missing)}")
    program = _header_attr(header, "program")
    full = getattr(header, "header", None)
    if program is None and full is not None and hasattr(full, "get"):
        program = full.get("PROGRAM")
    values.update(
        nite=int(values["nite"]), mjd=float(values["mjd"]), band=str(values["band"]),
        exptime=float(values["exptime"]), ra=float(values["ra"]) % 360.0,
        dec=float(values["dec"]),
        object=_header_attr(header, "object"), propid=_header_attr(header, "propid"),
        obstype=_header_attr(header, "obstype"),
        program=None if program is None else str(program).strip() or None,
        airmass=_optional_float(_header_attr(header, "airmass")),
        raw_path=where,
        kind=_exposure_kind(header, where),
    )
    return values


def _exposure_kind(header: Any, where: str | None) -> str:
    """``"instcal"`` for a CP InstCal image (its ``kind`` attribute, else PROCTYPE of its full
    primary header), ``"raw"`` otherwise."""
    kind = getattr(header, "kind", None)
    if kind is None:
        full = getattr(header, "header", None)
        if full is not None and hasattr(full, "get"):
            from desgw.io.instcal import decam_file_kind

            kind = "instcal" if decam_file_kind(full) == "instcal" else "raw"
        else:
            kind = "raw"
    if kind not in EXPOSURE_KINDS:
        raise DesgwInputError(where, 0, f"exposure kind {kind!r} is not one of "
                              f"{', '.join(EXPOSURE_KINDS)}")
    return str(kind)


def _to_exposure_record(row: ExposureRow, t_eff: float | None = None) -> ExposureRecord:
    ingested = row.ingested_at
    if ingested is not None and ingested.tzinfo is None:  # SQLite drops the zone; it is UTC
        ingested = ingested.replace(tzinfo=_dt.UTC)
    return ExposureRecord(expnum=row.expnum, nite=row.nite, mjd=row.mjd, band=row.band,
                          exptime=row.exptime, ra=row.ra, dec=row.dec, object=row.object,
                          propid=row.propid, obstype=row.obstype, program=row.program,
                          airmass=row.airmass, raw_path=row.raw_path,
                          ingested_at=ingested, t_eff=t_eff, kind=row.kind or "raw")


def register_exposures(db: Database, items: Iterable[tuple[Any, str | os.PathLike[str] | None]]
                       ) -> list[ExposureRecord]:
    """Register exposures from their headers (one transaction); see :func:`register_exposure`.

    Parameters
    ----------
    db : Database
    items : iterable of (header, path)
        ``header`` is a :class:`desgw.io.raw.ExposureHeader` or any object with the same
        attributes (expnum, nite, mjd_obs or mjd, band, exptime, ra_deg/dec_deg or ra/dec,
        object, propid, obstype, airmass; program optional).

    Returns
    -------
    list of ExposureRecord
        In input order.
    """
    values = [_exposure_values(h, p) for h, p in items]
    if not values:
        return []
    now = _dt.datetime.now(_dt.UTC)
    for v in values:
        v["ingested_at"] = now
    with db.write_session() as session:
        _upsert(session, ExposureRow, values, ["expnum"], keep=["ingested_at"])
        session.flush()
        rows = _require_exposures(session, [v["expnum"] for v in values])
        return [_to_exposure_record(rows[v["expnum"]]) for v in values]


def register_exposure(db: Database, header: Any, path: str | os.PathLike[str] | None = None
                      ) -> ExposureRecord:
    """Register (or update) one exposure from its primary header.

    Keyed by ``expnum``: registering again updates the header fields and the path and keeps
    the first ``ingested_at``.

    Raises
    ------
    desgw.errors.DesgwInputError
        If the header lacks EXPNUM, the time, the band, the exposure time or the pointing.
    """
    return register_exposures(db, [(header, path)])[0]


# ----------------------------------------------------------------------------- products
def record_ccd_product(db: Database, product: CCDProduct) -> None:
    """Store (or update) a CCD's products and quality, keyed by (expnum, ccdnum, rnum, pnum).

    Raises
    ------
    UnknownExposureError
        If the exposure is not registered.
    """
    record_ccd_products(db, [product])


def record_ccd_products(db: Database, products: Iterable[CCDProduct]) -> int:
    """:func:`record_ccd_product` for several CCDs in one transaction (an exposure's CCDs:
    one commit instead of one per CCD); return the count.

    Raises
    ------
    UnknownExposureError
        If an exposure is not registered (then nothing is stored).
    """
    now = _dt.datetime.now(_dt.UTC)
    products = list(products)
    values: list[dict[str, Any]] = [{
        "expnum": int(product.expnum), "ccdnum": int(product.ccdnum),
        "rnum": int(product.rnum), "pnum": int(product.pnum), "status": product.status,
        "image_path": product.image_path, "catalog_path": product.catalog_path,
        "fwhm_arcsec": _optional_float(product.fwhm_arcsec),
        "sky_brightness": _optional_float(product.sky_brightness),
        "zp": _optional_float(product.zp),
        "astrom_rms_arcsec": _optional_float(product.astrom_rms_arcsec),
        "n_stars": _optional_int(product.n_stars), "t_eff": _optional_float(product.t_eff),
        "qc_passed": None if product.qc_passed is None else bool(product.qc_passed),
        "qc_reasons": list(product.qc_reasons),
        "updated_at": now,
    } for product in products]
    if not values:
        return 0
    with db.write_session() as session:
        _require_exposures(session, sorted({int(p.expnum) for p in products}))
        _upsert(session, CCDProductRow, values, ["expnum", "ccdnum", "rnum", "pnum"])
    return len(values)


def record_zeropoints(db: Database, zeropoints: Iterable[Zeropoint]) -> int:
    """Store (or update) zeropoints, keyed by (expnum, ccdnum, rnum, pnum); return the count.

    ``ccdnum`` 0 is the zeropoint of the whole exposure.
    """
    values = [{"expnum": int(z.expnum), "ccdnum": int(z.ccdnum), "rnum": int(z.rnum),
               "pnum": int(z.pnum), "zp": _finite(z.zp, "zp"),
               "zp_err": _finite(z.zp_err, "zp_err"), "n_stars": int(z.n_stars),
               "flag": int(z.flag)} for z in zeropoints]
    if not values:
        return 0
    with db.write_session() as session:
        _require_exposures(session, [int(z["expnum"]) for z in values])
        _upsert(session, ZeropointRow, values, ["expnum", "ccdnum", "rnum", "pnum"])
    return len(values)


def record_templates_used(db: Database, uses: Iterable[TemplateUse]) -> int:
    """Store which template CCDs were used for which search CCDs; return the count given.

    A pair already stored is left as it is.
    """
    values = [_template_use_values(u) for u in uses]
    if not values:
        return 0
    with db.write_session() as session:
        _require_exposures(session, [v["search_expnum"] for v in values]
                           + [v["template_expnum"] for v in values])
        _upsert(session, TemplateUsedRow, values, ["search_expnum", "search_ccdnum",
                                                   "template_expnum", "template_ccdnum"],
                ignore=True)
    return len(values)


# ----------------------------------------------------------------------------- fakes
def record_fakes(db: Database, expnum: int, ccdnum: int,
                 rows: Sequence[NewFake | Mapping[str, Any]]) -> list[int]:
    """Store the fakes injected into one search CCD; return their ids (input order).

    Detections that carry a ``fake_id`` later mark the fake as recovered
    (see :func:`add_detections`).
    """
    fakes = [_coerce(r, NewFake) for r in rows]
    if not fakes:
        return []
    values = [_fake_values(expnum, ccdnum, f) for f in fakes]
    with db.write_session() as session:
        _require_exposures(session, [expnum])
        return _insert_rows(session, FakeRow, values)


# ----------------------------------------------------------------------------- detections
def _check_detection(d: NewDetection) -> dict[str, Any]:
    if d.fake_id is not None and not d.is_fake:
        raise ValueError(f"detection at ({d.ra}, {d.dec}) has fake_id {d.fake_id} but "
                         "is_fake=False")
    dec = _finite(d.dec, "dec")
    if not -90.0 <= dec <= 90.0:
        raise ValueError(f"dec out of range: {dec}")
    rb = _optional_float(d.real_bogus)
    return {"ra": _finite(d.ra, "ra") % 360.0, "dec": dec, "flux": _finite(d.flux, "flux"),
            "fluxerr": _finite(d.fluxerr, "fluxerr"), "snr": _finite(d.snr, "snr"),
            "mag": _optional_float(d.mag), "magerr": _optional_float(d.magerr),
            "real_bogus": rb, "flags": int(d.flags), "is_fake": bool(d.is_fake),
            "fake_id": _optional_int(d.fake_id), "zp": _optional_float(d.zp),
            "zp_source": None if d.zp_source is None else str(d.zp_source)[:32]}


def _candidates_near(session: Session, ra: np.ndarray, dec: np.ndarray, pad_deg: float
                     ) -> tuple[list[int], list[float], list[float]]:
    dec_lo, dec_hi, windows = radec_box(ra, dec, pad_deg)
    cond = [CandidateRow.dec >= dec_lo, CandidateRow.dec <= dec_hi]
    if windows is not None:
        cond.append(or_(*[and_(CandidateRow.ra >= lo, CandidateRow.ra <= hi)
                          for lo, hi in windows]))
    ids, ras, decs = [], [], []
    for cid, cra, cdec in session.execute(
            select(CandidateRow.id, CandidateRow.ra, CandidateRow.dec).where(*cond)):
        ids.append(int(cid))
        ras.append(float(cra))
        decs.append(float(cdec))
    return ids, ras, decs


_CAND: Table = CandidateRow.__table__  # type: ignore[assignment]
_CANDIDATE_REFRESH = (
    update(_CAND).where(_CAND.c.id == bindparam("b_id"))
    .values(ra=bindparam("b_ra"), dec=bindparam("b_dec"), n_detections=bindparam("b_n"),
            n_nights=bindparam("b_nights"), first_mjd=bindparam("b_first"),
            last_mjd=bindparam("b_last"), max_real_bogus=bindparam("b_best"),
            is_fake=bindparam("b_fake")))
_FAKE: Table = FakeRow.__table__  # type: ignore[assignment]
_FAKE_RECOVERED = (update(_FAKE).where(_FAKE.c.id == bindparam("b_id"))
                   .values(recovered=True, recovered_detection_id=bindparam("b_det")))


def _refresh_candidates(session: Session, ids: Iterable[int]) -> None:
    """Recompute position, counts, MJD range, best score and fake flag of candidates."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start:start + _CHUNK]
        stats = session.execute(
            select(DetectionRow.candidate_id, func.count(DetectionRow.id),
                   func.count(func.distinct(ExposureRow.nite)), func.min(ExposureRow.mjd),
                   func.max(ExposureRow.mjd), func.max(DetectionRow.real_bogus),
                   func.min(cast(DetectionRow.is_fake, Integer)))
            .join(ExposureRow, ExposureRow.expnum == DetectionRow.expnum)
            .where(DetectionRow.candidate_id.in_(part))
            .group_by(DetectionRow.candidate_id)).all()
        positions: dict[int, tuple[list[float], list[float]]] = {}
        for cid, dra, ddec in session.execute(
                select(DetectionRow.candidate_id, DetectionRow.ra, DetectionRow.dec)
                .where(DetectionRow.candidate_id.in_(part))):
            positions.setdefault(int(cid), ([], []))
            positions[int(cid)][0].append(dra)
            positions[int(cid)][1].append(ddec)
        # one executemany UPDATE by id (no ORM rows loaded)
        new_values = []
        for cid, n_det, n_nights, first, last, best, all_fake in stats:
            ra, dec = mean_position(*positions[int(cid)])
            new_values.append({"b_id": int(cid), "b_ra": float(ra), "b_dec": float(dec),
                               "b_n": int(n_det), "b_nights": int(n_nights),
                               "b_first": float(first), "b_last": float(last),
                               "b_best": None if best is None else float(best),
                               "b_fake": bool(all_fake)})
        if new_values:
            session.execute(_CANDIDATE_REFRESH, new_values)


def _associate(db: Database, session: Session, exposure: ExposureRow, expnum: int,
               ccdnum: int, values: list[dict[str, Any]], fakes: Mapping[int, bool],
               radius_deg: float) -> tuple[list[int], list[int]]:
    """Insert detections (values of :func:`_check_detection`, ``fake_id`` a key of ``fakes``,
    which maps each stored fake's id to whether it is already recovered), each joined to the
    nearest candidate within ``radius_deg`` or a new one; mark the fakes they recover; refresh
    the touched candidates. Returns (detection ids, candidate ids), in input order."""
    ra = np.array([v["ra"] for v in values])
    dec = np.array([v["dec"] for v in values])
    db.lock_candidates(session)
    cand_ids, cand_ra, cand_dec = _candidates_near(session, ra, dec, 2.0 * radius_deg)
    cra, cdec = np.asarray(cand_ra, float), np.asarray(cand_dec, float)
    # each detection joins the nearest candidate within the radius, those this call creates
    # included (slots: stored candidate ids, then the new rows, inserted in one batch)
    n_stored = len(cand_ids)
    chosen: list[int] = []
    new_rows: list[dict[str, Any]] = []
    for i in range(len(values)):
        if cra.size:
            sep = angular_separation_deg(ra[i], dec[i], cra, cdec)
            best = int(np.argmin(sep))
            if sep[best] <= radius_deg:
                chosen.append(best)
                continue
        new_rows.append({"ra": float(ra[i]), "dec": float(dec[i]), "n_detections": 0,
                         "n_nights": 0, "first_mjd": exposure.mjd, "last_mjd": exposure.mjd,
                         "max_real_bogus": None, "is_fake": False})
        chosen.append(n_stored + len(new_rows) - 1)
        cra, cdec = np.append(cra, ra[i]), np.append(cdec, dec[i])
    slots = list(cand_ids) + _insert_rows(session, CandidateRow, new_rows)
    assigned = [int(slots[j]) for j in chosen]
    det_ids = _insert_rows(session, DetectionRow, [
        {"expnum": int(expnum), "ccdnum": int(ccdnum), "candidate_id": cid, **v}
        for v, cid in zip(values, assigned)])
    best_for_fake: dict[int, tuple[float, int]] = {}
    for v, did in zip(values, det_ids):
        fid = v["fake_id"]
        if fid is not None:
            prev = best_for_fake.get(fid)
            if prev is None or v["snr"] > prev[0]:
                best_for_fake[fid] = (v["snr"], did)
    recovered = [{"b_id": int(fid), "b_det": int(did)}
                 for fid, (_, did) in best_for_fake.items() if not fakes[fid]]
    if recovered:
        session.execute(_FAKE_RECOVERED, recovered)
    _refresh_candidates(session, assigned)
    return det_ids, assigned


def add_detections(db: Database, expnum: int, ccdnum: int,
                   rows: Sequence[NewDetection | Mapping[str, Any]], *,
                   match_radius_arcsec: float = DEFAULT_MATCH_RADIUS_ARCSEC) -> list[int]:
    """Store the detections of one search CCD and associate each with a candidate.

    Each detection joins the nearest candidate within ``match_radius_arcsec`` (candidates
    created earlier in the same call included), else a new candidate is created. The touched
    candidates' mean position, number of detections, number of distinct nights (``nite`` of
    the detections' exposures), first/last MJD, best real/bogus score and fake flag are then
    recomputed from their detections. A detection with a ``fake_id`` marks that fake as
    recovered (by the highest-S/N such detection, if it was not recovered before).

    The whole call is one transaction, serialised against other writers (SQLite write lock,
    PostgreSQL advisory lock), so concurrent processes never split one source into two
    candidates or lose rows.

    Parameters
    ----------
    db : Database
    expnum, ccdnum : int
        The search exposure (must be registered) and CCD.
    rows : sequence of NewDetection or mapping
        Mappings must use :class:`NewDetection` field names only.
    match_radius_arcsec : float
        Association radius (arcsec).

    Returns
    -------
    list of int
        Detection ids, in input order.

    Raises
    ------
    UnknownExposureError
        If ``expnum`` is not registered.
    ValueError
        For a non-finite position or flux, or a ``fake_id`` that is not a stored fake.
    """
    values = [_check_detection(_coerce(r, NewDetection)) for r in rows]
    if not values:
        return []
    radius = float(match_radius_arcsec) / 3600.0
    with db.write_session() as session:
        exposure = _require_exposures(session, [expnum])[int(expnum)]
        fake_ids = sorted({v["fake_id"] for v in values if v["fake_id"] is not None})
        fakes = {int(i): bool(rec) for i, rec in session.execute(
            select(FakeRow.id, FakeRow.recovered).where(FakeRow.id.in_(fake_ids)))
                 } if fake_ids else {}
        missing = [f for f in fake_ids if f not in fakes]
        if missing:
            raise ValueError(f"fake_id(s) {missing} are not stored fakes (record_fakes first)")
        ids, assigned = _associate(db, session, exposure, expnum, ccdnum, values, fakes,
                                   radius)
    log.debug("added %d detections of exposure %d CCD %d to %d candidates", len(ids), expnum,
              ccdnum, len(set(assigned)))
    return ids


# ----------------------------------------------------------------------------- one CCD at once
def _drop_ccd_results(session: Session, expnum: int, ccdnum: int) -> None:
    """Delete one search CCD's detections, fakes and template uses; refresh (or delete, when
    left without detections) the candidates those detections belonged to."""
    old = session.execute(select(DetectionRow.id, DetectionRow.candidate_id).where(
        DetectionRow.expnum == expnum, DetectionRow.ccdnum == ccdnum)).all()
    old_ids = [int(i) for i, _ in old]
    touched = sorted({int(c) for _, c in old})
    for start in range(0, len(old_ids), _CHUNK):
        part = old_ids[start:start + _CHUNK]
        session.execute(update(FakeRow).where(FakeRow.recovered_detection_id.in_(part))
                        .values(recovered=False, recovered_detection_id=None))
        session.execute(delete(DetectionRow).where(DetectionRow.id.in_(part)))
    session.execute(delete(FakeRow).where(FakeRow.expnum == expnum, FakeRow.ccdnum == ccdnum))
    session.execute(delete(TemplateUsedRow).where(TemplateUsedRow.search_expnum == expnum,
                                                  TemplateUsedRow.search_ccdnum == ccdnum))
    if not touched:
        return
    session.expire_all()
    _refresh_candidates(session, touched)
    for start in range(0, len(touched), _CHUNK):
        part = touched[start:start + _CHUNK]
        still = select(DetectionRow.candidate_id).where(DetectionRow.candidate_id.in_(part))
        session.execute(delete(CandidateRow).where(CandidateRow.id.in_(part),
                                                   CandidateRow.id.not_in(still)))


def replace_ccd_results(db: Database, expnum: int, ccdnum: int, *,
                        templates_used: Iterable[TemplateUse] = (),
                        fakes: Sequence[NewFake | Mapping[str, Any]] = (),
                        detections: Sequence[NewDetection | Mapping[str, Any]] = (),
                        match_radius_arcsec: float = DEFAULT_MATCH_RADIUS_ARCSEC,
                        zeropoint_version: tuple[int, int] | None = None
                        ) -> tuple[list[int], list[int]]:
    """Store everything the difference imaging of one search CCD found, replacing what an
    earlier run of the same CCD stored: idempotent.

    One write transaction, serialised against other writers (SQLite write lock, PostgreSQL
    advisory lock), deletes the CCD's detections, fakes and template uses (the candidates
    that lose all their detections with them; the others are recomputed), then stores the
    new ones as :func:`record_templates_used`, :func:`record_fakes` and
    :func:`add_detections` would. Running it again, or from two processes at once, leaves
    the same rows as running it once.

    Parameters
    ----------
    db : Database
    expnum, ccdnum : int
        The search exposure (must be registered) and CCD.
    templates_used : iterable of TemplateUse
        Must all have this ``search_expnum``/``search_ccdnum``.
    fakes : sequence of NewFake or mapping
        The fakes injected into the CCD.
    detections : sequence of NewDetection or mapping
        Here ``fake_id`` is the **index into ``fakes``** of the fake a detection recovers.
    match_radius_arcsec : float
        Candidate association radius (arcsec).
    zeropoint_version : (rnum, pnum), optional
        When the exposure calibration of this version has already recorded the CCD's
        zeropoint (``zeropoints``), the detections' magnitudes are put on it in the same
        transaction (:func:`recalibrate_detections`; their ``zp`` must be given): a CCD done
        again after its exposure's calibration keeps the calibrated magnitudes.

    Returns
    -------
    (list of int, list of int)
        The fake ids and the detection ids, in input order.

    Raises
    ------
    UnknownExposureError
        If an exposure is not registered.
    ValueError
        Bad values, a template use of another search CCD or a ``fake_id`` out of range.
    """
    expnum, ccdnum = int(expnum), int(ccdnum)
    uses = [_template_use_values(u) for u in templates_used]
    if any((u["search_expnum"], u["search_ccdnum"]) != (expnum, ccdnum) for u in uses):
        raise ValueError(f"a template use of another search CCD than {expnum}/{ccdnum}")
    new_fakes = [_coerce(r, NewFake) for r in fakes]
    values = [_check_detection(_coerce(r, NewDetection)) for r in detections]
    for v in values:
        if v["fake_id"] is not None and not 0 <= v["fake_id"] < len(new_fakes):
            raise ValueError(f"fake index {v['fake_id']} out of range (0..{len(new_fakes) - 1})")
    radius = float(match_radius_arcsec) / 3600.0
    with db.write_session() as session:
        exposure = _require_exposures(
            session, [expnum] + [u["template_expnum"] for u in uses])[expnum]
        db.lock_candidates(session)
        _drop_ccd_results(session, expnum, ccdnum)
        _upsert(session, TemplateUsedRow, uses, ["search_expnum", "search_ccdnum",
                                                 "template_expnum", "template_ccdnum"],
                ignore=True)
        fake_ids = _insert_rows(session, FakeRow,
                                [_fake_values(expnum, ccdnum, f) for f in new_fakes])
        for v in values:
            if v["fake_id"] is not None:
                v["fake_id"] = fake_ids[v["fake_id"]]
        det_ids: list[int] = []
        if values and zeropoint_version is not None:
            rnum, pnum = zeropoint_version
            zp = session.scalar(select(ZeropointRow.zp).where(
                ZeropointRow.expnum == expnum, ZeropointRow.ccdnum == ccdnum,
                ZeropointRow.rnum == int(rnum), ZeropointRow.pnum == int(pnum)))
            if zp is not None and math.isfinite(zp):
                _on_zeropoint(values, float(zp))
        if values:
            det_ids, _ = _associate(db, session, exposure, expnum, ccdnum, values,
                                    dict.fromkeys(fake_ids, False), radius)
    log.debug("exposure %d CCD %d: stored %d fakes and %d detections (replacing earlier ones)",
              expnum, ccdnum, len(fake_ids), len(det_ids))
    return fake_ids, det_ids


# ----------------------------------------------------------------------------- calibration
#: ``detections.zp_source`` of magnitudes put on the exposure calibration's zeropoints.
ZP_SOURCE_EXPCALIB = "expcalib"


def _on_zeropoint(values: list[dict[str, Any]], zp: float) -> None:
    """Detection values (of :func:`_check_detection`) with a ``zp`` put on ``zp`` in place."""
    for v in values:
        if v["zp"] is None:
            continue
        if v["mag"] is not None:
            v["mag"] += zp - v["zp"]
        v["zp"], v["zp_source"] = zp, ZP_SOURCE_EXPCALIB


def _recalibrate(session: Session, expnum: int, zeropoints: Mapping[int, float],
                 source: str) -> int:
    """:func:`recalibrate_detections` inside the caller's write session."""
    n = 0
    for ccd, zp in sorted(zeropoints.items()):
        z = _finite(zp, "zp")
        where = (DetectionRow.expnum == int(expnum), DetectionRow.ccdnum == int(ccd),
                 DetectionRow.zp.is_not(None))
        res = session.execute(update(DetectionRow).where(*where).values(
            mag=DetectionRow.mag + (z - DetectionRow.zp), zp=z, zp_source=source)
            .execution_options(synchronize_session=False))
        n += int(getattr(res, "rowcount", 0) or 0)
    return n


def recalibrate_detections(db: Database, expnum: int, zeropoints: Mapping[int, float], *,
                           source: str = ZP_SOURCE_EXPCALIB) -> int:
    """Put the magnitudes of an exposure's detections on new CCD zeropoints.

    The fused per-CCD task stores each detection's magnitude on the zeropoint it had then
    (its CCD's own SE calibration, or a relative/nominal one), with that zeropoint and its
    source (``detections.zp``, ``zp_source``); the exposure calibration measures better ones
    (:mod:`desgw.se.expcalib`: all CCDs of the exposure) afterwards. Each detection of a CCD in
    ``zeropoints`` gets ``mag += zp_new - zp``, ``zp = zp_new`` and ``zp_source = source``
    (``magerr`` and the flux are unchanged): idempotent, and right whichever ran first. Rows
    stored before schema 5 (``zp`` NULL) are left as they are.

    Parameters
    ----------
    db : Database
    expnum : int
        The search exposure.
    zeropoints : mapping of int to float
        CCDNUM -> final zeropoint (AB mag of 1 e- in the exposure, as ``detections.zp``).
    source : str
        What to record as ``zp_source`` (at most 32 characters).

    Returns
    -------
    int
        Detections updated.

    Raises
    ------
    ValueError
        A non-finite zeropoint.
    """
    zps = {int(c): _finite(z, "zp") for c, z in zeropoints.items()}
    if not zps:
        return 0
    with db.write_session() as session:
        n = _recalibrate(session, int(expnum), zps, str(source)[:32])
    log.debug("exposure %d: %d detections put on the %s zeropoints of %d CCDs", expnum, n,
              source, len(zps))
    return n
