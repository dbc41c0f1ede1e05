"""Issue 10 case 7: malformed CCD lists are usage errors (exit 2) in every command that takes
one, no list can exhaust memory, and unwritable outputs and undecodable text inputs give one
line naming the file and exit 3 instead of a traceback."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.instrument import parse_ccd_list

BAD_LISTS = ["abc", "-5", "28,../x", "62-1", "", "  ", "28,,29", "0", "63", "1-1000000000",
             "1e3", "28;29"]


def test_parse_ccd_list():
    assert parse_ccd_list("28,35") == [28, 35]
    assert parse_ccd_list(" 1-3, 9 ,2") == [1, 2, 3, 9]
    assert parse_ccd_list("62") == [62] and parse_ccd_list("all") == list(range(1, 63))
    for text in BAD_LISTS:
        with pytest.raises(ValueError):
            parse_ccd_list(text)
    with pytest.raises(ValueError, match="descending"):
        parse_ccd_list("62-1")
    with pytest.raises(ValueError, match="CCD 1000000000"):
        parse_ccd_list("1-1000000000")


def _commands(tmp_path):
    out = str(tmp_path / "out")
    return {
        "sim": ["sim", out, "--ccds"],
        "se": ["se", "-E", "1", "-r", "1", "-p", "1", "--out", out, "-c"],
        "sediff": ["sediff", "-E", "1", "-r", "1", "-p", "1", "-S", "1", "--out", out, "-c"],
        "dagmaker": ["dagmaker", "1", "--out", out, "-c"],
        "demo": ["demo", out, "--ccds"],
        "expcalib": ["expcalib", "--expnum", "1", "--reqnum", "1", "--attnum", "1", "--ccd"],
    }


@pytest.mark.parametrize("text", BAD_LISTS)
@pytest.mark.parametrize("command", ["sim", "se", "sediff", "dagmaker", "demo", "expcalib"])
def test_bad_ccd_list_is_a_usage_error(command, text, tmp_path):
    args = _commands(tmp_path)[command]
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, [*args, text])
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Invalid value for --ccds" in res.output and "Traceback" not in res.output
    assert time.perf_counter() - t0 < 20.0  # no 10^9-element list was built
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line_exit_3(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    res = CliRunner().invoke(main, ["sim", str(blocker / "night"), "--ccds", "28"])
    assert res.exit_code == 3, (res.output, res.exception)
    assert str(blocker) in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_undecodable_rc_blacklist_and_graph_are_bad_input(tmp_path):
    binary = b"\xff\xfe\x00RNUM=4\n\x89PNG\r\n"
    rc = tmp_path / "dagmaker.rc"
    rc.write_bytes(binary)
    black = tmp_path / "blacklist.txt"
    black.write_bytes(binary)
    graph = tmp_path / "graph.json"
    graph.write_bytes(binary)
    base = ["dagmaker", "1", "--out", str(tmp_path / "out")]
    for args, path in (([*base, "--rc", str(rc)], rc),
                       ([*base, "--blacklist", str(black)], black),
                       (["run", str(graph), "--out", str(tmp_path / "out")], graph)):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 3, (args, res.output, res.exception)
        assert str(path) in res.output and "not UTF-8" in res.output


def test_graph_with_missing_args_is_bad_input(tmp_path):
    graph = {"format": 1, "meta": {}, "tasks": [
        {"id": "se-1-28", "kind": "se", "expnum": 1, "ccd": 28, "deps": [],
         "args": {"band": "r", "nite": 20190101, "rnum": 1, "pnum": 1, "cache": "scratch",
                  "schema": "gw"}},
        {"id": "diff-1-28", "kind": "diff", "expnum": 1, "ccd": 28, "deps": ["se-1-28"],
         "args": {"band": "r"}}]}
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    res = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 3, (res.output, res.exception)
    assert str(path) in res.output and "diff-1-28" in res.output and "season" in res.output
    assert not (tmp_path / "out").exists()
