"""Simulate one GW follow-up night: raw DECam exposures, calibrations, a Gaia catalogue and truth.

`simulate_night` plans the exposures (`survey.plan_night`), makes the sky (`scene.make_scene`,
big enough for every rendered CCD, transients and the asteroid placed where the search
exposures see them), renders each exposure with the renderer (`desgw.sim.render`), one exposure
at a time to bound memory, and writes::

    OUTDIR/raw/DECam_{expnum:08d}.fits.fz     one raw exposure per file (.fits if compress=False)
    OUTDIR/calib/                             bias, flat, bpm, linearity (`desgw.sim.calib`)
    OUTDIR/gaia/gaia_sim.csv                  Gaia-archive-format catalogue at J2016.0
    OUTDIR/truth/                             see `desgw.sim.truth` (load it with `load_truth`)

Search exposures render the requested CCDs; templates render every CCD that overlaps them
(``template_ccds="overlap"``, as the whole camera would: a dithered template CCD covers a search
CCD only partly) or the same CCD list (``"same"``). Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..instrument import (CCD_SHAPE, SCIENCE_CCDNUMS, focal_to_pixel, sky_to_tangent, source_ccds,
                          tangent_to_focal)
from ..io.atomic import atomic_write_path, atomic_write_text
from ..io.naming import raw_name
from ..io.products import write_csv, write_parquet
from ..io.raw import write_raw_exposure
from ..util.jsonsafe import json_safe
from .model import OBJECT_KINDS, ExposureSpec, ObjectTable, SimSwitches
from .scene import Scene, SceneConfig, make_scene
from .survey import CCDFootprint, SurveyConfig, field_radius_deg, overlapping_ccds, plan_night
from .truth import exposure_row

__all__ = ["DEFAULT_SIM_CCDS", "NightSummary", "simulate_night", "object_flux_rows", "ccd_truth_row",
           "sparse_masks"]

log = logging.getLogger(__name__)

#: CCDs rendered by default: a 2 x 2 block at the centre of the focal plane (fast).
DEFAULT_SIM_CCDS: tuple[int, ...] = (28, 29, 35, 36)


@dataclass(frozen=True)
class NightSummary:
    """What `simulate_night` wrote.

    Attributes
    ----------
    outdir : Path
    seed : int
    band : str
    center : (float, float)
        Field centre (deg).
    scene_radius_deg : float
    exposures : tuple of (int, bool, float, int)
        ``(expnum, is_template, mjd, n_ccds)`` per exposure, in time order.
    ccds : dict[int, tuple[int, ...]]
        CCDs rendered per expnum.
    raw_files, calib_files, truth_files : tuple of Path
    gaia_file : Path
    object_counts : dict[str, int]
        Objects of each kind in the scene.
    n_gaia : int
        Stars in the Gaia catalogue.
    elapsed_s : float
        Wall-clock time (s).
    """

    outdir: Path
    seed: int
    band: str
    center: tuple[float, float]
    scene_radius_deg: float
    exposures: tuple[tuple[int, bool, float, int], ...]
    ccds: dict[int, tuple[int, ...]]
    raw_files: tuple[Path, ...]
    calib_files: tuple[Path, ...]
    gaia_file: Path
    truth_files: tuple[Path, ...]
    object_counts: dict[str, int]
    n_gaia: int
    elapsed_s: float

    def lines(self) -> list[str]:
        """A human summary, one line per item."""
        out = [f"simulated night in {self.outdir} (seed {self.seed}, band {self.band}, "
               f"field {self.center[0]:.4f} {self.center[1]:+.4f}, radius {self.scene_radius_deg:.2f} deg, "
               f"{self.elapsed_s:.1f} s)"]
        for expnum, is_t, mjd, n in self.exposures:
            ccds = self.ccds[expnum]
            out.append(f"  {'template' if is_t else 'search  '} {expnum:8d}  MJD {mjd:.4f}  {n} CCDs "
                       f"({_ccd_list(ccds)})")
        plural = {"star": "stars", "galaxy": "galaxies", "transient": "transients",
                  "variable": "variable stars", "moving": "moving objects"}
        counts = ", ".join(f"{v} {plural.get(k, k) if v != 1 else k}" for k, v in self.object_counts.items())
        out.append(f"  objects: {counts}; Gaia catalogue: {self.n_gaia} stars")
        out.append(f"  raw: {len(self.raw_files)} files in {self.outdir / 'raw'}")
        out.append(f"  calib: {len(self.calib_files)} files in {self.outdir / 'calib'}")
        out.append(f"  gaia: {self.gaia_file}")
        out.append(f"  truth: {', '.join(p.name for p in self.truth_files)}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _ccd_list(ccds: Sequence[int]) -> str:
    return ",".join(str(c) for c in ccds) if len(ccds) <= 12 else f"{ccds[0]}..{ccds[-1]}"


def _resolve_ccds(ccds: Sequence[int] | str | None) -> tuple[int, ...]:
    if ccds is None:
        return DEFAULT_SIM_CCDS
    if isinstance(ccds, str):
        if ccds.lower() != "all":
            raise ValueError(f"ccds must be a list of CCDNUMs, None or 'all', got {ccds!r}")
        return SCIENCE_CCDNUMS
    out = tuple(sorted({int(c) for c in ccds}))
    bad = [c for c in out if c not in SCIENCE_CCDNUMS]
    if bad or not out:
        raise ValueError(f"not DECam science CCDNUMs (1..62): {bad or 'empty list'}")
    return out


def _render_api() -> tuple[Any, Any, Any, Any]:
    """The renderer's entry points (imported here so the scene side works without them)."""
    from .calib import make_detector_calib, write_calibrations
    from .render import render_exposure
    from .render_headers import exposure_primary_header

    return render_exposure, exposure_primary_header, make_detector_calib, write_calibrations


def _render_seed(seed: int, expnum: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(expnum), 99]).generate_state(1)[0])


def object_flux_rows(spec: ExposureSpec, objects: ObjectTable, ccdnums: Sequence[int],
                     qe: dict[int, float] | None = None) -> dict[str, np.ndarray]:
    """Truth rows of the objects whose centre lies on each CCD of an exposure.

    Parameters
    ----------
    spec : ExposureSpec
    objects : ObjectTable
        The exposure's view of the scene (`Scene.objects_at`).
    ccdnums : sequence of int
    qe : dict[int, float] or None
        Relative quantum efficiency per CCD (`DetectorCalib`); the CCD's zeropoint is
        ``spec.zeropoint + 2.5 log10(qe)``. None: 1 for every CCD.

    Returns
    -------
    dict of ndarray
        Columns ``expnum, ccdnum, id, kind, x, y, ra, dec, mag, flux_e`` (see `desgw.sim.truth`);
        objects with NaN magnitude (not there) are left out.
    """
    there = np.isfinite(objects.mag)
    o = objects.select(there)
    xi, eta = sky_to_tangent(o.ra, o.dec, spec.pointing)
    xmm, ymm = tangent_to_focal(xi, eta, spec.distortion)
    ny, nx = CCD_SHAPE
    parts: list[dict[str, np.ndarray]] = []
    flux0 = spec.exptime * 10.0 ** (-0.4 * (o.mag - spec.zeropoint))
    for ccd in ccdnums:
        flux = flux0 * (1.0 if qe is None else qe[int(ccd)])
        x, y = focal_to_pixel(int(ccd), xmm, ymm)
        on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        k = int(on.sum())
        parts.append({
            "expnum": np.full(k, spec.expnum, dtype=np.int64), "ccdnum": np.full(k, int(ccd), dtype=np.int16),
            "id": o.id[on], "kind": o.kind[on], "x": x[on], "y": y[on], "ra": o.ra[on], "dec": o.dec[on],
            "mag": o.mag[on], "flux_e": flux[on],
        })
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def ccd_truth_row(spec: ExposureSpec, ccdnum: int, truth: Any, n_objects: int) -> dict[str, Any]:
    """One ``ccds.csv`` row from the renderer's per-CCD truth (`desgw.sim.render.CCDTruth`)."""
    return {
        "expnum": int(spec.expnum), "ccdnum": int(ccdnum), "zeropoint": float(truth.zeropoint),
        "qe": float(truth.qe), "sky_e_per_pix": float(truth.sky_e_per_pixel),
        "sky_e_mean": float(truth.sky_e_mean), "fwhm_arcsec": float(truth.psf_fwhm_arcsec),
        "e1": float(truth.psf_e1), "e2": float(truth.psf_e2),
        "pixel_scale_arcsec": float(truth.pixel_scale_arcsec), "n_objects": int(n_objects),
        "n_cosmic_rays": int(truth.n_cosmic_rays), "satellite": bool(truth.satellite),
        "bleed_lost_e": float(truth.bleed_lost_e), "dead": bool(truth.dead),
    }


def sparse_masks(rendered: Sequence[Any]) -> dict[str, np.ndarray]:
    """Injected-artefact masks of rendered CCDs, compactly: nonzero pixels only.

    Returns
    -------
    dict of ndarray
        ``ccd_{N}_y``, ``ccd_{N}_x`` (int16) and ``ccd_{N}_bits`` (uint8) per CCD N, for the
        pixels where ``truth.mask`` (bits of `desgw.sim.detector`) is nonzero.
    """
    out: dict[str, np.ndarray] = {}
    for r in rendered:
        mask = np.asarray(r.truth.mask)
        y, x = np.nonzero(mask)
        c = int(r.ccdnum)
        out[f"ccd_{c}_y"] = y.astype(np.int16)
        out[f"ccd_{c}_x"] = x.astype(np.int16)
        out[f"ccd_{c}_bits"] = mask[y, x].astype(np.uint8)
    return out


def simulate_night(outdir: str | os.PathLike[str], *, seed: int = 0, band: str = "r",
                   ccds: Sequence[int] | str | None = None, n_templates: int = 2, n_search: int = 1,
                   switches: SimSwitches = SimSwitches(), compress: bool = True,
                   center: tuple[float, float] = (30.0, -30.0), template_ccds: str = "overlap",
                   scene_config: SceneConfig = SceneConfig(), survey_config: SurveyConfig = SurveyConfig(),
                   ) -> NightSummary:
    """Simulate a GW follow-up night and write raw data, calibrations, Gaia catalogue and truth.

    Parameters
    ----------
    outdir : path
        Output directory (created).
    seed : int
        Random seed: the same arguments give the same files.
    band : str
        g, r, i, z or Y.
    ccds : list of int, "all" or None
        CCDNUMs of the search exposures; None: `DEFAULT_SIM_CCDS`; "all": the 62 science CCDs.
    n_templates, n_search : int
        Template exposures (earlier nights) and search exposures (the event night).
    switches : SimSwitches
        Which effects are simulated (sky side and renderer).
    compress : bool
        fpack (RICE_1) the raw files (``.fits.fz``); False writes ``.fits``.
    center : (float, float)
        Field centre (ra, dec) in deg (default a high-latitude field, b = -75).
    template_ccds : {"overlap", "same"}
        Templates render the CCDs overlapping the search CCDs, or the same list.
    scene_config, survey_config : SceneConfig, SurveyConfig
        Densities and populations of the sky; observing parameters.

    Returns
    -------
    NightSummary
    """
    t_start = time.perf_counter()
    root = Path(outdir)
    search_ccds = _resolve_ccds(ccds)
    if template_ccds not in ("overlap", "same"):
        raise ValueError(f"template_ccds must be 'overlap' or 'same', got {template_ccds!r}")
    render_exposure, exposure_primary_header, make_detector_calib, write_calibrations = _render_api()

    specs = plan_night(seed=seed, band=band, n_templates=n_templates, n_search=n_search, center=center,
                       switches=switches, config=survey_config)
    search = [s for s in specs if not s.is_template]
    ccds_of: dict[int, tuple[int, ...]] = {}
    for spec in specs:
        if not spec.is_template or template_ccds == "same" or search_ccds == SCIENCE_CCDNUMS:
            ccds_of[spec.expnum] = search_ccds
        else:
            over: set[int] = set()
            for s in search:
                over.update(overlapping_ccds(s, search_ccds, spec))
            ccds_of[spec.expnum] = tuple(sorted(over))
    radius = field_radius_deg(specs, [ccds_of[s.expnum] for s in specs], center)
    temps = [s for s in specs if s.is_template]
    last_t = max(s.mjd + s.exptime / 86400.0 for s in temps) if temps else None
    scene = make_scene(center[0], center[1], radius, seed=seed, switches=switches, config=scene_config,
                       search_mjd=search[0].mjd, last_template_mjd=last_t,
                       footprint=CCDFootprint(tuple(search), search_ccds))

    rendered_ccds = {c for v in ccds_of.values() for c in v}
    # the camera also holds the CCDs whose amplifiers leak into the rendered ones (crosstalk)
    all_ccds = tuple(sorted(rendered_ccds | ({s for c in rendered_ccds for s in source_ccds(c)}
                                             if switches.crosstalk else set())))
    calib = make_detector_calib(all_ccds, seed, band, nonlinearity=switches.nonlinearity)
    calib_files = tuple(Path(p) for p in write_calibrations(root, calib).values())
    qe = {int(c): float(calib.ccds[c].qe) for c in calib.ccds}

    gaia_file = write_csv(root / "gaia" / "gaia_sim.csv", scene.gaia_catalog())

    raw_dir = root / "raw"
    raw_files: list[Path] = []
    exp_rows: list[dict[str, Any]] = []
    ccd_rows: list[dict[str, Any]] = []
    flux_parts: list[dict[str, np.ndarray]] = []
    for spec in specs:
        ccdnums = ccds_of[spec.expnum]
        objects = scene.objects_at(spec)
        rendered = render_exposure(spec, objects, list(ccdnums), switches=switches,
                                   seed=_render_seed(seed, spec.expnum), calib=calib)
        name = raw_name(spec.expnum) if compress else raw_name(spec.expnum)[: -len(".fz")]
        path = raw_dir / name
        write_raw_exposure(path, exposure_primary_header(spec), [(r.header, r.raw) for r in rendered],
                           compress=compress)
        raw_files.append(path)
        fl = object_flux_rows(spec, objects, ccdnums, qe)
        flux_parts.append(fl)
        n_on = {int(c): int(n) for c, n in zip(*np.unique(fl["ccdnum"], return_counts=True))} if fl else {}
        for r in rendered:
            ccd_rows.append(ccd_truth_row(spec, r.ccdnum, r.truth, n_on.get(int(r.ccdnum), 0)))
        with atomic_write_path(root / "truth" / f"artefacts_{spec.expnum}.npz") as tmp:
            with open(tmp, "wb") as fh:
                masks: dict[str, Any] = sparse_masks(rendered)
                np.savez_compressed(fh, **masks)
        del rendered
        row = exposure_row(spec)
        row["mjd_mid"] = spec.mjd + 0.5 * spec.exptime / 86400.0
        row["raw_file"] = name
        row["n_ccds"] = len(ccdnums)
        exp_rows.append(row)
        log.info("exposure %d (%s): %d CCDs, %d objects on them", spec.expnum,
                 "template" if spec.is_template else "search", len(ccdnums), sum(n_on.values()))

    truth_files = _write_truth(root / "truth", scene, exp_rows, ccd_rows, flux_parts, {
        "seed": int(seed), "band": band, "center": list(center), "scene_radius_deg": radius,
        "search_ccds": list(search_ccds), "ccds": {str(k): list(v) for k, v in ccds_of.items()},
        "template_ccds": template_ccds, "compress": bool(compress), "galactic_b": scene.galactic_b,
        "switches": asdict(switches), "scene_config": asdict(scene_config),
        "survey_config": asdict(survey_config), "gaia_ref_epoch": 2016.0,
    })
    return NightSummary(
        outdir=root, seed=int(seed), band=band, center=(float(center[0]), float(center[1])),
        scene_radius_deg=radius,
        exposures=tuple((s.expnum, s.is_template, s.mjd, len(ccds_of[s.expnum])) for s in specs),
        ccds=dict(ccds_of), raw_files=tuple(raw_files), calib_files=calib_files, gaia_file=gaia_file,
        truth_files=truth_files, object_counts=scene.counts(), n_gaia=len(scene.gaia),
        elapsed_s=time.perf_counter() - t_start,
    )


def _write_truth(tdir: Path, scene: Scene, exp_rows: list[dict[str, Any]], ccd_rows: list[dict[str, Any]],
                 flux_parts: list[dict[str, np.ndarray]], meta: dict[str, Any]) -> tuple[Path, ...]:
    files = [
        write_parquet(tdir / "objects.parquet", scene.objects),
        write_csv(tdir / "exposures.csv", Table(rows=exp_rows, names=list(exp_rows[0]))),
        write_csv(tdir / "ccds.csv", Table(rows=ccd_rows, names=list(ccd_rows[0]))),
    ]
    parts = [p for p in flux_parts if p]
    fluxes = Table({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}) if parts else Table(
        {k: np.zeros(0) for k in ("expnum", "ccdnum", "id", "kind", "x", "y", "ra", "dec", "mag", "flux_e")})
    fluxes.meta["kinds"] = dict(OBJECT_KINDS)
    files.append(write_parquet(tdir / "fluxes.parquet", fluxes))
    files.append(write_csv(tdir / "transients.csv", scene.transients))
    files.append(write_csv(tdir / "variables.csv", scene.variables))
    files.append(write_csv(tdir / "moving.csv", scene.moving))
    night_json = json.dumps(json_safe(meta, nonfinite_to_none=False), indent=1) + "\n"
    files.append(atomic_write_text(tdir / "night.json", night_json))
    return tuple(Path(f) for f in files)
