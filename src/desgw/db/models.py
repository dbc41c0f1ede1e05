"""SQLAlchemy 2 ORM tables of the desgw database (schema version :data:`SCHEMA_VERSION`).

Tables: ``schema_version``, ``exposures``, ``ccd_products``, ``zeropoints``,
``templates_used``, ``detections`` (SNOBS-like), ``candidates`` (SNCAND-like) and ``fakes``
(SNFAKE-like). Units as in :mod:`desgw.db.records`. Any change to these tables must raise
:data:`SCHEMA_VERSION` (and add a migration in :mod:`desgw.db.database`).
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA_VERSION",
    "EXPOSURE_KINDS",
    "Base",
    "SchemaVersionRow",
    "ExposureRow",
    "CCDProductRow",
    "ZeropointRow",
    "TemplateUsedRow",
    "DetectionRow",
    "CandidateRow",
    "FakeRow",
]

#: Version of the table layout written by this desgw. History: 1 the first layout; 2 adds
#: ``exposures.kind`` (``"raw"`` or ``"instcal"``: a raw DECam exposure or a Community Pipeline
#: InstCal image), migrated by :func:`desgw.db.database.migrate_schema`; 3 adds the
#: registration of each template use (``templates_used.reg_*``); 4 indexes the two foreign keys
#: that point at fakes and detections (``detections.fake_id``,
#: ``fakes.recovered_detection_id``): without them every deleted fake or detection (a CCD's
#: results replaced) made the database scan the whole other table for the foreign-key check.
#: 5 adds the zeropoint each detection's magnitude is on and where it came from
#: (``detections.zp``, ``detections.zp_source``: the exposure calibration puts the
#: magnitudes on its final zeropoints, :func:`desgw.db.recalibrate_detections`).
SCHEMA_VERSION = 5

#: Values of :attr:`ExposureRow.kind`.
EXPOSURE_KINDS: tuple[str, ...] = ("raw", "instcal")

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the desgw tables."""


class SchemaVersionRow(Base):
    """The schema version(s) applied to this database."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class ExposureRow(Base):
    """An exposure, from the primary header of its raw file or CP InstCal image (``kind``)."""

    __tablename__ = "exposures"
    expnum: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    nite: Mapped[int] = mapped_column(Integer, index=True)
    mjd: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16), index=True)
    exptime: Mapped[float] = mapped_column(Float)
    ra: Mapped[float] = mapped_column(Float)
    dec: Mapped[float] = mapped_column(Float, index=True)
    object: Mapped[str | None] = mapped_column(String(200))
    propid: Mapped[str | None] = mapped_column(String(64))
    obstype: Mapped[str | None] = mapped_column(String(64))
    program: Mapped[str | None] = mapped_column(String(200))
    airmass: Mapped[float | None] = mapped_column(Float)
    raw_path: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="raw", server_default="raw")
    ingested_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class CCDProductRow(Base):
    """Single-epoch products of one CCD and their quality."""

    __tablename__ = "ccd_products"
    __table_args__ = (UniqueConstraint("expnum", "ccdnum", "rnum", "pnum",
                                       name="uq_ccd_products_version"),)
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"), index=True)
    ccdnum: Mapped[int] = mapped_column(Integer)
    rnum: Mapped[int] = mapped_column(Integer)
    pnum: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    image_path: Mapped[str | None] = mapped_column(Text)
    catalog_path: Mapped[str | None] = mapped_column(Text)
    fwhm_arcsec: Mapped[float | None] = mapped_column(Float)
    sky_brightness: Mapped[float | None] = mapped_column(Float)
    zp: Mapped[float | None] = mapped_column(Float)
    astrom_rms_arcsec: Mapped[float | None] = mapped_column(Float)
    n_stars: Mapped[int | None] = mapped_column(Integer)
    t_eff: Mapped[float | None] = mapped_column(Float)
    qc_passed: Mapped[bool | None] = mapped_column(Boolean)
    qc_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class ZeropointRow(Base):
    """Photometric zeropoint of a CCD (ccdnum 0: the whole exposure)."""

    __tablename__ = "zeropoints"
    __table_args__ = (UniqueConstraint("expnum", "ccdnum", "rnum", "pnum",
                                       name="uq_zeropoints_version"),)
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"), index=True)
    ccdnum: Mapped[int] = mapped_column(Integer)
    rnum: Mapped[int] = mapped_column(Integer)
    pnum: Mapped[int] = mapped_column(Integer)
    zp: Mapped[float] = mapped_column(Float)
    zp_err: Mapped[float] = mapped_column(Float)
    n_stars: Mapped[int] = mapped_column(Integer)
    flag: Mapped[int] = mapped_column(Integer, default=0)


class TemplateUsedRow(Base):
    """A template CCD used in the difference imaging of a search CCD, with the registration
    refinement applied to its WCS mapping (``reg_*``, template pixels; NULL when not recorded:
    rows from before schema 3, or uses recorded without one)."""

    __tablename__ = "templates_used"
    __table_args__ = (UniqueConstraint("search_expnum", "search_ccdnum", "template_expnum",
                                       "template_ccdnum", name="uq_templates_used"),)
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    search_expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"), index=True)
    search_ccdnum: Mapped[int] = mapped_column(Integer)
    template_expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"))
    template_ccdnum: Mapped[int] = mapped_column(Integer)
    reg_method: Mapped[str | None] = mapped_column(String(16))
    reg_nstars: Mapped[int | None] = mapped_column(Integer)
    reg_dx: Mapped[float | None] = mapped_column(Float)
    reg_dy: Mapped[float | None] = mapped_column(Float)
    reg_rms_before: Mapped[float | None] = mapped_column(Float)
    reg_rms_after: Mapped[float | None] = mapped_column(Float)


class CandidateRow(Base):
    """A candidate: detections associated by position (SNCAND-like)."""

    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    ra: Mapped[float] = mapped_column(Float)
    dec: Mapped[float] = mapped_column(Float, index=True)
    n_detections: Mapped[int] = mapped_column(Integer, default=0)
    n_nights: Mapped[int] = mapped_column(Integer, default=0)
    first_mjd: Mapped[float] = mapped_column(Float)
    last_mjd: Mapped[float] = mapped_column(Float)
    max_real_bogus: Mapped[float | None] = mapped_column(Float)
    is_fake: Mapped[bool] = mapped_column(Boolean, default=False)


class FakeRow(Base):
    """An injected fake point source (SNFAKE-like)."""

    __tablename__ = "fakes"
    __table_args__ = (Index("ix_fakes_expnum_ccdnum", "expnum", "ccdnum"),
                      Index("ix_fakes_recovered_detection_id", "recovered_detection_id"))
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"))
    ccdnum: Mapped[int] = mapped_column(Integer)
    ra: Mapped[float] = mapped_column(Float)
    dec: Mapped[float] = mapped_column(Float)
    mag: Mapped[float] = mapped_column(Float)
    host: Mapped[bool] = mapped_column(Boolean, default=False)
    recovered: Mapped[bool] = mapped_column(Boolean, default=False)
    recovered_detection_id: Mapped[int | None] = mapped_column(
        ForeignKey("detections.id", use_alter=True, name="fk_fakes_recovered_detection"))


class DetectionRow(Base):
    """A difference-image detection (SNOBS-like)."""

    __tablename__ = "detections"
    __table_args__ = (Index("ix_detections_expnum_ccdnum", "expnum", "ccdnum"),
                      Index("ix_detections_fake_id", "fake_id"))
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    expnum: Mapped[int] = mapped_column(ForeignKey("exposures.expnum"))
    ccdnum: Mapped[int] = mapped_column(Integer)
    ra: Mapped[float] = mapped_column(Float)
    dec: Mapped[float] = mapped_column(Float)
    mag: Mapped[float | None] = mapped_column(Float)
    magerr: Mapped[float | None] = mapped_column(Float)
    flux: Mapped[float] = mapped_column(Float)
    fluxerr: Mapped[float] = mapped_column(Float)
    snr: Mapped[float] = mapped_column(Float)
    real_bogus: Mapped[float | None] = mapped_column(Float)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    is_fake: Mapped[bool] = mapped_column(Boolean, default=False)
    fake_id: Mapped[int | None] = mapped_column(ForeignKey("fakes.id"))
    zp: Mapped[float | None] = mapped_column(Float)
    zp_source: Mapped[str | None] = mapped_column(String(32))
