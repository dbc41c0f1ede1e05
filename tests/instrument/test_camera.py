import numpy as np
import pytest

from desgw.instrument import (
    CCD_SHAPE, DEAD_CCDS, DEFAULT_CCDNUMS, RAW_SHAPE, UNSTABLE_AMPS, ccds, defect_boxes, defect_mask,
    get_ccd,
)


def test_62_science_ccds_and_default_list():
    all_ccds = ccds()
    assert [c.ccdnum for c in all_ccds] == list(range(1, 63))
    assert DEAD_CCDS == (2, 61)
    assert len(DEFAULT_CCDNUMS) == 60 and 2 not in DEFAULT_CCDNUMS and 61 not in DEFAULT_CCDNUMS
    assert get_ccd(2).dead and get_ccd(61).dead and not get_ccd(28).dead
    assert (31, "A") in UNSTABLE_AMPS
    names = {c.detpos for c in all_ccds}
    assert names == {f"S{i}" for i in range(1, 32)} | {f"N{i}" for i in range(1, 32)}


def test_lookup_by_name_and_number():
    assert get_ccd("n4").ccdnum == 35
    assert get_ccd(1).detpos == "S29"
    with pytest.raises(KeyError, match="CCDNUM 63"):
        get_ccd(63)
    with pytest.raises(KeyError, match="X1"):
        get_ccd("X1")


@pytest.mark.parametrize("ccdnum", [1, 28, 35, 62])
def test_amp_layout_tiles_the_raw_hdu(ccdnum):
    ccd = get_ccd(ccdnum)
    covered = np.zeros(RAW_SHAPE, dtype=int)
    trimmed = np.zeros(CCD_SHAPE, dtype=int)
    for amp in ccd.amps.values():
        assert amp.raw_data.shape == (4096, 1024)
        assert amp.raw_overscan.shape == (4096, 50)
        assert amp.raw_prescan.shape == (4096, 6)
        assert amp.raw_parallel_overscan.shape == (50, 1024)
        for box in (amp.raw_data, amp.raw_overscan, amp.raw_prescan, amp.raw_parallel_overscan):
            covered[box.slices] += 1
        trimmed[amp.trimmed.slices] += 1
        # trimmed image is the raw data region without flips
        assert amp.trimmed.x0 == amp.raw_data.x0 - ccd.raw_datasec.x0
    assert covered.max() == 1 and trimmed.min() == 1 and trimmed.max() == 1
    assert ccd.raw_datasec.shape == CCD_SHAPE


def test_amp_sides_follow_real_decam():
    # N chips: amp A on the left of the raw HDU; S chips: amp A on the right (LSST camGeom)
    assert get_ccd("N4").amps["A"].raw_data.x0 < get_ccd("N4").amps["B"].raw_data.x0
    assert get_ccd("S4").amps["A"].raw_data.x0 > get_ccd("S4").amps["B"].raw_data.x0
    # parallel overscan above the data for N, below for S
    assert get_ccd("N4").amps["A"].raw_parallel_overscan.y0 == 4096
    assert get_ccd("S4").amps["A"].raw_parallel_overscan.y0 == 0


def test_gains_saturation_read_noise_from_segment_file():
    a = get_ccd(1).amps["A"]
    assert (a.gain, a.saturation_adu, a.read_noise_e) == (4.039, 38652.0, 6.139)
    gains = np.array([amp.gain for c in ccds() for amp in c.amps.values()])
    assert 3.0 < gains.min() and gains.max() < 6.5


def test_defects_inside_ccd_and_sparse():
    for ccdnum in (1, 35, 62):
        boxes = defect_boxes(ccdnum)
        assert boxes.shape[1] == 4 and len(boxes) > 0
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= CCD_SHAPE[1]).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= CCD_SHAPE[0]).all()
        frac = defect_mask(ccdnum).mean()
        assert 0 < frac < 0.1


def test_defects_by_date():
    from datetime import datetime

    early = defect_boxes(35, datetime(2012, 1, 1))
    late = defect_boxes(35, datetime(2020, 1, 1))
    assert len(early) > 0 and len(late) > 0


def test_camgeom_boxes_file_equals_the_fits_tables():
    """The compact package file the camera loads holds exactly the boxes of the 62 camGeom
    FITS tables it was made from (a re-made or edited table must be re-packed)."""
    from importlib import resources

    from astropy.io import fits

    from desgw.instrument.camera import CAMGEOM_BOX_COLUMNS, CAMGEOM_BOXES_FILE, _camgeom_boxes

    data = resources.files("desgw.instrument").joinpath("data")
    packed = _camgeom_boxes()
    expected = {}
    for path in sorted(data.joinpath("camgeom").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".fits"):
            continue
        with path.open("rb") as fh, fits.open(fh) as hdul:
            for row in hdul[1].data:
                expected[(path.name[:-5], str(row["name"]).strip())] = {
                    c: int(row[c]) for c in CAMGEOM_BOX_COLUMNS}
    assert len(expected) == 124, CAMGEOM_BOXES_FILE
    assert packed == expected
    # and the camera built from it has the raw layout of the header convention
    for ccd in ccds():
        a, b = ccd.amps["A"], ccd.amps["B"]
        assert (a.raw_data.x1 - a.raw_data.x0, a.raw_data.y1 - a.raw_data.y0) == (1024, 4096)
        assert a.raw_overscan.x1 - a.raw_overscan.x0 == 50
        assert sorted((a.trimmed.x0, a.trimmed.x1, b.trimmed.x0, b.trimmed.x1)) == \
            [0, 1024, 1024, 2048]
