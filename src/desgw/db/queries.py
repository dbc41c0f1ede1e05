"""Reading the desgw database: the queries the workflow and the users need."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import and_, func, or_, select

from ._sky import angular_separation_deg, radec_box
from .database import Database
from .models import (CandidateRow, CCDProductRow, DetectionRow, ExposureRow, FakeRow,
                     TemplateUsedRow, ZeropointRow)
from .records import (Candidate, CCDProduct, Detection, ExposureRecord, Fake, TemplateUse,
                      Zeropoint)
from .writes import _to_exposure_record

__all__ = [
    "get_exposure",
    "exposures_near",
    "get_ccd_products",
    "processed_ccds",
    "get_zeropoints",
    "get_templates_used",
    "get_detections",
    "get_candidates",
    "get_fakes",
    "has_calibration_records",
    "has_diff_records",
]

_CHUNK = 500


def _t_eff_by_exposure(session, expnums: Sequence[int]) -> dict[int, float]:
    """Median t_eff over the exposure's finished CCD products that have one."""
    values: dict[int, list[float]] = {}
    wanted = sorted(set(expnums))
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start:start + _CHUNK]
        for expnum, t_eff in session.execute(
                select(CCDProductRow.expnum, CCDProductRow.t_eff)
                .where(CCDProductRow.expnum.in_(part), CCDProductRow.t_eff.is_not(None),
                       CCDProductRow.status == "done")):
            values.setdefault(int(expnum), []).append(float(t_eff))
    return {e: float(statistics.median(v)) for e, v in values.items()}


def get_exposure(db: Database, expnum: int) -> ExposureRecord | None:
    """The registered exposure ``expnum`` (with its median CCD ``t_eff``), or None."""
    with db.read_session() as session:
        row = session.get(ExposureRow, int(expnum))
        if row is None:
            return None
        return _to_exposure_record(row, _t_eff_by_exposure(session, [row.expnum]).get(row.expnum))


def exposures_near(db: Database, ra: float, dec: float, radius_deg: float,
                   band: str | None = None, *, exclude: Iterable[int] = ()
                   ) -> list[ExposureRecord]:
    """Registered exposures whose pointing lies within ``radius_deg`` of (ra, dec).

    Parameters
    ----------
    db : Database
    ra, dec : float
        Position (deg).
    radius_deg : float
        Search radius (deg) on the sky (great-circle distance, handles RA = 0/360 and poles).
    band : str or None
        Only this band (None: any band).
    exclude : iterable of int
        Exposure numbers to leave out (e.g. the search exposure).

    Returns
    -------
    list of ExposureRecord
        Sorted by distance, nearest first; ``t_eff`` is the median over the exposure's
        finished CCD products (None when unknown).
    """
    dec_lo, dec_hi, windows = radec_box([ra], [dec], float(radius_deg))
    cond = [ExposureRow.dec >= dec_lo, ExposureRow.dec <= dec_hi]
    if windows is not None:
        cond.append(or_(*[and_(ExposureRow.ra >= lo, ExposureRow.ra <= hi) for lo, hi in windows]))
    if band is not None:
        cond.append(ExposureRow.band == band)
    skip = {int(e) for e in exclude}
    with db.read_session() as session:
        rows = [r for r in session.scalars(select(ExposureRow).where(*cond))
                if r.expnum not in skip]
        if not rows:
            return []
        sep = angular_separation_deg(ra, dec, np.array([r.ra for r in rows]),
                                     np.array([r.dec for r in rows]))
        keep = [(float(s), r) for s, r in zip(sep, rows) if s <= radius_deg]
        keep.sort(key=lambda item: (item[0], item[1].expnum))
        teff = _t_eff_by_exposure(session, [r.expnum for _, r in keep])
        return [_to_exposure_record(r, teff.get(r.expnum)) for _, r in keep]


def get_ccd_products(db: Database, expnum: int, *, rnum: int | None = None,
                     pnum: int | None = None) -> list[CCDProduct]:
    """The CCD products of an exposure (optionally of one processing version), by CCD."""
    cond = [CCDProductRow.expnum == int(expnum)]
    if rnum is not None:
        cond.append(CCDProductRow.rnum == int(rnum))
    if pnum is not None:
        cond.append(CCDProductRow.pnum == int(pnum))
    with db.read_session() as session:
        rows = session.scalars(select(CCDProductRow).where(*cond)
                               .order_by(CCDProductRow.ccdnum, CCDProductRow.rnum,
                                         CCDProductRow.pnum)).all()
        return [CCDProduct(expnum=r.expnum, ccdnum=r.ccdnum, rnum=r.rnum, pnum=r.pnum,
                           status=r.status, image_path=r.image_path,
                           catalog_path=r.catalog_path, fwhm_arcsec=r.fwhm_arcsec,
                           sky_brightness=r.sky_brightness, zp=r.zp,
                           astrom_rms_arcsec=r.astrom_rms_arcsec, n_stars=r.n_stars,
                           t_eff=r.t_eff, qc_passed=r.qc_passed,
                           qc_reasons=tuple(r.qc_reasons or ())) for r in rows]


def processed_ccds(db: Database, expnum: int, rnum: int, pnum: int) -> frozenset[int]:
    """CCDs of ``expnum`` whose single-epoch products of version r{rnum}p{pnum} are done."""
    with db.read_session() as session:
        return frozenset(int(c) for c in session.scalars(
            select(CCDProductRow.ccdnum).where(
                CCDProductRow.expnum == int(expnum), CCDProductRow.rnum == int(rnum),
                CCDProductRow.pnum == int(pnum), CCDProductRow.status == "done")))


def get_zeropoints(db: Database, expnum: int, *, rnum: int | None = None,
                   pnum: int | None = None) -> list[Zeropoint]:
    """Zeropoints of an exposure, by CCD (ccdnum 0: the whole exposure)."""
    cond = [ZeropointRow.expnum == int(expnum)]
    if rnum is not None:
        cond.append(ZeropointRow.rnum == int(rnum))
    if pnum is not None:
        cond.append(ZeropointRow.pnum == int(pnum))
    with db.read_session() as session:
        rows = session.scalars(select(ZeropointRow).where(*cond)
                               .order_by(ZeropointRow.ccdnum)).all()
        return [Zeropoint(expnum=r.expnum, ccdnum=r.ccdnum, rnum=r.rnum, pnum=r.pnum, zp=r.zp,
                          zp_err=r.zp_err, n_stars=r.n_stars, flag=r.flag) for r in rows]


def get_templates_used(db: Database, search_expnum: int) -> list[TemplateUse]:
    """Template CCDs used for the CCDs of a search exposure."""
    with db.read_session() as session:
        rows = session.scalars(select(TemplateUsedRow)
                               .where(TemplateUsedRow.search_expnum == int(search_expnum))
                               .order_by(TemplateUsedRow.search_ccdnum,
                                         TemplateUsedRow.template_expnum,
                                         TemplateUsedRow.template_ccdnum)).all()
        return [TemplateUse(r.search_expnum, r.search_ccdnum, r.template_expnum,
                            r.template_ccdnum, reg_method=r.reg_method, reg_nstars=r.reg_nstars,
                            reg_dx=r.reg_dx, reg_dy=r.reg_dy, reg_rms_before=r.reg_rms_before,
                            reg_rms_after=r.reg_rms_after) for r in rows]


def _to_detection(r: DetectionRow) -> Detection:
    return Detection(id=r.id, expnum=r.expnum, ccdnum=r.ccdnum, candidate_id=r.candidate_id,
                     ra=r.ra, dec=r.dec, flux=r.flux, fluxerr=r.fluxerr, snr=r.snr, mag=r.mag,
                     magerr=r.magerr, real_bogus=r.real_bogus, flags=r.flags,
                     is_fake=bool(r.is_fake), fake_id=r.fake_id, zp=r.zp,
                     zp_source=r.zp_source)


def get_detections(db: Database, *, expnum: int | None = None, ccdnum: int | None = None,
                   candidate_id: int | None = None) -> list[Detection]:
    """Detections, optionally of one exposure, CCD and/or candidate, by id."""
    cond = []
    if expnum is not None:
        cond.append(DetectionRow.expnum == int(expnum))
    if ccdnum is not None:
        cond.append(DetectionRow.ccdnum == int(ccdnum))
    if candidate_id is not None:
        cond.append(DetectionRow.candidate_id == int(candidate_id))
    with db.read_session() as session:
        rows = session.scalars(select(DetectionRow).where(*cond).order_by(DetectionRow.id)).all()
        return [_to_detection(r) for r in rows]


def get_candidates(db: Database, *, min_nights: int = 1, min_detections: int = 1,
                   include_fakes: bool = True) -> list[Candidate]:
    """Candidates with at least ``min_nights`` nights and ``min_detections`` detections, by id."""
    cond = [CandidateRow.n_nights >= int(min_nights),
            CandidateRow.n_detections >= int(min_detections)]
    if not include_fakes:
        cond.append(CandidateRow.is_fake.is_(False))
    with db.read_session() as session:
        rows = session.scalars(select(CandidateRow).where(*cond).order_by(CandidateRow.id)).all()
        return [Candidate(id=r.id, ra=r.ra, dec=r.dec, n_detections=r.n_detections,
                          n_nights=r.n_nights, first_mjd=r.first_mjd, last_mjd=r.last_mjd,
                          max_real_bogus=r.max_real_bogus, is_fake=bool(r.is_fake))
                for r in rows]


def get_fakes(db: Database, expnum: int, ccdnum: int | None = None) -> list[Fake]:
    """Fakes injected into an exposure (optionally one CCD), by id."""
    cond = [FakeRow.expnum == int(expnum)]
    if ccdnum is not None:
        cond.append(FakeRow.ccdnum == int(ccdnum))
    with db.read_session() as session:
        rows = session.scalars(select(FakeRow).where(*cond).order_by(FakeRow.id)).all()
        return [Fake(id=r.id, expnum=r.expnum, ccdnum=r.ccdnum, ra=r.ra, dec=r.dec, mag=r.mag,
                     host=bool(r.host), recovered=bool(r.recovered),
                     recovered_detection_id=r.recovered_detection_id) for r in rows]


def has_calibration_records(db: Database, expnum: int, rnum: int, pnum: int,
                            ccds: Iterable[int]) -> bool:
    """True when the database holds what a calibration of ``expnum`` (version r{R}p{P}) writes:
    the exposure zeropoint (``ccdnum`` 0) and a CCD-product row of each of ``ccds``."""
    wanted = {int(c) for c in ccds}
    with db.read_session() as session:
        zp = session.scalar(select(func.count()).select_from(ZeropointRow).where(
            ZeropointRow.expnum == int(expnum), ZeropointRow.ccdnum == 0,
            ZeropointRow.rnum == int(rnum), ZeropointRow.pnum == int(pnum)))
        if not zp:
            return False
        found = {int(c) for c in session.scalars(select(CCDProductRow.ccdnum).where(
            CCDProductRow.expnum == int(expnum), CCDProductRow.rnum == int(rnum),
            CCDProductRow.pnum == int(pnum)))}
    return wanted <= found


def has_diff_records(db: Database, expnum: int, ccdnum: int) -> bool:
    """True when the database holds the difference imaging of search CCD ``expnum``/``ccdnum``
    (its template uses, written in the same transaction as its detections and fakes)."""
    with db.read_session() as session:
        return bool(session.scalar(select(func.count()).select_from(TemplateUsedRow).where(
            TemplateUsedRow.search_expnum == int(expnum),
            TemplateUsedRow.search_ccdnum == int(ccdnum))))
