"""Tests for desgw.errors, desgw.io.atomic and desgw.io.sections."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from desgw.io.atomic import atomic_write_bytes, atomic_write_path, atomic_write_text, temp_name_for
from desgw.errors import (CorruptFileError, DataTypeError, DesgwError, DesgwInputError,
                             HeaderError, MissingCCDError, MissingFileError)
from desgw.io.sections import Section, format_section, parse_section, section_from_header


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [DesgwInputError, CorruptFileError, MissingCCDError, HeaderError,
                                 DataTypeError, MissingFileError])
def test_error_message_and_pickle(cls):
    err = cls("/data/x.fits.fz", 5, "something is wrong")
    assert str(err) == "/data/x.fits.fz[HDU 5]: something is wrong"
    assert isinstance(err, DesgwError) and isinstance(err, DesgwInputError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.path, back.hdu, back.problem) == ("/data/x.fits.fz", 5, "something is wrong")
    assert str(back) == str(err)


def test_error_without_hdu():
    err = CorruptFileError("a.fits", None, "not a FITS file")
    assert str(err) == "a.fits: not a FITS file"
    err = DataTypeError(None, "N4", "bad")
    assert str(err) == "<no file>[HDU N4]: bad"


def test_error_extra_attributes_pickle():
    err = HeaderError("a.fits", "N4", "missing DATASECA", keyword="DATASECA")
    back = pickle.loads(pickle.dumps(err))
    assert back.keyword == "DATASECA" and back.hdu == "N4"
    err = MissingCCDError("a.fits", None, "no CCD 7", present=[1, 3])
    back = pickle.loads(pickle.dumps(err))
    assert back.present == (1, 3)


# ---------------------------------------------------------------- atomic
def test_temp_name_keeps_suffix(tmp_path):
    tmp = temp_name_for(tmp_path / "D001_x.fits.fz")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".D001_x.tmp") and tmp.name.endswith(".fits.fz")
    assert str(os.getpid()) in tmp.name
    assert temp_name_for(tmp_path / "a.csv").name.endswith(".csv")
    assert temp_name_for(tmp_path / "a.csv") != temp_name_for(tmp_path / "a.csv")


def test_atomic_success_creates_parents(tmp_path):
    final = tmp_path / "sub" / "dir" / "out.txt"
    with atomic_write_path(final) as tmp:
        assert tmp.parent == final.parent
        tmp.write_text("hello")
        assert not final.exists()
    assert final.read_text() == "hello"
    assert os.listdir(final.parent) == ["out.txt"]


def test_atomic_exception_leaves_nothing(tmp_path):
    final = tmp_path / "out.fits"
    with pytest.raises(RuntimeError):
        with atomic_write_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_exception_keeps_old_file(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write_path(final) as tmp:
            tmp.write_text("new")
            raise ValueError
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write_path(tmp_path / "x.txt"):
            pass
    assert os.listdir(tmp_path) == []


def test_atomic_text_and_bytes(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "é\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "é\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]


# ---------------------------------------------------------------- sections
def test_parse_section_and_slices():
    s = parse_section("[1025:2048,1:4096]")
    assert s == Section(1025, 2048, 1, 4096)
    assert s.shape == (4096, 1024)
    a = np.arange(4096 * 2160).reshape(4096, 2160)
    sub = a[s.slices]
    assert sub.shape == s.shape
    assert sub[0, 0] == a[0, 1024] and sub[-1, -1] == a[4095, 2047]
    assert format_section(s) == "[1025:2048,1:4096]"
    assert str(s) == "[1025:2048,1:4096]"
    assert s.fits_in((4146, 2160)) and not s.fits_in((4096, 2000))


def test_parse_section_flipped_and_spaces():
    s = parse_section(" [2048:1, 4096:1] ")
    assert s.flipped_x and s.flipped_y
    assert s.slices == (slice(0, 4096), slice(0, 2048))
    assert format_section((1, 2, 3, 4)) == "[1:2,3:4]"


@pytest.mark.parametrize("bad", ["1:2,3:4", "[1:2]", "[a:2,3:4]", "[0:2,1:4]", "", "[1:2,3:4"])
def test_parse_section_malformed(bad):
    with pytest.raises(HeaderError) as info:
        parse_section(bad, keyword="DATASECA", path="f.fits", hdu=3)
    assert info.value.keyword == "DATASECA"
    assert "DATASECA" in str(info.value) and "f.fits[HDU 3]" in str(info.value)


def test_parse_section_not_string():
    with pytest.raises(HeaderError, match="BIASSECB"):
        parse_section(17, keyword="BIASSECB")


def test_section_from_header_missing():
    from astropy.io import fits
    hdr = fits.Header({"DATASEC": "[1:10,1:20]"})
    assert section_from_header(hdr, "DATASEC").shape == (20, 10)
    with pytest.raises(HeaderError, match="missing header keyword TRIMSEC") as info:
        section_from_header(hdr, "TRIMSEC", path="p.fits", hdu="S1")
    assert info.value.keyword == "TRIMSEC" and info.value.hdu == "S1"


def test_atomic_write_bytes_without_fsync_and_directory_fsync(tmp_path, monkeypatch):
    from desgw.io.atomic import fsync_directory

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    p = atomic_write_bytes(tmp_path / "a.png", b"\x89PNG data", fsync=False)
    assert p.read_bytes() == b"\x89PNG data" and synced == []
    assert [f.name for f in tmp_path.iterdir()] == ["a.png"]   # no temporary left
    atomic_write_bytes(tmp_path / "a.png", b"new")
    assert p.read_bytes() == b"new" and len(synced) == 1        # the default still syncs
    fsync_directory(tmp_path)
    assert len(synced) == 2
    fsync_directory(tmp_path / "missing")                       # nothing to flush: no error
