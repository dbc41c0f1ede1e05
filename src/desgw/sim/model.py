"""The simulator's data model: what an exposure is, what the sky holds, which effects are on.

These small dataclasses are the contract between the sky/survey side of the simulator
(`desgw.sim.scene`, `desgw.sim.survey`) and the rendering side (`desgw.sim.render`,
`desgw.sim.detector`). Units are in every field's description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..instrument import DECAM_DISTORTION, Distortion, Pointing

__all__ = ["PSF_PROFILES", "SimSwitches", "PSFField", "ExposureSpec", "ObjectTable", "OBJECT_KINDS"]

#: Radial profiles of `PSFField`.
PSF_PROFILES: tuple[str, ...] = ("moffat", "kolmogorov")

#: Codes of ``ObjectTable.kind``.
OBJECT_KINDS: dict[str, int] = {"star": 0, "galaxy": 1, "transient": 2, "variable": 3, "moving": 4}


@dataclass(frozen=True)
class SimSwitches:
    """Which of the effects that make real DECam data hard are simulated (all on by default)."""

    noise: bool = True  #: Poisson noise on all signal, read noise
    bias_overscan: bool = True  #: per-amp bias level, overscan columns with row-wise drift
    flat: bool = True  #: pixel-scale and large-scale QE structure (divided out by the dome flat)
    bad_pixels: bool = True  #: bad columns and hot pixels (real DES BPM boxes + hot pixels)
    crosstalk: bool = True  #: amplifier crosstalk with the real coefficients
    saturation: bool = True  #: full-well saturation and bleed trails of bright stars
    cosmic_rays: bool = True  #: cosmic-ray hits (rate per cm^2 per s)
    satellite: bool = True  #: one satellite trail per exposure crossing some CCDs
    sky_gradient: bool = True  #: sky level gradient across the focal plane
    psf_variation: bool = True  #: PSF FWHM and ellipticity vary over the focal plane
    galaxies: bool = True
    transients: bool = True  #: new sources in search epochs (hostless and on galaxies)
    variables: bool = True  #: variable stars
    moving: bool = True  #: one moving object (asteroid)
    proper_motion: bool = True
    wcs_error: bool = True  #: raw header WCS off by up to ~10 arcsec and ~0.05 deg
    dither: bool = True  #: pointings dithered between exposures
    nonlinearity: bool = True  #: per-amp non-linear response (0.5-1.5 % loss at SATURATA)


@dataclass(frozen=True)
class PSFField:
    """A PSF whose FWHM and ellipticity vary smoothly over the focal plane.

    The profile is a Moffat (``profile="moffat"``) or a Kolmogorov turbulence profile
    (``"kolmogorov"``, galsim, wing ``r**(-11/3)``); both have the FWHM and ellipticity below
    (``beta`` still sets how the Kolmogorov's FWHM maps to the Moffat quadratic form used for
    the geometry, see `desgw.sim.psf.pixel_profile`).

    Attributes
    ----------
    fwhm_arcsec : float
        FWHM at the field centre (arcsec).
    beta : float
        Moffat index.
    fwhm_r2 : float
        Fractional FWHM change per deg**2 of field radius squared (r in degrees).
    fwhm_tilt : tuple[float, float]
        Fractional FWHM change per degree along xi and eta (focus tilt).
    e1, e2 : float
        Ellipticity components (e = (1-q^2)/(1+q^2) convention, galsim "e") at the centre.
    e_astig : float
        Amplitude of the astigmatism-like pattern: e1 += e_astig*(xi^2-eta^2)/R^2,
        e2 += e_astig*2*xi*eta/R^2 with R = 1 deg.
    profile : {"moffat", "kolmogorov"}
        Radial profile.
    """

    fwhm_arcsec: float
    beta: float = 3.0
    fwhm_r2: float = 0.0
    fwhm_tilt: tuple[float, float] = (0.0, 0.0)
    e1: float = 0.0
    e2: float = 0.0
    e_astig: float = 0.0
    profile: str = "moffat"

    def __post_init__(self) -> None:
        if self.profile not in PSF_PROFILES:
            raise ValueError(f"PSFField.profile must be one of {PSF_PROFILES}, got {self.profile!r}")

    def at(self, xi: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FWHM (arcsec), e1, e2 at tangent-plane offsets ``xi, eta`` (deg) from the boresight."""
        xi = np.asarray(xi, dtype=np.float64)
        eta = np.asarray(eta, dtype=np.float64)
        fwhm = self.fwhm_arcsec * (1.0 + self.fwhm_r2 * (xi**2 + eta**2)
                                   + self.fwhm_tilt[0] * xi + self.fwhm_tilt[1] * eta)
        e1 = self.e1 + self.e_astig * (xi**2 - eta**2)
        e2 = self.e2 + self.e_astig * 2.0 * xi * eta
        return fwhm, e1, e2


@dataclass(frozen=True)
class ExposureSpec:
    """Everything the renderer needs to know about one exposure, truth included.

    Attributes
    ----------
    expnum : int
        Exposure number (EXPNUM).
    band : str
        One of g, r, i, z, Y.
    mjd : float
        MJD at the start of the exposure (MJD-OBS).
    exptime : float
        Exposure time (s).
    airmass : float
    pointing : Pointing
        True boresight (deg) and sky rotation (deg).
    header_pointing : Pointing
        The boresight and rotation written into the raw header WCS (wrong by up to ~10 arcsec
        and ~0.05 deg, as real raw headers are).
    psf : PSFField
    sky_mag_arcsec2 : float
        Sky surface brightness at the field centre (mag/arcsec^2, AB, in ``band``).
    sky_gradient : tuple[float, float]
        Fractional change of the sky level per degree along xi and eta.
    zeropoint : float
        AB magnitude of a source giving 1 electron/s in total at the detector for a CCD of mean
        quantum efficiency (includes transparency and airmass extinction).
    distortion : Distortion
        The optical distortion of this exposure (the instrument model, slightly perturbed).
    is_template : bool
        True for the earlier (template) epochs.
    obstype, propid, object_name : str
        Header values.
    """

    expnum: int
    band: str
    mjd: float
    exptime: float
    airmass: float
    pointing: Pointing
    header_pointing: Pointing
    psf: PSFField
    sky_mag_arcsec2: float
    sky_gradient: tuple[float, float]
    zeropoint: float
    distortion: Distortion = DECAM_DISTORTION
    is_template: bool = False
    obstype: str = "object"
    propid: str = "2019B-SIM"
    object_name: str = "DESGW sim field"


@dataclass(frozen=True)
class ObjectTable:
    """Objects as seen in one exposure (positions at its epoch, magnitudes in its band at its MJD).

    All arrays have one entry per object.

    Attributes
    ----------
    id : ndarray of int64
        Unique object id (same object, same id in every exposure).
    kind : ndarray of int8
        `OBJECT_KINDS` code.
    ra, dec : ndarray of float64
        Position at the exposure epoch (deg), proper motion and orbital motion applied.
    mag : ndarray of float64
        AB magnitude in the exposure's band at its MJD; NaN when the object is not there
        (a transient before explosion).
    hlr_arcsec : ndarray of float64
        Half-light radius of the intrinsic profile (arcsec); 0 for point sources.
    sersic_n, q, pa_deg : ndarray of float64
        Sersic index, axis ratio b/a and position angle (deg, East of North) of galaxies.
    """

    id: np.ndarray
    kind: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray
    hlr_arcsec: np.ndarray
    sersic_n: np.ndarray
    q: np.ndarray
    pa_deg: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.id)

    def select(self, keep: np.ndarray) -> ObjectTable:
        """A new table with the rows where ``keep`` (bool or index array) selects."""
        return ObjectTable(
            id=self.id[keep], kind=self.kind[keep], ra=self.ra[keep], dec=self.dec[keep],
            mag=self.mag[keep], hlr_arcsec=self.hlr_arcsec[keep], sersic_n=self.sersic_n[keep],
            q=self.q[keep], pa_deg=self.pa_deg[keep], meta=dict(self.meta),
        )
