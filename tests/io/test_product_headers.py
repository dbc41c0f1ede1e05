"""Product headers built from the cards' text in one parse (immask_sci_header,
merge_header_cards, the difference image's header) are the headers astropy's card-by-card
Header.update gave: same keywords, values, comments and order, on SIP and TPV WCSs, raw
headers with structural, WCS, DATE-OBS/MJD-OBS and commentary cards, and the cases the fast
rule leaves to astropy."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from desgw.io._fitsutil import clean_header
from desgw.io.products import (
    _wcs_cards,
    immask_sci_header,
    merge_header_cards,
    read_immask,
    write_immask,
)

warnings.filterwarnings("ignore", category=fits.verify.VerifyWarning)


def _reference(header, wcs):
    """immask_sci_header as astropy's Header operations compute it (the former code)."""
    sci_hdr = clean_header(header)
    for card in _wcs_cards(sci_hdr).cards:
        del sci_hdr[card.keyword]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sci_hdr.update(wcs.to_header(relax=True))
    return sci_hdr


def _sip_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [30.0005, -29.9175]
    w.wcs.crpix = [1024.5, 2048.5]
    w.wcs.cd = [[3.2e-8, 7.32e-5], [-7.32e-5, 3.2e-8]]
    w.wcs.dateobs = "2019-08-15T02:24:00"
    w.wcs.mjdobs = 58710.1
    from astropy.wcs import Sip

    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[0, 2], a[2, 0], b[1, 1] = 1.05e-8, 3.3e-8, 2.3e-8
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def _raw_header(w):
    h = fits.Header()
    h["XTENSION"] = "IMAGE"
    h["BITPIX"] = -32
    h["NAXIS"] = 2
    h["NAXIS1"] = 2048
    h["NAXIS2"] = 4096
    h["EXPNUM"] = (880001, "exposure number")
    h["DATE-OBS"] = ("2019-08-15T02:24:00.000", "start of the exposure")
    h["MJD-OBS"] = (58710.10000000, "MJD of the start")
    h["CTYPE1"] = ("RA---TPV", "an old WCS that the fitted one replaces")
    h["CD1_1"] = 1.0
    h["PV1_7"] = 0.01
    h["GAINA"] = (4.01, "[e/adu]")
    h.add_comment("a comment card")
    h.add_comment("another")
    h.add_history("processed")
    h["MAGZERO"] = (31.49, "AB zeropoint")
    h["LONGSTR"] = "x" * 100  # a CONTINUE card
    return h


@pytest.mark.parametrize("with_comments", [True, False])
def test_immask_sci_header_equals_astropys_update(tmp_path, with_comments):
    w = _sip_wcs()
    h = _raw_header(w)
    if not with_comments:
        h.remove("COMMENT", remove_all=True)
        h.remove("HISTORY", remove_all=True)
    want = _reference(h, w)
    got = immask_sci_header(h, w)
    assert got.tostring() == want.tostring()
    assert list(got.keys()) == list(want.keys())
    assert got["MJD-OBS"] == 58710.1 and got["CTYPE1"] == "RA---TAN-SIP" and "PV1_7" not in got
    # and what the file holds (read back) has the same keywords as before
    rng = np.random.default_rng(1)
    sci = rng.normal(0, 1, (32, 24)).astype(np.float32)
    write_immask(tmp_path / "i.fits.fz", sci, np.zeros(sci.shape, np.int32),
                 np.ones_like(sci), header=h, wcs=w)
    back = read_immask(tmp_path / "i.fits.fz").header
    assert [k for k in back if k != "EXTNAME"] == list(want.keys())


def test_tpv_header_of_a_real_cp_image():
    real = sorted(Path("/work/shared/realdata/legacypipe/testcase6/images").rglob("*_ooi_*.fits"))
    if not real:
        pytest.skip("real CP image not available")
    with fits.open(real[0]) as hdul:
        h = next(x.header for x in hdul if x.header.get("CTYPE1"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(h, relax=True)
    assert immask_sci_header(h, w).tostring() == _reference(h, w).tostring()


def test_cases_left_to_astropy():
    w = _sip_wcs()
    wh = w.to_header(relax=True)
    blank_last = [fits.Card("EXPNUM", 1), fits.Card("", "")]
    assert merge_header_cards(blank_last, wh) is None
    twice = [fits.Card("EXPNUM", 1), fits.Card("EXPNUM", 2)]
    assert merge_header_cards(twice, wh) is None
    commentary = fits.Header([("CRPIX1", 3.0), ("HISTORY", "from the fit")])
    assert merge_header_cards([fits.Card("EXPNUM", 1)], commentary) is None
    # and immask_sci_header still gives astropy's answer for them
    h = fits.Header([("EXPNUM", 1), ("EXPNUM", 2), ("CRVAL1", 3.0)])
    assert immask_sci_header(h, w).tostring() == _reference(h, w).tostring()


def test_difference_image_header_equals_astropys_update():
    from desgw.diff.pipeline_products import _image_header

    w = _sip_wcs()
    base = fits.Header([("EXPNUM", 880001, "search exposure number"),
                        ("MAGZERO", 31.49, "AB zeropoint"), ("BUNIT", "electrons")])
    want = base.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want.update(w.to_header(relax=True))
    assert _image_header(base, w).tostring() == want.tostring()
    assert _image_header(None, None).tostring() == fits.Header().tostring()
