"""Plain records exchanged with the database: frozen dataclasses, no SQLAlchemy objects.

Units: angles in degrees (ICRS), times as MJD (days), ``nite`` as the DES night ``YYYYMMDD``,
magnitudes AB, fluxes in the units of the measuring stage (difference-image counts),
FWHM and astrometric rms in arcseconds, sky brightness in mag/arcsec^2.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = [
    "CCD_STATUSES",
    "ExposureRecord",
    "CCDProduct",
    "Zeropoint",
    "TemplateUse",
    "NewDetection",
    "Detection",
    "Candidate",
    "NewFake",
    "Fake",
]

#: Allowed values of :attr:`CCDProduct.status`.
CCD_STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "skipped")


@dataclass(frozen=True)
class ExposureRecord:
    """One registered exposure (a row of ``exposures``).

    Attributes
    ----------
    expnum : int
        Exposure number.
    nite : int
        DES night ``YYYYMMDD``.
    mjd : float
        MJD of the shutter opening (days).
    band : str
        Filter band (g, r, i, z, Y, u, ...).
    exptime : float
        Exposure time (s).
    ra, dec : float
        Telescope pointing (deg).
    object, propid, obstype, program : str or None
        Header keywords OBJECT, PROPID, OBSTYPE and PROGRAM.
    airmass : float or None
        AIRMASS.
    raw_path : str or None
        Where the raw exposure (or, for ``kind="instcal"``, the CP InstCal image) was found.
    ingested_at : datetime or None
        When the exposure was first registered (UTC).
    t_eff : float or None
        Effective exposure time factor: the median over the exposure's CCD products with a
        known ``t_eff`` (None when no CCD has one yet). Filled by the queries.
    kind : str
        ``"raw"``: a raw DECam exposure (SE detrends it); ``"instcal"``: a NOIRLab Community
        Pipeline InstCal image (``*_ooi_*``, with its ``_ood_``/``_oow_``), already detrended
        (SE runs :func:`desgw.se.process_instcal.process_instcal_ccd`).
    """

    expnum: int
    nite: int
    mjd: float
    band: str
    exptime: float
    ra: float
    dec: float
    object: str | None = None
    propid: str | None = None
    obstype: str | None = "object"
    program: str | None = None
    airmass: float | None = None
    raw_path: str | None = None
    ingested_at: _dt.datetime | None = None
    t_eff: float | None = None
    kind: str = "raw"


@dataclass(frozen=True)
class CCDProduct:
    """The single-epoch products of one CCD and their quality (a row of ``ccd_products``).

    Attributes
    ----------
    expnum, ccdnum : int
        Exposure and CCD number.
    rnum, pnum : int
        Processing version (the ``r{R}p{P}`` of the product names).
    status : str
        One of :data:`CCD_STATUSES`.
    image_path, catalog_path : str or None
        The immask image and the object catalog.
    fwhm_arcsec : float or None
        PSF FWHM (arcsec).
    sky_brightness : float or None
        Sky brightness (mag/arcsec^2).
    zp : float or None
        Photometric zeropoint (AB mag for 1 e-/s).
    astrom_rms_arcsec : float or None
        Astrometric rms against the reference catalog (arcsec).
    n_stars : int or None
        Stars used for the calibration.
    t_eff : float or None
        Effective exposure time factor.
    qc_passed : bool or None
        Whether the CCD passed quality control (None: not judged).
    qc_reasons : tuple of str
        Why it failed (empty when it passed).
    """

    expnum: int
    ccdnum: int
    rnum: int
    pnum: int
    status: str
    image_path: str | None = None
    catalog_path: str | None = None
    fwhm_arcsec: float | None = None
    sky_brightness: float | None = None
    zp: float | None = None
    astrom_rms_arcsec: float | None = None
    n_stars: int | None = None
    t_eff: float | None = None
    qc_passed: bool | None = None
    qc_reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in CCD_STATUSES:
            raise ValueError(f"CCD product status {self.status!r} is not one of {CCD_STATUSES}")
        object.__setattr__(self, "qc_reasons", tuple(str(r) for r in self.qc_reasons))


@dataclass(frozen=True)
class Zeropoint:
    """A photometric zeropoint (a row of ``zeropoints``).

    Attributes
    ----------
    expnum : int
        Exposure number.
    ccdnum : int
        CCD number; 0 for the zeropoint of the whole exposure (all CCDs together).
    rnum, pnum : int
        Processing version.
    zp, zp_err : float
        Zeropoint and its error (mag).
    n_stars : int
        Stars used.
    flag : int
        0 for a good zeropoint; non-zero values are set by the photometric calibration
        (the original used 1 for a CCD that took the exposure zeropoint).
    """

    expnum: int
    ccdnum: int
    rnum: int
    pnum: int
    zp: float
    zp_err: float
    n_stars: int
    flag: int = 0


@dataclass(frozen=True)
class TemplateUse:
    """A template CCD used for a search CCD (a row of ``templates_used``).

    The ``reg_*`` fields record the registration refinement of the template's WCS mapping
    (:class:`desgw.diff.register.Registration`); None when not recorded.

    Attributes
    ----------
    reg_method : {"affine", "shift", "wcs"} or None
        What was fitted and applied; ``"wcs"``: the WCS mapping was kept.
    reg_nstars : int or None
        Matched stars in the fit.
    reg_dx, reg_dy : float or None
        Correction added to WCS-predicted template positions at the stars' mean position
        (template pixels).
    reg_rms_before, reg_rms_after : float or None
        RMS 2-D residual of the matched stars before and after the correction (pixels).
    """

    search_expnum: int
    search_ccdnum: int
    template_expnum: int
    template_ccdnum: int
    reg_method: str | None = None
    reg_nstars: int | None = None
    reg_dx: float | None = None
    reg_dy: float | None = None
    reg_rms_before: float | None = None
    reg_rms_after: float | None = None


@dataclass(frozen=True)
class NewDetection:
    """A difference-image detection to add (SNOBS-like); see :func:`desgw.db.add_detections`.

    Attributes
    ----------
    ra, dec : float
        Position (deg).
    flux, fluxerr : float
        PSF flux and its error (difference-image counts).
    snr : float
        Signal to noise ratio.
    mag, magerr : float or None
        AB magnitude and error (None for non-positive flux).
    real_bogus : float or None
        Machine-learning score in [0, 1] (1 = real).
    flags : int
        Detection flags (bits of the measuring stage).
    is_fake : bool
        True when the detection matches an injected fake.
    fake_id : int or None
        The matched fake's id (from :func:`desgw.db.record_fakes`).
    zp : float or None
        The search CCD's zeropoint ``mag`` is on (AB mag of 1 e- in the exposure; ``mag`` =
        ``-2.5 log10(flux) + zp`` less the PSF stamp's aperture correction).
    zp_source : str or None
        Where ``zp`` came from: ``"se"`` (the CCD's own SE calibration), ``"template E/C"``,
        ``"nominal"``, ``"instrumental"`` (:mod:`desgw.workflow.diff_relzp`) or
        ``"expcalib"`` (the exposure calibration, :func:`desgw.db.recalibrate_detections`).
    """

    ra: float
    dec: float
    flux: float
    fluxerr: float
    snr: float
    mag: float | None = None
    magerr: float | None = None
    real_bogus: float | None = None
    flags: int = 0
    is_fake: bool = False
    fake_id: int | None = None
    zp: float | None = None
    zp_source: str | None = None


@dataclass(frozen=True)
class Detection:
    """A stored detection: :class:`NewDetection` fields plus ids and its exposure's time."""

    id: int
    expnum: int
    ccdnum: int
    candidate_id: int
    ra: float
    dec: float
    flux: float
    fluxerr: float
    snr: float
    mag: float | None
    magerr: float | None
    real_bogus: float | None
    flags: int
    is_fake: bool
    fake_id: int | None
    zp: float | None = None
    zp_source: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A candidate (SNCAND-like): detections within the association radius of each other.

    Attributes
    ----------
    id : int
        Candidate id.
    ra, dec : float
        Mean position of its detections (deg).
    n_detections : int
        Number of detections.
    n_nights : int
        Number of distinct nights with a detection.
    first_mjd, last_mjd : float
        MJD of the first and last detection's exposure.
    max_real_bogus : float or None
        Highest real/bogus score of its detections.
    is_fake : bool
        True when every detection of the candidate is of an injected fake.
    """

    id: int
    ra: float
    dec: float
    n_detections: int
    n_nights: int
    first_mjd: float
    last_mjd: float
    max_real_bogus: float | None
    is_fake: bool


@dataclass(frozen=True)
class NewFake:
    """An injected fake point source (SNFAKE-like); see :func:`desgw.db.record_fakes`.

    Attributes
    ----------
    ra, dec : float
        Position (deg).
    mag : float
        Injected AB magnitude.
    host : bool
        True when placed on a host galaxy.
    """

    ra: float
    dec: float
    mag: float
    host: bool = False


@dataclass(frozen=True)
class Fake:
    """A stored fake with its recovery status."""

    id: int
    expnum: int
    ccdnum: int
    ra: float
    dec: float
    mag: float
    host: bool
    recovered: bool
    recovered_detection_id: int | None
