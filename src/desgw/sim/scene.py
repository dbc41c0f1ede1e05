"""The static simulated sky with its truth, and what it looks like at a given exposure.

`make_scene` fills a circular field with

* stars (`scene_stars`): Besancon-like counts for the field's Galactic latitude, G = 12-24, a
  main-sequence + giant + M-dwarf colour locus, true Gaia G/BP/RP, DES grizY from the SAME
  Gaia -> DES transformation the photometric calibration uses (`refcat.transforms`) plus a small
  intrinsic scatter (`SceneConfig.intrinsic_scatter_mag`, 0.01 mag by default, 0 turns it off),
  distances, parallaxes and proper motions at the Gaia DR3 reference epoch J2016.0;
* galaxies (`scene_galaxies`): r = 16-24 counts, Sersic profiles, sizes, colours;
* periodic variable stars (a few per cent of the stars, 0.1-1 mag, `lightcurves`);
* transients (`lightcurves`): kilonova-like and SN-like, hostless or offset inside a host
  galaxy, exploding between the last template and the first search exposure;
* one main-belt asteroid moving on a great circle at 0.4-0.8 arcsec/min.

`Scene.objects_at` gives an exposure's view (positions at the exposure's mid-time, proper
motion and orbit applied; magnitudes in its band at that time). The asteroid is a point at its
mid-exposure position (no trail: at these rates it moves ~1" in 90 s, below the seeing).
`Scene.gaia_catalog` gives a Gaia-archive-format catalogue of the stars Gaia would detect, with
positions, proper motions and magnitudes perturbed by Gaia DR3-like errors (the truth keeps the
true values).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from numpy.typing import NDArray

from ..instrument import Pointing
from ..instrument.bands import validate_band
from ..instrument.optics import tangent_to_sky
from ..refcat.geometry import mjd_to_jyear, propagate_proper_motion
from ..util.sphere import angular_separation_deg, unit_to_radec
from . import lightcurves as lc
from .model import OBJECT_KINDS, ExposureSpec, ObjectTable, SimSwitches
from .scene_galaxies import draw_galaxies, galaxy_counts
from .scene_stars import (
    GAIA_G_LIMIT,
    GAIA_REF_EPOCH,
    STAR_POPULATIONS,
    des_from_gaia,
    draw_stars,
    gaia_errors,
    sample_magnitudes,
    star_counts,
)

__all__ = ["SceneConfig", "Scene", "make_scene", "random_in_cap", "cap_area_deg2",
           "DEFAULT_SEARCH_MJD", "BANDS", "GAIA_COLUMNS"]

log = logging.getLogger(__name__)

#: Bands with magnitude columns ``mag_<band>`` in `Scene.objects`.
BANDS: tuple[str, ...] = lc.BANDS
#: Default start of the first search exposure (MJD 58710.1, the night after 2019-08-14).
DEFAULT_SEARCH_MJD: float = 58710.1
#: Columns of `Scene.gaia_catalog`, in order (Gaia archive names).
GAIA_COLUMNS: tuple[str, ...] = (
    "source_id", "ref_epoch", "ra", "ra_error", "dec", "dec_error", "parallax", "parallax_error",
    "pmra", "pmra_error", "pmdec", "pmdec_error", "astrometric_params_solved", "ruwe",
    "phot_g_mean_flux_over_error", "phot_g_mean_mag", "phot_bp_mean_flux_over_error",
    "phot_bp_mean_mag", "phot_rp_mean_flux_over_error", "phot_rp_mean_mag", "bp_rp",
    "phot_variable_flag",
)

_MAS_PER_DEG = 3.6e6
_SOURCE_ID_PIXEL = 2**35  # Gaia source_id = HEALPix level-12 nested index * 2^35 + running number


@dataclass(frozen=True)
class SceneConfig:
    """Densities, ranges and populations of the simulated sky.

    Attributes
    ----------
    star_mag_range : (float, float)
        Gaia G range of the stars (mag).
    star_density_scale, galaxy_density_scale : float
        Multipliers of the star and galaxy counts (e.g. 0.1 for a sparse test scene).
    galaxy_mag_range : (float, float)
        r range of the galaxies (mag).
    intrinsic_scatter_mag : float
        Gaussian scatter (mag) of each star's true DES magnitudes about the Gaia -> DES
        transformation, independent per band (the transformation's intrinsic width); 0 = none.
    variable_fraction : float
        Fraction of stars that are periodic variables.
    n_kilonovae, n_supernovae : int
        Transients placed in the field (when ``SimSwitches.transients``).
    hostless_fraction : float
        Fraction of transients without a host (at least one of each kind when n >= 2).
    host_mag_limit : float
        Hosts are chosen among galaxies brighter than this r magnitude.
    """

    star_mag_range: tuple[float, float] = (12.0, 24.0)
    star_density_scale: float = 1.0
    galaxy_mag_range: tuple[float, float] = (16.0, 24.0)
    galaxy_density_scale: float = 1.0
    intrinsic_scatter_mag: float = 0.01
    variable_fraction: float = 0.03
    n_kilonovae: int = 3
    n_supernovae: int = 2
    hostless_fraction: float = 0.34
    host_mag_limit: float = 22.0


def cap_area_deg2(radius_deg: float) -> float:
    """Area of a spherical cap of angular radius ``radius_deg`` (deg^2)."""
    return float(2.0 * np.pi * (1.0 - np.cos(np.deg2rad(radius_deg))) * (180.0 / np.pi) ** 2)


def random_in_cap(rng: np.random.Generator, n: int, ra0: float, dec0: float, radius_deg: float
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` positions uniformly distributed on the sphere within ``radius_deg`` of (ra0, dec0)."""
    cos_r = np.cos(np.deg2rad(radius_deg))
    theta = np.arccos(rng.uniform(cos_r, 1.0, n))
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    t = np.rad2deg(np.tan(theta))
    return tangent_to_sky(t * np.sin(phi), t * np.cos(phi), Pointing(ra0, dec0))


def _great_circle_move(ra0: float, dec0: float, pa_deg: float, angle_deg: NDArray[np.float64] | float
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move from (ra0, dec0) along the great circle leaving at position angle ``pa_deg``."""
    a, d = np.deg2rad(ra0), np.deg2rad(dec0)
    p = np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])
    east = np.array([-np.sin(a), np.cos(a), 0.0])
    north = np.array([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)])
    pa = np.deg2rad(pa_deg)
    tdir = np.sin(pa) * east + np.cos(pa) * north
    th = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[..., None]
    v = np.cos(th) * p + np.sin(th) * tdir
    return unit_to_radec(v)


@dataclass(frozen=True)
class Scene:
    """A simulated sky with its truth.

    Attributes
    ----------
    center_ra, center_dec, radius_deg : float
        The field (deg).
    seed : int
    switches : SimSwitches
    config : SceneConfig
    galactic_b : float
        Galactic latitude of the field centre (deg).
    objects : astropy.table.Table
        Static truth, one row per object: ``id``, ``kind`` (`OBJECT_KINDS`), ``subtype`` (star
        population, "disk"/"bulge", "kilonova"/"sn", "asteroid"), ``ra``, ``dec`` (deg; stars at
        ``ref_epoch``, the asteroid at ``moving.mjd0``), ``pmra``, ``pmdec`` (mas/yr, pmra with
        cos dec; 0 for non-stars), ``parallax`` (mas), ``distance_pc`` (NaN for non-stars),
        ``mag_g`` .. ``mag_Y`` (AB: mean for stars and variables, peak for transients),
        ``gaia_g``, ``gaia_bp``, ``gaia_rp`` (true, NaN for non-stars), ``transform_valid``
        (True where the star's BP-RP is inside the Gaia->DES transform range), ``in_gaia``,
        ``source_id`` (Gaia source_id, 0 when not in Gaia), ``hlr_arcsec`` (0 for point
        sources), ``sersic_n``, ``q``, ``pa_deg`` (1, 1, 0 for point sources), ``host_id``
        (0 when none).
    transients : astropy.table.Table
        One row per transient: ``id``, ``host_id``, ``type``, ``ra``, ``dec``, ``t_expl`` (MJD),
        ``tau_rise`` (d), ``m_peak_<band>``, ``tau_fall_<band>`` (d), ``abs_peak_r``,
        ``dist_mod``, ``host_offset_arcsec``.
    variables : astropy.table.Table
        ``id``, ``period_d``, ``amp_r`` (peak-to-peak, mag), ``t0`` (MJD), ``shape``
        (0 sine, 1 RR Lyrae-like sawtooth).
    moving : astropy.table.Table
        ``id``, ``ra0``, ``dec0`` (deg, at ``mjd0``), ``mjd0``, ``rate_arcsec_min``, ``pa_deg``.
    gaia : astropy.table.Table
        The observed Gaia catalogue (see `gaia_catalog`).
    """

    center_ra: float
    center_dec: float
    radius_deg: float
    seed: int
    switches: SimSwitches
    config: SceneConfig
    galactic_b: float
    objects: Table
    transients: Table
    variables: Table
    moving: Table
    gaia: Table = field(repr=False)

    def __len__(self) -> int:
        return len(self.objects)

    def counts(self) -> dict[str, int]:
        """Number of objects of each kind."""
        kinds = np.asarray(self.objects["kind"])
        return {name: int(np.sum(kinds == code)) for name, code in OBJECT_KINDS.items()}

    def positions_at(self, mjd: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """True (ra, dec) of every object at ``mjd`` (deg; proper motion and orbit applied)."""
        ra = np.array(self.objects["ra"], dtype=np.float64)
        dec = np.array(self.objects["dec"], dtype=np.float64)
        kind = np.asarray(self.objects["kind"])
        stars = (kind == OBJECT_KINDS["star"]) | (kind == OBJECT_KINDS["variable"])
        if self.switches.proper_motion and np.any(stars):
            dt = float(mjd_to_jyear(mjd)) - GAIA_REF_EPOCH
            ra[stars], dec[stars] = propagate_proper_motion(
                ra[stars], dec[stars], np.asarray(self.objects["pmra"])[stars],
                np.asarray(self.objects["pmdec"])[stars], dt)
        if len(self.moving):
            row_of = self._row_index(np.asarray(self.moving["id"]))
            for j, m in enumerate(self.moving):
                ang = float(m["rate_arcsec_min"]) * (mjd - float(m["mjd0"])) * 1440.0 / 3600.0
                r, d = _great_circle_move(float(m["ra0"]), float(m["dec0"]), float(m["pa_deg"]), ang)
                ra[row_of[j]], dec[row_of[j]] = float(r), float(d)
        return ra, dec

    def mags_at(self, band: str, mjd: float) -> NDArray[np.float64]:
        """AB magnitude of every object in ``band`` at ``mjd`` (NaN: transient not yet exploded)."""
        validate_band(band, BANDS)
        mag = np.array(self.objects[f"mag_{band}"], dtype=np.float64)
        if len(self.variables):
            v = self.variables
            rows = self._row_index(np.asarray(v["id"]))
            mag[rows] = lc.variable_mag(mjd, band, mag[rows], v["amp_r"], v["period_d"], v["t0"], v["shape"])
        if len(self.transients):
            t = self.transients
            rows = self._row_index(np.asarray(t["id"]))
            mag[rows] = lc.rise_fall_mag(mjd, t["t_expl"], t[f"m_peak_{band}"], t["tau_rise"],
                                         t[f"tau_fall_{band}"])
        return mag

    def _row_index(self, ids: NDArray[np.int64]) -> NDArray[np.intp]:
        # ids are 1..N in row order (make_scene guarantees it)
        return np.asarray(ids, dtype=np.intp) - 1

    def objects_at(self, spec: ExposureSpec, *, max_offset_deg: float = 1.3) -> ObjectTable:
        """The objects as exposure ``spec`` sees them, at its mid-exposure time.

        Parameters
        ----------
        spec : ExposureSpec
        max_offset_deg : float
            Objects farther than this from the true boresight are left out (DECam's field
            reaches ~1.1 deg).

        Returns
        -------
        ObjectTable
            Positions at mid-exposure, magnitudes in ``spec.band``; ``meta`` holds ``mjd_mid``,
            ``epoch_jyear``, ``band`` and ``expnum``.
        """
        t_mid = spec.mjd + 0.5 * spec.exptime / 86400.0
        ra, dec = self.positions_at(t_mid)
        mag = self.mags_at(spec.band, t_mid)
        sep = angular_separation_deg(ra, dec, spec.pointing.ra_deg, spec.pointing.dec_deg)
        keep = np.asarray(sep <= max_offset_deg)
        o = self.objects
        return ObjectTable(
            id=np.asarray(o["id"], dtype=np.int64)[keep],
            kind=np.asarray(o["kind"], dtype=np.int8)[keep],
            ra=ra[keep], dec=dec[keep], mag=mag[keep],
            hlr_arcsec=np.asarray(o["hlr_arcsec"], dtype=np.float64)[keep],
            sersic_n=np.asarray(o["sersic_n"], dtype=np.float64)[keep],
            q=np.asarray(o["q"], dtype=np.float64)[keep],
            pa_deg=np.asarray(o["pa_deg"], dtype=np.float64)[keep],
            meta={"mjd_mid": t_mid, "epoch_jyear": float(mjd_to_jyear(t_mid)),
                  "band": spec.band, "expnum": spec.expnum},
        )

    def gaia_catalog(self) -> Table:
        """The Gaia-format catalogue (copy): stars with observed G < 20.7, Gaia archive columns.

        Positions (``ra``, ``dec`` at ``ref_epoch`` = 2016.0), ``parallax``, ``pmra``, ``pmdec``
        and the mean magnitudes are the truth perturbed by their errors (``*_error`` in mas and
        mas/yr; ``*_flux_over_error``); ~15 % of the stars fainter than G = 20 have a
        2-parameter solution (NaN parallax and proper motion, ``astrometric_params_solved`` 3)
        and some faint stars lack BP/RP (NaN), as in Gaia DR3. ``phot_variable_flag`` is
        "VARIABLE" for the simulated variables.
        """
        return self.gaia.copy()


def _in_footprint(pred: Callable | None, ra: NDArray[np.float64], dec: NDArray[np.float64]
                  ) -> NDArray[np.bool_]:
    if pred is None:
        return np.ones(np.shape(ra), dtype=bool)
    return np.asarray(pred(ra, dec), dtype=bool)


def _place_points(rng: np.random.Generator, n: int, ra0: float, dec0: float, radius: float,
                  footprint: Callable | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` random positions in the cap (inner 90 %) that satisfy ``footprint``."""
    got_ra: list[np.ndarray] = []
    got_dec: list[np.ndarray] = []
    have = 0
    for _ in range(200):
        ra, dec = random_in_cap(rng, 4096, ra0, dec0, 0.9 * radius)
        ok = _in_footprint(footprint, ra, dec)
        got_ra.append(ra[ok])
        got_dec.append(dec[ok])
        have += int(ok.sum())
        if have >= n:
            break
    ra = np.concatenate(got_ra)[:n]
    dec = np.concatenate(got_dec)[:n]
    if ra.size < n:
        raise ValueError("transient footprint does not intersect the scene: cannot place objects")
    return ra, dec


def make_scene(center_ra: float, center_dec: float, radius_deg: float, *, seed: int,
               switches: SimSwitches = SimSwitches(), config: SceneConfig = SceneConfig(),
               search_mjd: float = DEFAULT_SEARCH_MJD, last_template_mjd: float | None = None,
               footprint: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.bool_]]
               | None = None
               ) -> Scene:
    """Make a static sky with truth in a circular field.

    Parameters
    ----------
    center_ra, center_dec : float
        Field centre (deg).
    radius_deg : float
        Field radius (deg); objects fill the spherical cap.
    seed : int
        Random seed: same arguments, same scene. Each population uses its own random stream,
        so switching galaxies off does not change the stars.
    switches : SimSwitches
        ``galaxies``, ``transients``, ``variables``, ``moving`` and ``proper_motion`` are used.
    config : SceneConfig
    search_mjd : float
        Start of the first search exposure (MJD): transients explode before it, the asteroid is
        placed in the ``footprint`` at this time.
    last_template_mjd : float or None
        End of the last template exposure (MJD): transients explode after it. Default:
        ``search_mjd - 30``.
    footprint : callable or None
        ``footprint(ra, dec) -> bool array``: where transients and the asteroid may be placed
        (e.g. `survey.CCDFootprint` of the search exposures); None: anywhere in the inner 90 %
        of the field.

    Returns
    -------
    Scene
    """
    if radius_deg <= 0:
        raise ValueError(f"radius_deg must be > 0, got {radius_deg}")
    if last_template_mjd is None:
        last_template_mjd = search_mjd - 30.0
    if last_template_mjd >= search_mjd:
        raise ValueError(f"last template (MJD {last_template_mjd}) is not before the search "
                         f"(MJD {search_mjd})")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 7319]).spawn(8)]
    r_star, r_gaia, r_gal, r_var, r_tr, r_mov, r_scat, r_host = streams
    b = float(SkyCoord(center_ra, center_dec, unit="deg").galactic.b.deg)
    area = cap_area_deg2(radius_deg)
    cfg = config

    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "kind", "subtype", "ra", "dec", "pmra", "pmdec", "parallax", "distance_pc",
        *(f"mag_{x}" for x in BANDS), "gaia_g", "gaia_bp", "gaia_rp", "transform_valid",
        "hlr_arcsec", "sersic_n", "q", "pa_deg", "host_id")}

    def add(n: int, **values) -> None:
        defaults = {"pmra": 0.0, "pmdec": 0.0, "parallax": 0.0, "distance_pc": np.nan,
                    "gaia_g": np.nan, "gaia_bp": np.nan, "gaia_rp": np.nan, "transform_valid": False,
                    "hlr_arcsec": 0.0, "sersic_n": 1.0, "q": 1.0, "pa_deg": 0.0, "host_id": 0}
        defaults.update(values)
        for k in cols:
            v = defaults[k]
            cols[k].append(np.broadcast_to(np.asarray(v), (n,)).copy())

    # --- stars
    g = sample_magnitudes(r_star, lambda m: star_counts(m, b, cfg.star_density_scale),
                          cfg.star_mag_range[0], cfg.star_mag_range[1], area)
    ns = g.size
    stars = draw_stars(r_star, g, reflex_angle_deg=float(r_star.uniform(0.0, 360.0)))
    s_ra, s_dec = random_in_cap(r_star, ns, center_ra, center_dec, radius_deg)
    des: dict[str, np.ndarray] = {}
    valid = np.ones(ns, dtype=bool)
    for x in BANDS:
        m, v = des_from_gaia(x, stars.g, stars.bp, stars.rp)
        scatter = cfg.intrinsic_scatter_mag
        des[x] = m + (r_scat.normal(0.0, scatter, ns) if scatter > 0 else 0.0)
        if x != "Y":
            valid &= v
    pop_names = {code: name for name, code in STAR_POPULATIONS.items()}
    pm_on = switches.proper_motion
    kind_star = np.full(ns, OBJECT_KINDS["star"], dtype=np.int8)
    add(ns, kind=kind_star, subtype=np.array([pop_names[int(p)] for p in stars.population], dtype=object),
        ra=s_ra, dec=s_dec, pmra=stars.pmra if pm_on else 0.0, pmdec=stars.pmdec if pm_on else 0.0,
        parallax=stars.parallax_mas, distance_pc=stars.distance_pc,
        **{f"mag_{x}": des[x] for x in BANDS}, gaia_g=stars.g, gaia_bp=stars.bp, gaia_rp=stars.rp,
        transform_valid=valid)

    # --- variables (a subset of the stars)
    var_rows = np.zeros(0, dtype=np.int64)
    var_cols: dict[str, np.ndarray] = {}
    if switches.variables and ns:
        nv = int(r_var.binomial(ns, cfg.variable_fraction))
        var_rows = np.sort(r_var.choice(ns, size=nv, replace=False))
        halo = stars.population[var_rows] == STAR_POPULATIONS["halo_turnoff"]
        rr = halo & (r_var.uniform(size=nv) < 0.5)
        period = np.where(rr, r_var.uniform(0.45, 0.75, nv), 10.0 ** r_var.uniform(-1.0, np.log10(20.0), nv))
        amp = np.where(rr, r_var.uniform(0.4, 1.0, nv), r_var.uniform(0.1, 0.4, nv))
        var_cols = {"id": var_rows + 1, "period_d": period, "amp_r": amp,
                    "t0": search_mjd - r_var.uniform(0.0, 1.0, nv) * period,
                    "shape": rr.astype(np.int8)}
        cols["kind"][0][var_rows] = OBJECT_KINDS["variable"]

    # --- galaxies
    n_gal = 0
    gal_cols: dict[str, np.ndarray] = {}
    if switches.galaxies:
        rmag = sample_magnitudes(r_gal, lambda m: galaxy_counts(m, cfg.galaxy_density_scale),
                                 cfg.galaxy_mag_range[0], cfg.galaxy_mag_range[1], area)
        n_gal = rmag.size
        gals = draw_galaxies(r_gal, rmag)
        g_ra, g_dec = random_in_cap(r_gal, n_gal, center_ra, center_dec, radius_deg)
        add(n_gal, kind=OBJECT_KINDS["galaxy"],
            subtype=np.where(gals.is_bulge, "bulge", "disk").astype(object), ra=g_ra, dec=g_dec,
            **{f"mag_{x}": gals.mags[x] for x in BANDS}, hlr_arcsec=gals.hlr_arcsec,
            sersic_n=gals.sersic_n, q=gals.q, pa_deg=gals.pa_deg)
        gal_cols = {"ra": g_ra, "dec": g_dec, "mag_r": gals.mags["r"], "hlr_arcsec": gals.hlr_arcsec,
                    "q": gals.q, "pa_deg": gals.pa_deg}

    # --- transients
    tr_rows: dict[str, list] = {k: [] for k in (
        "id", "host_id", "type", "ra", "dec", "t_expl", "tau_rise", "abs_peak_r", "dist_mod",
        "host_offset_arcsec", *(f"m_peak_{x}" for x in BANDS), *(f"tau_fall_{x}" for x in BANDS))}
    if switches.transients and (cfg.n_kilonovae + cfg.n_supernovae) > 0:
        _make_transients(r_tr, r_host, cfg, cols, gal_cols, ns, tr_rows, center_ra, center_dec,
                         radius_deg, search_mjd, last_template_mjd, footprint, add)

    # --- moving object
    mov_rows: dict[str, list] = {k: [] for k in ("id", "ra0", "dec0", "mjd0", "rate_arcsec_min", "pa_deg")}
    if switches.moving:
        ra0, dec0 = _place_points(r_mov, 1, center_ra, center_dec, radius_deg, footprint)
        r_ast = float(r_mov.uniform(19.5, 21.0))
        mags = {"g": r_ast + 0.65, "r": r_ast, "i": r_ast - 0.2, "z": r_ast - 0.15, "Y": r_ast - 0.15}
        n_before = sum(len(a) for a in cols["kind"])
        add(1, kind=OBJECT_KINDS["moving"], subtype=np.array(["asteroid"], dtype=object),
            ra=ra0, dec=dec0, **{f"mag_{x}": mags[x] for x in BANDS})
        for key, val in (("id", n_before + 1), ("ra0", float(ra0[0])), ("dec0", float(dec0[0])),
                     ("mjd0", float(search_mjd)), ("rate_arcsec_min", float(r_mov.uniform(0.4, 0.8))),
                     ("pa_deg", float(r_mov.uniform(250.0, 290.0)))):
            mov_rows[key].append(val)

    objects = Table({k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    n = len(objects)
    objects.add_column(np.arange(1, n + 1, dtype=np.int64), name="id", index=0)
    objects["kind"] = np.asarray(objects["kind"], dtype=np.int8)
    objects["host_id"] = np.asarray(objects["host_id"], dtype=np.int64)
    objects["transform_valid"] = np.asarray(objects["transform_valid"], dtype=bool)
    objects["subtype"] = np.asarray(objects["subtype"], dtype=str)

    gaia, in_gaia, source_id = _observe_gaia(r_gaia, objects, ns, var_rows)
    objects["in_gaia"] = in_gaia
    objects["source_id"] = source_id
    _set_units(objects)
    transients = Table({k: np.asarray(v) for k, v in tr_rows.items()}) if tr_rows["id"] else \
        Table({k: np.zeros(0, dtype=np.int64 if k in ("id", "host_id") else (str if k == "type" else float))
               for k in tr_rows})
    variables = Table(var_cols) if len(var_cols) else Table(
        {"id": np.zeros(0, np.int64), "period_d": np.zeros(0), "amp_r": np.zeros(0),
         "t0": np.zeros(0), "shape": np.zeros(0, np.int8)})
    moving = Table({k: np.asarray(v, dtype=np.int64 if k == "id" else np.float64)
                    for k, v in mov_rows.items()})
    scene = Scene(center_ra=float(center_ra), center_dec=float(center_dec), radius_deg=float(radius_deg),
                  seed=int(seed), switches=switches, config=config, galactic_b=b, objects=objects,
                  transients=transients, variables=variables, moving=moving, gaia=gaia)
    log.info("scene at (%.4f, %.4f) r=%.3f deg, b=%.1f: %s, %d in Gaia", center_ra, center_dec,
             radius_deg, b, scene.counts(), len(gaia))
    return scene


def _make_transients(r_tr, r_host, cfg: SceneConfig, cols, gal_cols, ns: int, tr_rows, ra0: float,
                     dec0: float, radius: float, search_mjd: float, last_template_mjd: float,
                     footprint, add) -> None:
    types = ["kilonova"] * cfg.n_kilonovae + ["sn"] * cfg.n_supernovae
    nt = len(types)
    n_hostless = int(round(cfg.hostless_fraction * nt))
    if nt >= 2:
        n_hostless = min(max(n_hostless, 1), nt - 1)
    hosted = np.ones(nt, dtype=bool)
    hosted[r_tr.permutation(nt)[:n_hostless]] = False

    # candidate hosts: bright galaxies whose centre lies in the footprint
    host_rows = np.zeros(0, dtype=np.int64)
    if gal_cols:
        gra, gdec, rmag = gal_cols["ra"], gal_cols["dec"], gal_cols["mag_r"]
        cand = np.flatnonzero((rmag < cfg.host_mag_limit) & _in_footprint(footprint, gra, gdec)
                              & (angular_separation_deg(gra, gdec, ra0, dec0) < 0.9 * radius))
        n_need = int(hosted.sum())
        if cand.size < n_need:
            log.warning("only %d candidate hosts for %d hosted transients; the rest are hostless",
                        cand.size, n_need)
            drop = np.flatnonzero(hosted)[cand.size:]
            hosted[drop] = False
        host_rows = r_host.choice(cand, size=int(hosted.sum()), replace=False) if hosted.any() else host_rows
    else:
        hosted[:] = False

    n_before = sum(len(a) for a in cols["kind"])
    free_ra, free_dec = _place_points(r_tr, int((~hosted).sum()), ra0, dec0, radius, footprint)
    window_lo, window_hi = last_template_mjd, search_mjd
    ras, decs, hids, offs = [], [], [], []
    ih = ifree = 0
    for k in range(nt):
        if hosted[k]:
            row = int(host_rows[ih])
            ih += 1
            hlr = float(gal_cols["hlr_arcsec"][row])
            q = float(gal_cols["q"][row])
            pa = np.deg2rad(float(gal_cols["pa_deg"][row]))
            rr = r_tr.gamma(2.0, hlr / 1.678)  # exponential disc light profile, scale = hlr/1.678
            psi = r_tr.uniform(0.0, 2.0 * np.pi)
            u, v = rr * np.cos(psi), rr * np.sin(psi) * q
            dxi = (u * np.sin(pa) + v * np.cos(pa)) / 3600.0
            deta = (u * np.cos(pa) - v * np.sin(pa)) / 3600.0
            hra, hdec = float(gra[row]), float(gdec[row])
            tra, tdec = tangent_to_sky(np.array([dxi]), np.array([deta]), Pointing(hra, hdec))
            ras.append(float(tra[0]))
            decs.append(float(tdec[0]))
            hids.append(ns + row + 1)
            offs.append(float(np.hypot(u, v)))
        else:
            ras.append(float(free_ra[ifree]))
            decs.append(float(free_dec[ifree]))
            ifree += 1
            hids.append(0)
            offs.append(0.0)

    for k, typ in enumerate(types):
        if typ == "kilonova":
            abs_peak = r_tr.normal(-16.0, 0.4)
            mu = r_tr.uniform(33.5, 36.5)
            t_expl = max(window_hi - r_tr.uniform(0.1, 1.5), window_lo + 0.01)
            tau_rise = r_tr.uniform(0.1, 0.25)
            scale = r_tr.uniform(0.8, 1.2)
            peak_off, decline = lc.KILONOVA_PEAK_OFFSET, lc.KILONOVA_DECLINE
        else:
            abs_peak = r_tr.normal(-19.0, 0.4)
            mu = r_tr.uniform(38.5, 41.5)
            t_expl = max(window_hi - r_tr.uniform(2.0, 25.0), window_lo + 0.01)
            tau_rise = r_tr.uniform(4.0, 7.0)
            scale = r_tr.uniform(0.8, 1.2)
            peak_off, decline = lc.SN_PEAK_OFFSET, lc.SN_DECLINE
        m_r = abs_peak + mu
        tr_rows["id"].append(n_before + k + 1)
        tr_rows["host_id"].append(hids[k])
        tr_rows["type"].append(typ)
        tr_rows["ra"].append(ras[k])
        tr_rows["dec"].append(decs[k])
        tr_rows["t_expl"].append(float(t_expl))
        tr_rows["tau_rise"].append(float(tau_rise))
        tr_rows["abs_peak_r"].append(float(abs_peak))
        tr_rows["dist_mod"].append(float(mu))
        tr_rows["host_offset_arcsec"].append(offs[k])
        for x in BANDS:
            tr_rows[f"m_peak_{x}"].append(float(m_r + peak_off[x]))
            tr_rows[f"tau_fall_{x}"].append(float(1.0857 / (decline[x] * scale)))

    add(nt, kind=OBJECT_KINDS["transient"], subtype=np.array(types, dtype=object),
        ra=np.array(ras), dec=np.array(decs),
        **{f"mag_{x}": np.array(tr_rows[f"m_peak_{x}"]) for x in BANDS},
        host_id=np.array(hids, dtype=np.int64))


def _observe_gaia(rng: np.random.Generator, objects: Table, ns: int, var_rows: NDArray[np.int64]
                  ) -> tuple[Table, NDArray[np.bool_], NDArray[np.int64]]:
    """Perturb the true stars by Gaia errors; keep those with observed G < `GAIA_G_LIMIT`."""
    from astropy_healpix import HEALPix

    n = len(objects)
    g = np.asarray(objects["gaia_g"][:ns], dtype=np.float64)
    err = gaia_errors(g)
    g_obs = g + rng.normal(0.0, 1.0, ns) * err.g_mag
    bp_obs = np.asarray(objects["gaia_bp"][:ns]) + rng.normal(0.0, 1.0, ns) * err.bp_mag
    rp_obs = np.asarray(objects["gaia_rp"][:ns]) + rng.normal(0.0, 1.0, ns) * err.rp_mag
    dec_t = np.asarray(objects["dec"][:ns], dtype=np.float64)
    ra_obs = np.asarray(objects["ra"][:ns]) + rng.normal(0.0, 1.0, ns) * err.pos_mas / _MAS_PER_DEG \
        / np.cos(np.deg2rad(dec_t))
    dec_obs = dec_t + rng.normal(0.0, 1.0, ns) * err.pos_mas / _MAS_PER_DEG
    plx_obs = np.asarray(objects["parallax"][:ns]) + rng.normal(0.0, 1.0, ns) * err.parallax_mas
    pmra_obs = np.asarray(objects["pmra"][:ns]) + rng.normal(0.0, 1.0, ns) * err.pm_masyr
    pmdec_obs = np.asarray(objects["pmdec"][:ns]) + rng.normal(0.0, 1.0, ns) * err.pm_masyr
    # 2-parameter solutions and missing BP/RP among the faintest sources (as in DR3)
    u2, ubp = rng.uniform(size=ns), rng.uniform(size=ns)
    two_p = (g_obs > 20.0) & (u2 < 0.15)
    no_bprp = ubp < np.clip((g_obs - 20.0) / 0.7, 0.0, 1.0) * 0.2
    pos_err = np.where(two_p, err.pos_mas * 4.0, err.pos_mas)
    ra_obs = np.where(two_p, np.asarray(objects["ra"][:ns]) + rng.normal(0.0, 1.0, ns) * pos_err
                      / _MAS_PER_DEG / np.cos(np.deg2rad(dec_t)), ra_obs)
    dec_obs = np.where(two_p, dec_t + rng.normal(0.0, 1.0, ns) * pos_err / _MAS_PER_DEG, dec_obs)
    for a in (plx_obs, pmra_obs, pmdec_obs):
        a[two_p] = np.nan
    bp_obs[no_bprp] = np.nan
    rp_obs[no_bprp] = np.nan
    det = g_obs < GAIA_G_LIMIT

    hp = HEALPix(nside=2**12, order="nested")
    pix = np.asarray(hp.lonlat_to_healpix(ra_obs * u.deg, dec_obs * u.deg), dtype=np.int64)
    source_id = pix * _SOURCE_ID_PIXEL + np.arange(1, ns + 1, dtype=np.int64)
    is_var = np.zeros(ns, dtype=bool)
    is_var[var_rows] = True

    def f32(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)

    sel = det
    t = Table()
    t["source_id"] = source_id[sel]
    t["ref_epoch"] = np.full(int(sel.sum()), GAIA_REF_EPOCH)
    t["ra"] = ra_obs[sel]
    t["ra_error"] = f32(pos_err[sel])
    t["dec"] = dec_obs[sel]
    t["dec_error"] = f32(pos_err[sel])
    t["parallax"] = plx_obs[sel]
    t["parallax_error"] = f32(np.where(two_p, np.nan, err.parallax_mas)[sel])
    t["pmra"] = pmra_obs[sel]
    t["pmra_error"] = f32(np.where(two_p, np.nan, err.pm_masyr)[sel])
    t["pmdec"] = pmdec_obs[sel]
    t["pmdec_error"] = f32(np.where(two_p, np.nan, err.pm_masyr)[sel])
    t["astrometric_params_solved"] = np.where(two_p, 3, 31).astype(np.int16)[sel]
    t["ruwe"] = f32(np.where(two_p, np.nan, 1.0 + np.abs(rng.normal(0.0, 0.08, ns)))[sel])
    t["phot_g_mean_flux_over_error"] = f32(1.0857 / err.g_mag[sel])
    t["phot_g_mean_mag"] = f32(g_obs[sel])
    t["phot_bp_mean_flux_over_error"] = f32(np.where(no_bprp, np.nan, 1.0857 / err.bp_mag)[sel])
    t["phot_bp_mean_mag"] = f32(bp_obs[sel])
    t["phot_rp_mean_flux_over_error"] = f32(np.where(no_bprp, np.nan, 1.0857 / err.rp_mag)[sel])
    t["phot_rp_mean_mag"] = f32(rp_obs[sel])
    t["bp_rp"] = f32(bp_obs[sel] - rp_obs[sel])
    t["phot_variable_flag"] = np.where(is_var, "VARIABLE", "NOT_AVAILABLE")[sel]
    units = {"ref_epoch": "yr", "ra": "deg", "dec": "deg", "ra_error": "mas", "dec_error": "mas",
             "parallax": "mas", "parallax_error": "mas", "pmra": "mas / yr", "pmra_error": "mas / yr",
             "pmdec": "mas / yr", "pmdec_error": "mas / yr", "phot_g_mean_mag": "mag",
             "phot_bp_mean_mag": "mag", "phot_rp_mean_mag": "mag", "bp_rp": "mag"}
    for k, unit in units.items():
        t[k].unit = unit
    in_gaia = np.zeros(n, dtype=bool)
    in_gaia[:ns] = det
    sid = np.zeros(n, dtype=np.int64)
    sid[:ns] = np.where(det, source_id, 0)
    return t, in_gaia, sid


def _set_units(objects: Table) -> None:
    for k in ("ra", "dec", "pa_deg"):
        objects[k].unit = "deg"
    for k in ("pmra", "pmdec"):
        objects[k].unit = "mas / yr"
    objects["parallax"].unit = "mas"
    objects["distance_pc"].unit = "pc"
    objects["hlr_arcsec"].unit = "arcsec"
    for k in (*(f"mag_{x}" for x in BANDS), "gaia_g", "gaia_bp", "gaia_rp"):
        objects[k].unit = "mag"
