import numpy as np

from desgw.instrument import align_source, crosstalk_terms, get_ccd, source_ccds, terms_for_victim


def test_file_parsed_completely():
    terms = crosstalk_terms()
    assert len(terms) == 249
    t = terms[0]
    assert (t.victim_ccd, t.victim_amp, t.source_ccd, t.source_amp) == (25, "B", 25, "A")
    assert t.coeff == 1.34e-04 and t.src_nl == 4.078154e04


def test_signal_linear_then_continuous():
    t = crosstalk_terms()[0]
    s = np.array([0.0, 1000.0, t.src_nl - 1e-3, t.src_nl + 1e-3, 60000.0], dtype=np.float32)
    out = t.signal(s)
    np.testing.assert_allclose(out[:2], t.coeff * s[:2], rtol=1e-6)
    assert abs(out[3] - out[2]) < 1e-2  # continuous at the onset of non-linearity
    assert out[4] != np.float32(t.coeff * 60000.0)  # non-linear branch used


def test_inter_ccd_sources():
    assert 25 in source_ccds(26) and 26 in source_ccds(26)
    assert all(t.victim_ccd == 26 for t in terms_for_victim(26))


def test_align_source_flips_opposite_readout():
    ccd = get_ccd(25)
    a, b = ccd.amps["A"], ccd.amps["B"]
    pix = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(align_source(pix, a, b), pix[:, ::-1])
    np.testing.assert_array_equal(align_source(pix, a, a), pix)
