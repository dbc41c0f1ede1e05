"""Crosstalk correction against the forward model built from desgw.instrument.crosstalk."""

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import MissingCCDError
from desgw.instrument import RAW_SHAPE, align_source, get_ccd, terms_for_victim
from desgw.io.raw import raw_ccd_from_hdu
from desgw.se import maskbits
from desgw.se.crosstalk import correct_crosstalk, needed_sources
from desgw.se.detrend_amps import layouts_for_ccd

VICTIM = 26  # S2: sources 25 (S1), 26 itself and 27 (S3)
LEVEL = {"A": 1500.0, "B": 1700.0}


def _clean_ccd(ccdnum, rng, stars=(), saturate=()):
    """Raw float ADU: overscan level + noise everywhere, sky + Gaussian stars in the data."""
    pix = LEVEL["A"] + rng.normal(0, 1.5, RAW_SHAPE).astype(np.float32)
    truth_sig = {}
    for name, amp in get_ccd(ccdnum).amps.items():
        pix[amp.raw_overscan.slices] += LEVEL[name] - LEVEL["A"]
        d = amp.raw_data.slices
        ny, nx = amp.raw_data.shape
        sig = np.full((ny, nx), 300.0, np.float32)
        yy, xx = np.mgrid[0:ny, 0:nx]
        for (aname, x0, y0, peak, sigma) in stars:
            if aname == name:
                sub = (slice(max(y0 - 60, 0), y0 + 60), slice(max(x0 - 60, 0), x0 + 60))
                r2 = (xx[sub] - x0) ** 2 + (yy[sub] - y0) ** 2
                sig[sub] += peak * np.exp(-0.5 * r2 / sigma**2)
        pix[d] = LEVEL[name] + sig + rng.normal(0, 1.5, (ny, nx))
        if name in saturate:
            pix[d] = np.minimum(pix[d], 65535.0)
        truth_sig[name] = pix[d] - LEVEL[name]
    return pix, truth_sig


def _forward(ccds, signals, victim):
    """Add crosstalk into the victim with the instrument's model and the true levels."""
    out = ccds[victim].copy()
    lay = {(c, a.name): a for c in ccds for a in layouts_for_ccd(c)}
    for t in terms_for_victim(victim):
        src = align_source(signals[t.source_ccd][t.source_amp], lay[(t.source_ccd, t.source_amp)],
                           lay[(victim, t.victim_amp)])
        out[lay[(victim, t.victim_amp)].data.slices] += t.signal(src)
    return out


@pytest.fixture(scope="module")
def exposure():
    rng = np.random.default_rng(42)
    ccds, sigs = {}, {}
    # CCD 26: a saturated star on amp A (recorded values clipped at 65535) and a bright one on B
    ccds[26], sigs[26] = _clean_ccd(26, rng, stars=[("A", 300, 1000, 3e5, 4.0),
                                                     ("B", 700, 3000, 3.0e4, 3.0)],
                                    saturate=("A",))
    ccds[25], sigs[25] = _clean_ccd(25, rng, stars=[("B", 200, 2000, 2.5e4, 6.0)])
    ccds[27], sigs[27] = _clean_ccd(27, rng, stars=[("A", 512, 512, 2.5e4, 6.0)])
    raw26 = _forward(ccds, sigs, 26)
    return ccds, sigs, raw26


def test_needed_sources():
    assert needed_sources(26) == [(25, "A"), (25, "B"), (26, "A"), (26, "B"), (27, "A"), (27, "B")]
    assert all(c in (25, 27) for c, _ in needed_sources(25))


def test_correction_removes_ghosts(exposure):
    ccds, _sigs, raw26 = exposure
    res = correct_crosstalk(raw26, {25: ccds[25], 27: ccds[27]}, 26)
    assert res.pixels.dtype == np.float32 and res.pixels.shape == RAW_SHAPE
    assert res.n_terms == 7
    ghost = raw26 - ccds[26]
    resid = res.pixels - ccds[26]
    # overscan untouched
    for a in layouts_for_ccd(26):
        np.testing.assert_array_equal(res.pixels[a.overscan.slices], raw26[a.overscan.slices])
    strong = np.abs(ghost) > 1.0
    assert strong.sum() > 400 and np.abs(ghost).max() > 20  # ghosts are really there
    rms_after = np.sqrt(np.mean(resid[strong] ** 2))
    assert rms_after < 0.5, rms_after
    assert np.abs(resid).max() < 1.0
    # the ghost of the saturated star in A shows up mirrored in B (opposite readout sides)
    lay = {a.name: a for a in layouts_for_ccd(26)}
    bdata = ghost[lay["B"].data.slices]
    yy, xx = np.nonzero(np.abs(bdata) > 0.5 * np.abs(bdata).max())
    assert abs(yy.mean() - 1000) <= 2 and abs(xx.mean() - (1023 - 300)) <= 2


def test_ssxtalk_marks_pixels_behind_saturated_source(exposure):
    ccds, sigs, raw26 = exposure
    res = correct_crosstalk(raw26, {25: ccds[25], 27: ccds[27]}, 26)
    lay = {a.name: a for a in layouts_for_ccd(26)}
    sat_a = sigs[26]["A"] >= lay["A"].saturation_adu
    assert sat_a.sum() > 50
    flagged_b = res.mask[lay["B"].trimmed.slices] & maskbits.SSXTALK
    # B sees A mirrored in x
    np.testing.assert_array_equal(flagged_b.astype(bool), sat_a[:, ::-1])
    assert not np.any(res.mask[lay["A"].trimmed.slices])


def test_rawccd_input_and_integer_rounding(exposure):
    """A RawCCD built from a header (integer pixels) gives the same correction."""
    ccds, _sigs, raw26 = exposure
    ccd = get_ccd(26)
    h = fits.Header()
    h["CCDNUM"], h["DETPOS"] = 26, ccd.detpos
    for name, amp in ccd.amps.items():
        h[f"DATASEC{name}"] = amp.raw_data.fits_section()
        h[f"BIASSEC{name}"] = amp.raw_overscan.fits_section()
        h[f"GAIN{name}"], h[f"RDNOISE{name}"] = amp.gain, amp.read_noise_e
        h[f"SATURAT{name}"] = amp.saturation_adu
    h["DATASEC"] = ccd.raw_datasec.fits_section()
    raw = raw_ccd_from_hdu(h, np.rint(raw26).astype(np.int32))
    res = correct_crosstalk(raw, {25: ccds[25], 27: ccds[27]})
    ghost = raw26 - ccds[26]
    strong = np.abs(ghost) > 1.0
    resid = res.pixels - ccds[26]
    assert np.sqrt(np.mean(resid[strong] ** 2)) < 0.5  # rounding adds 0.29 ADU rms


def test_missing_source_is_a_clear_error(exposure):
    ccds, _, raw26 = exposure
    with pytest.raises(MissingCCDError, match="source CCD 27"):
        correct_crosstalk(raw26, {25: ccds[25]}, 26)
