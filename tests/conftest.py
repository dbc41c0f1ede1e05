"""Session-wide fixtures: one simulated night (full-size CCDs with truth) shared by the SE and
difference-imaging tests, and a builder of :class:`desgw.se.process.CCDInputs` from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def sim_night(tmp_path_factory):
    """``(outdir, truth)`` of ``simulate_night(seed=11, band="r", ccds=[28], n_templates=2,
    n_search=1)``, simulated once per test session (~30-45 s)."""
    from desgw.sim.night import simulate_night
    from desgw.sim.truth import load_truth

    outdir = tmp_path_factory.mktemp("sim_night")
    simulate_night(outdir, seed=11, band="r", ccds=[28], n_templates=2, n_search=1)
    return outdir, load_truth(outdir)


@pytest.fixture(scope="session")
def sim_refcat_store(sim_night, tmp_path_factory):
    """A :class:`desgw.refcat.RefCatStore` holding the sim night's Gaia catalogue."""
    from desgw.refcat import RefCatStore, ingest_gaia

    outdir, _ = sim_night
    store_dir = tmp_path_factory.mktemp("sim_refcat")
    ingest_gaia([Path(outdir) / "gaia" / "gaia_sim.csv"], store_dir, order=8)
    return RefCatStore(store_dir)


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
