"""Issue 10 case 4: completion markers record the size and checksum of the products they vouch
for, and resume verifies them (a truncated template immask was skipped as done and silently
dropped by the difference imaging downstream)."""

from __future__ import annotations

import json

from desgw.engine.graph import Task
from desgw.engine.run import task_complete
from desgw.io.checksums import file_record, records_problems
from desgw.io.completion import diff_complete, diff_done_path, se_paths
from desgw.io.settings import load_settings

EXPNUM = 770002
ARGS = {"band": "r", "nite": 20190301, "rnum": 2, "pnum": 3, "cache": "scratch",
        "schema": "gw"}


def _se_products(out, ccd):
    """Products of one CCD with a marker as run_ccd_task writes it (records of each file)."""
    paths = se_paths(out, EXPNUM, ccd, ARGS)
    paths.immask.parent.mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(paths.all()[:-1]):
        p.write_bytes(bytes(range(256)) * (40 + k))
    paths.qc.write_text(json.dumps({"products": {
        "immask": file_record(paths.immask), "fullcat": file_record(paths.fullcat),
        "psfmodel": file_record(paths.psfmodel)}}))
    return paths


def test_file_record():
    import hashlib
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.bin"
        p.write_bytes(b"abc" * 1000)
        rec = file_record(p)
        assert rec == {"name": "x.bin", "size": 3000,
                       "sha256": hashlib.sha256(b"abc" * 1000).hexdigest()}
        assert records_problems(d, {"x": rec}) == []
        p.write_bytes(b"abd" * 1000)  # same size, other content
        assert records_problems(d, {"x": rec}) == ["x.bin: checksum differs from the marker's"]


def test_truncated_se_product_is_not_complete(tmp_path):
    out = tmp_path / "out"
    settings = load_settings(raw_dir=tmp_path, calib_dir=tmp_path, refcat_dir=tmp_path,
                             out_root=out, environ={}, cwd=tmp_path)
    task = Task(f"se-{EXPNUM}-28", "se", EXPNUM, 28, (), ARGS)
    paths = _se_products(out, 28)
    assert paths.complete() and task_complete(task, settings)
    data = paths.immask.read_bytes()
    paths.immask.write_bytes(data[: len(data) // 2])  # truncated after the marker
    assert not paths.complete() and not task_complete(task, settings)
    paths.immask.write_bytes(data)
    assert paths.complete()
    with paths.fullcat.open("r+b") as fh:  # one byte changed, same size
        fh.seek(100)
        fh.write(b"\x00")
    assert not paths.complete()


def test_changed_diff_product_is_not_complete(tmp_path):
    args = {**ARGS, "season": 5, "templates": [760001]}
    done = diff_done_path(tmp_path, EXPNUM, 28, args)
    done.parent.mkdir(parents=True, exist_ok=True)
    diff = done.parent / "D_diff.fits.fz"
    diff.write_bytes(b"\x01" * 5000)
    (done.parent / "stamps").mkdir()
    done.write_text(json.dumps({"ok": True, "templates_requested": [760001],
                                "products": {"diff": file_record(diff),
                                             "stamps_png": "stamps"}}))
    assert diff_complete(tmp_path, EXPNUM, 28, args)
    diff.write_bytes(b"\x01" * 4000)
    assert not diff_complete(tmp_path, EXPNUM, 28, args)
    diff.unlink()
    assert not diff_complete(tmp_path, EXPNUM, 28, args)
