"""Session-wide fixtures: one simulated night (full-size CCDs with truth) shared by the SE and
difference-imaging tests, its SE products, and a builder of :class:`desgw.se.process.CCDInputs`
from it.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadfile`` in pyproject.toml): each
test file on one worker. What several files share (the simulated nights, their SE products) is
built once per run in the base temp folder common to the workers, by whichever worker asks
first, under a file lock (:func:`built_once`); the others wait for it and reuse it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``ROOT/name``, made by ``build(folder)`` once per test run whatever the number of
    pytest-xdist workers: ROOT is the base temp folder they share; an exclusive lock on
    ``ROOT/name.lock`` serialises them and ``ROOT/name/.complete`` marks a finished build (a
    folder without it, left by a worker that died, is built again)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (folder / ".complete").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                build(folder)
                (folder / ".complete").write_text("")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


@pytest.fixture(scope="session")
def build_once(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``build_once(name, build) -> folder``: :func:`built_once` for fixtures of other
    conftest files."""
    return lambda name, build: built_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def sim_night(tmp_path_factory):
    """``(outdir, truth)`` of ``simulate_night(seed=11, band="r", ccds=[28], n_templates=2,
    n_search=1)``, simulated once per test run (~30-45 s)."""
    from desgw.sim.night import simulate_night
    from desgw.sim.truth import load_truth

    outdir = built_once(tmp_path_factory, "sim_night", lambda d: simulate_night(
        d, seed=11, band="r", ccds=[28], n_templates=2, n_search=1))
    return outdir, load_truth(outdir)


@pytest.fixture(scope="session")
def sim_refcat_store(sim_night, tmp_path_factory):
    """A :class:`desgw.refcat.RefCatStore` holding the sim night's Gaia catalogue."""
    from desgw.refcat import RefCatStore, ingest_gaia

    outdir, _ = sim_night
    store_dir = built_once(tmp_path_factory, "sim_refcat", lambda d: ingest_gaia(
        [Path(outdir) / "gaia" / "gaia_sim.csv"], d, order=8))
    return RefCatStore(store_dir)


@pytest.fixture(scope="session")
def search_sim_2ccd(build_once) -> Path:
    """``simulate_night(seed=5, ccds=[28, 29], n_templates=0, n_search=1)`` (one search
    exposure, r band) and its Gaia store ``ROOT/refcat``, made once per test run; read only."""
    from desgw.refcat import ingest_gaia
    from desgw.sim.night import simulate_night

    def build(root: Path) -> None:
        simulate_night(root, seed=5, ccds=[28, 29], n_templates=0, n_search=1)
        ingest_gaia(sorted((root / "gaia").glob("*.csv")), root / "refcat")

    return build_once("search_sim_seed5_ccd28_29", build)


#: rnum, pnum of :func:`sim_night_se`'s products.
SIM_NIGHT_RP = (1, 1)


@pytest.fixture(scope="session")
def sim_night_se(sim_night, sim_refcat_store, tmp_path_factory) -> Path:
    """Product root holding the SE products (with calibration; templates in template mode) of
    every exposure of :func:`sim_night`, r1p1, made once per test run."""
    from desgw.io.settings import load_settings
    from desgw.workflow.se_exposure import run_se_exposure

    outdir, truth = sim_night

    def build(out_root: Path) -> None:
        settings = load_settings(raw_dir=Path(outdir) / "raw", calib_dir=Path(outdir) / "calib",
                                 refcat_dir=sim_refcat_store.store_dir, out_root=out_root,
                                 environ={}, cwd=outdir)
        for e in truth.expnums:
            rep = run_se_exposure(e, settings=settings, rnum=SIM_NIGHT_RP[0],
                                  pnum=SIM_NIGHT_RP[1], run_calibration=True,
                                  template_mode=e in truth.template_expnums, workers=2)
            assert not rep.failed, rep.lines()

    return built_once(tmp_path_factory, "diff_pipeline_se", build)


@pytest.fixture(scope="session")
def sim_ccd_inputs(sim_night, sim_refcat_store) -> Callable[..., object]:
    """``make(expnum, ccdnum, *, margin_arcsec=30.0) -> CCDInputs`` for a CCD of the sim night.

    Reads the raw CCD and its crosstalk sources (those in the file; a missing one makes
    ``process_ccd`` raise ``MissingCCDError``), the bias, flat and BPM, and queries the Gaia
    store around the CCD footprint of the initial WCS at the exposure epoch.
    """
    from desgw.io.calib import CalibFile, read_linearity
    from desgw.io.raw import RawExposure
    from desgw.refcat import mjd_to_jyear
    from desgw.se.crosstalk import needed_sources
    from desgw.se.process import CCDInputs
    from desgw.se.process_wcs import initial_wcs_for

    outdir, truth = sim_night
    calib_dir = Path(outdir) / "calib"

    def make(expnum: int, ccdnum: int, *, margin_arcsec: float = 30.0) -> CCDInputs:
        with RawExposure(truth.raw_path(expnum)) as rexp:
            exposure = rexp.header
            raw = rexp.read_ccd(ccdnum)
            sources = {c: (raw if c == ccdnum else rexp.read_ccd(c))
                       for c in sorted({c for c, _ in needed_sources(ccdnum)})
                       if c in rexp.ccdnums}
        with CalibFile(calib_dir / "bias.fits.fz", "bias") as f:
            bias = f.read(ccdnum)
        with CalibFile(calib_dir / f"flat_{exposure.band}.fits.fz", "flat") as f:
            flat = f.read(ccdnum)
        with CalibFile(calib_dir / "bpm.fits.fz", "bpm") as f:
            bpm = f.read(ccdnum)
        linearity = read_linearity(calib_dir / "linearity.fits", ccdnum)
        wcs0 = initial_wcs_for(raw, exposure)
        ny, nx = raw.trimmed_shape
        cra, cdec = wcs0.all_pix2world(np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]),
                                       np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]), 0)
        refcat = sim_refcat_store.query_footprint(cra, cdec, margin_arcsec=margin_arcsec,
                                                  epoch=mjd_to_jyear(exposure.mjd_obs))
        return CCDInputs(raw=raw, crosstalk_sources=sources, bias=bias, flat=flat, bpm=bpm,
                         refcat=refcat, exposure=exposure, linearity=linearity)

    return make

