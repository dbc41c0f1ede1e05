"""process_ccd on bad inputs (modified in-memory copies of a simulated CCD): clear, picklable
errors naming file, HDU and problem, or a QC failure with its reason."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import DesgwError, HeaderError, MissingCCDError, MissingFileError
from desgw.se.astrometry import AstrometryError
from desgw.se.detrend import DetrendError
from desgw.se.process import SEConfig, check_band, process_ccd
from desgw.se.process_wcs import initial_wcs_for

# Every test reads a CCD of the session's simulated night (simulated once, ~1 min).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(sim_night, sim_ccd_inputs):
    _, truth = sim_night
    return sim_ccd_inputs(truth.search_expnums[0], 28)


def _with_pixels(inputs, pixels):
    raw = replace(inputs.raw, pixels=pixels)
    sources = {c: (raw if c == raw.ccdnum else s) for c, s in inputs.crosstalk_sources.items()}
    return replace(inputs, raw=raw, crosstalk_sources=sources)


def _roundtrip(err: DesgwError) -> DesgwError:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err)
    return back


def test_all_zero_raw_ccd(inputs):
    with pytest.raises(DetrendError) as exc:
        process_ccd(_with_pixels(inputs, np.zeros_like(inputs.raw.pixels)))
    msg = str(exc.value)
    assert inputs.raw.path in msg and f"HDU {inputs.raw.hdu}" in msg and "all 0" in msg
    _roundtrip(exc.value)


def test_all_saturated_raw_ccd(inputs):
    pix = inputs.raw.pixels.copy()
    for amp in inputs.raw.amps.values():
        pix[amp.data_section.slices] = 65535.0
    with pytest.raises(DetrendError) as exc:
        process_ccd(_with_pixels(inputs, pix))
    assert "saturated" in str(exc.value) and inputs.raw.path in str(exc.value)
    _roundtrip(exc.value)


def test_nan_pixels(inputs):
    pix = inputs.raw.pixels.copy()
    pix[100:103, 200] = np.nan
    with pytest.raises(DetrendError) as exc:
        process_ccd(_with_pixels(inputs, pix))
    assert "3 non-finite" in str(exc.value) and inputs.raw.path in str(exc.value)
    assert exc.value.ccdnum == 28
    _roundtrip(exc.value)


@pytest.mark.parametrize("filt, band, fragment", [
    ("VR DECam c0007 6300.0 2600.0", None, "does not name a DES band"),
    ("N964 DECam c0008 9645.0 94.0", "r", "does not name a DES band"),
    ("g DECam SDSS c0001 4720.0 1520.0", "r", "disagrees with BAND"),
])
def test_wrong_filter_keyword(inputs, filt, band, fragment):
    hdr = inputs.exposure.header.copy()
    hdr["FILTER"] = filt
    if band is None:
        del hdr["BAND"]
    exposure = replace(inputs.exposure, filter=filt, band=band or filt.split()[0], header=hdr)
    with pytest.raises(HeaderError) as exc:
        process_ccd(replace(inputs, exposure=exposure))
    msg = str(exc.value)
    assert fragment in msg and "FILTER" in msg and "[HDU 0]" in msg
    assert inputs.raw.path in msg and exc.value.keyword == "FILTER"
    _roundtrip(exc.value)


def test_band_check_accepts_all_des_bands(inputs):
    for b, f in (("g", "g DECam SDSS c0001"), ("Y", "Y DECam c0005"), ("z", "z DECam SDSS c0004")):
        hdr = fits.Header({"BAND": b, "FILTER": f})
        assert check_band(replace(inputs.exposure, filter=f, band=b, header=hdr)) == b


@pytest.mark.parametrize("kind", ["bias", "flat", "bpm"])
def test_missing_calibration(inputs, kind):
    config = SEConfig(required_calibrations=("bias", "flat", "bpm"))
    with pytest.raises(MissingFileError) as exc:
        process_ccd(replace(inputs, **{kind: None}), config=config)
    assert f"no {kind} calibration" in str(exc.value) and inputs.raw.path in str(exc.value)
    _roundtrip(exc.value)


def test_missing_crosstalk_source(sim_night, sim_ccd_inputs):
    _, truth = sim_night
    # template CCD 17 needs amp 24A, which the raw file does not hold
    with pytest.raises(MissingCCDError) as exc:
        process_ccd(sim_ccd_inputs(truth.template_expnums[0], 17))
    assert "24" in str(exc.value)
    _roundtrip(exc.value)


def test_too_few_reference_stars_raise_astrometry_error(inputs):
    """Without the sparse-field fallbacks, 5 Gaia stars are too few for the polynomial fit: an
    AstrometryError with the numbers (with them, the default, tests/se/test_process_sparse.py:
    a shift-only refinement, flagged)."""
    few = inputs.refcat[np.argsort(np.asarray(inputs.refcat["phot_g_mean_mag"]))[:5]]
    with pytest.raises(AstrometryError) as exc:
        process_ccd(replace(inputs, refcat=few), config=SEConfig(sparse_fallbacks=False))
    assert exc.value.n_refs == 5
    _roundtrip(exc.value)


def test_cloudy_exposure_fails_qc_with_reason(inputs):
    """2 mag of cloud (all light x 0.16): processed, but the QC fails, naming the zeropoint."""
    pix = inputs.raw.pixels.copy()
    for amp in inputs.raw.amps.values():
        over = float(np.median(amp.overscan))
        sl = amp.data_section.slices
        pix[sl] = np.round(over + (pix[sl] - over) * 10 ** (-0.8))
    res = process_ccd(_with_pixels(inputs, pix))
    assert not res.qc.passed
    assert any("below nominal" in r and "clouds" in r for r in res.qc.reasons), res.qc.reasons
    assert res.qc.metrics.zp_offset < -1.5
    assert res.header["QCPASS"] is False


def test_initial_wcs_needs_a_pointing(inputs):
    with pytest.raises(HeaderError) as exc:
        initial_wcs_for(inputs.raw, replace(inputs.exposure, ra_deg=None))
    assert "TELRA" in str(exc.value)
