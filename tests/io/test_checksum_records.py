"""Checksum records of product files hashed as they are written (desgw.io.checksums): the
record a writer's noted digest gives equals a fresh SHA-256 of the file on disk, is used only
while the file is unchanged; verification reads a file once per process while its identity
(device, inode, size, modification and change times) is unchanged and older than the read
by the racy margin, and catches every rewrite, truncation, touch and replacement."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import desgw.io.checksums as checksums
from desgw.io.atomic import atomic_write_bytes, atomic_write_text
from desgw.io.checksums import file_record, record_problem
from desgw.io.products import write_fits_table, write_immask, write_parquet


def _fresh(path):
    data = path.read_bytes()
    return {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _no_read(monkeypatch):
    def refuse(p):
        raise AssertionError(f"{p} was read back")
    monkeypatch.setattr(checksums, "_hash_file", refuse)


def _products(tmp_path):
    rng = np.random.default_rng(5)
    sci = rng.normal(100, 5, (64, 48)).astype(np.float32)
    wgt = np.full_like(sci, 0.04)
    msk = (rng.random(sci.shape) < 0.01).astype(np.int32) * 2
    paths = [write_immask(tmp_path / "D1_immask.fits.fz", sci, msk, wgt,
                          header=fits.Header([("EXPNUM", 1)]))]
    cat = Table({"NUMBER": np.arange(20, dtype=np.int32), "FLUX": rng.normal(0, 1, 20),
                 "flag": rng.random(20) < 0.5})
    paths.append(write_fits_table(tmp_path / "D1_fullcat.fits", cat))
    paths.append(write_parquet(tmp_path / "D1_cands.parquet", cat))
    paths.append(atomic_write_text(tmp_path / "D1_eff.json", json.dumps({"m50": 23.1})))
    hdul = fits.HDUList([fits.PrimaryHDU(np.ones((5, 5), np.float32))])
    buf = io.BytesIO()
    hdul.writeto(buf)
    paths.append(atomic_write_bytes(tmp_path / "D1_psfmodel.fits", buf.getvalue(), fsync=False))
    return paths


def test_written_records_equal_a_fresh_sha256(tmp_path, monkeypatch):
    paths = _products(tmp_path)
    with monkeypatch.context() as m:
        _no_read(m)  # every record comes from the bytes hashed while writing
        records = [file_record(p) for p in paths]
    for p, rec in zip(paths, records):
        assert rec == _fresh(p)
        assert record_problem(tmp_path, rec) is None
        assert file_record(p) == rec  # the noted digest was used once; now read: same


def test_a_changed_file_is_read_and_verification_always_reads(tmp_path, monkeypatch):
    (path,) = _products(tmp_path)[:1]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # same size, other content, written in place
    with path.open("r+b") as fh:
        fh.write(bytes(data))
    st = path.stat()  # a change one clock tick later (within one tick see checksums' docstring)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    rec = file_record(path)  # the file changed after its writer noted the digest: read
    assert rec == _fresh(path)
    good = atomic_write_bytes(tmp_path / "x.bin", b"abc" * 1000)
    rec = file_record(good)
    with good.open("r+b") as fh:
        fh.write(b"abd")  # same size, within the same clock tick as likely as not
    assert record_problem(tmp_path, rec) == "x.bin: checksum differs from the marker's"


def test_failed_write_notes_nothing(tmp_path):
    before = dict(checksums._WRITTEN)

    def blocks():
        yield b"first"
        raise RuntimeError("encoder failed")

    from desgw.io.atomic import atomic_write_blocks

    with pytest.raises(RuntimeError):
        atomic_write_blocks(tmp_path / "y.bin", blocks())
    assert not (tmp_path / "y.bin").exists() and list(tmp_path.iterdir()) == []
    assert checksums._WRITTEN == before


# ----------------------------------------------------------------------------- verified cache
def _counting(monkeypatch):
    reads: list[str] = []
    real = checksums._hash_file

    def counted(p):
        reads.append(p.name)
        return real(p)
    monkeypatch.setattr(checksums, "_hash_file", counted)
    return reads


def _settled(monkeypatch, seconds=5.0):
    """Verifications from now on happen ``seconds`` after the files' last change (the clock
    moved forward), so their digests are trusted while the files keep their identity."""
    real = checksums._now_ns
    monkeypatch.setattr(checksums, "_now_ns", lambda: real() + int(seconds * 1e9))


def _record(path):
    data = path.read_bytes()
    return {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_unchanged_file_is_read_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "t_immask.fits.fz"
    path.write_bytes(os.urandom(200_000))
    rec = _record(path)
    reads = _counting(monkeypatch)
    _settled(monkeypatch)
    for _ in range(4):  # the four search CCDs that overlap this template CCD
        assert record_problem(tmp_path, rec) is None
    assert reads == [path.name]
    # a hard link changes the inode's change time (link count): read again, then kept
    os.link(path, tmp_path / "alias.fits.fz")
    assert record_problem(tmp_path, {**rec, "name": "alias.fits.fz"}) is None
    assert record_problem(tmp_path, rec) is None
    assert len(reads) == 2


def test_recent_file_is_read_every_time(tmp_path, monkeypatch):
    """A file changed within the racy margin of its hashing is not trusted: read again."""
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"abc" * 1000)
    rec = _record(path)
    reads = _counting(monkeypatch)
    for _ in range(3):
        assert record_problem(tmp_path, rec) is None
    assert len(reads) == 3


def test_cached_file_rewritten_same_size_and_mtime_is_caught(tmp_path, monkeypatch):
    path = tmp_path / "t_psfmodel.fits"
    path.write_bytes(os.urandom(50_000))
    rec = _record(path)
    reads = _counting(monkeypatch)
    _settled(monkeypatch)
    assert record_problem(tmp_path, rec) is None
    assert record_problem(tmp_path, rec) is None and len(reads) == 1  # kept
    st = path.stat()
    time.sleep(0.05)  # past the kernel's coarse change-time tick
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    with path.open("r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # modification time put back
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (st.st_ino, st.st_size, st.st_mtime_ns)
    assert record_problem(tmp_path, rec) == f"{path.name}: checksum differs from the marker's"
    assert len(reads) == 2


def test_cached_file_truncated_touched_or_replaced_is_caught(tmp_path, monkeypatch):
    path = tmp_path / "t_fullcat.fits"
    payload = os.urandom(30_000)
    path.write_bytes(payload)
    rec = _record(path)
    _settled(monkeypatch)
    assert record_problem(tmp_path, rec) is None
    with path.open("r+b") as fh:
        fh.truncate(20_000)
    assert record_problem(tmp_path, rec) == (f"{path.name}: 20000 bytes, the marker says "
                                             "30000")
    # put back, then replaced by a rename with other bytes of the same size
    path.write_bytes(payload)
    assert record_problem(tmp_path, rec) is None
    other = tmp_path / "other.tmp"
    other.write_bytes(bytes(b ^ 1 for b in payload[:10]) + payload[10:])
    os.replace(other, path)
    assert record_problem(tmp_path, rec) == f"{path.name}: checksum differs from the marker's"
    # a touch of a good file makes it read again (and it matches)
    path.write_bytes(payload)
    assert record_problem(tmp_path, rec) is None
    reads = _counting(monkeypatch)
    os.utime(path)
    assert record_problem(tmp_path, rec) is None and reads == [path.name]
