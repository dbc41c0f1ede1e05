"""desgw.workflow.dagmaker_rc: dagmaker.rc and TOML parsing, validation, errors."""

from __future__ import annotations

import logging
import pickle

import pytest

from desgw.errors import DesgwInputError, MissingFileError
from desgw.workflow.dagmaker_rc import (DagmakerConfig, DagmakerConfigError,
                                        format_dagmaker_rc, parse_dagmaker_rc,
                                        read_dagmaker_config)

# An rc in the style the original's users wrote (grid keys included).
ORIGINAL_STYLE_RC = """\
RNUM=4
PNUM=7
SEASON=67
DIFFIMG_EUPS_VERSION=gw8
WRITEDB=on
RM_MYTEMP=true
JOBSUB_OPTS="--memory=2500MB --disk=70GB --cpu=1 --expected-lifetime=5h"
JOBSUB_OPTS_SE="--memory=3600MB --disk=100GB --cpu=1 --expected-lifetime=5h"

RESOURCES="DEDICATED,OPPORTUNISTIC,OFFSITE"
IGNORECALIB=true
DESTCACHE=persistent

# optional additional arguments to SEdiff.sh, off by default
SEARCH_OPTS="-C"
TEMP_OPTS="-C -t"

### SCHEMA is the naming schema for the output files, not the DB schema.
SCHEMA="gw"
#t_eff cuts for each filter
TEFF_CUT_g=0.2
TEFF_CUT_i=0.3
TEFF_CUT_r=0.3
TEFF_CUT_Y=0.2
TEFF_CUT_z=0.3
TEFF_CUT_u=0.2
TWINDOW=15
#MIN_NITE=20170831
export MAX_NITE=20170901   # no templates after this night
SKIP_INCOMPLETE_SE=false
DO_HEADER_CHECK=1
"""


def test_original_style_rc(caplog):
    caplog.set_level(logging.INFO)
    c = parse_dagmaker_rc(ORIGINAL_STYLE_RC, "dagmaker.rc")
    assert (c.rnum, c.pnum, c.season) == (4, 7, 67)
    assert c.rpnum == "r4p7" and c.procnum == "dp67"
    assert c.diffimg_eups_version == "gw8"
    assert c.write_db is True and c.rm_mytemp is True
    assert c.destcache == "persistent" and c.schema == "gw"
    assert c.search_opts == ("-C",) and c.temp_opts == ("-C", "-t")
    assert [c.teff_cut(b) for b in "girYzu"] == [0.2, 0.3, 0.3, 0.2, 0.3, 0.2]
    assert c.twindow == 15.0
    assert c.min_nite == 20100101 and c.max_nite == 20170901
    assert c.skip_incomplete_se is False and c.do_header_check is True
    assert "JOBSUB_OPTS is a grid-submission setting" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_defaults_are_the_originals():
    c = parse_dagmaker_rc("# nothing set\n\n")
    assert c == DagmakerConfig()
    assert (c.rnum, c.pnum, c.season) == (2, 1, 11)
    assert c.twindow == 30.0 and c.destcache == "persistent" and c.schema == "gw"
    assert c.write_db is False and c.min_nite == 20100101 and c.max_nite == 99999999
    assert all(c.teff_cut(b) == 0.0 for b in "grizYu")
    assert c.accept_unknown_teff is True
    with pytest.raises(ValueError, match="band 'VR'"):
        c.teff_cut("VR")


def test_quotes_comments_and_unknown_keys(caplog):
    text = ("RNUM='5'\n"
            "  PNUM=\"03\"  # leading zero as the original wrote it\n"
            "export SEASON=dp120\n"
            "TWINDOW=7.5\n"
            "SEARCH_OPTS='-C -O'\n"
            "FANCY_NEW_KEY=1\n")
    caplog.set_level(logging.WARNING)
    c = parse_dagmaker_rc(text, "x.rc")
    assert (c.rnum, c.pnum, c.season, c.twindow) == (5, 3, 120, 7.5)
    assert c.search_opts == ("-C", "-O")
    assert "x.rc: line 6: unknown key FANCY_NEW_KEY ignored" in caplog.text


@pytest.mark.parametrize("text, line, key, problem", [
    ("RNUM=4\nTWINDOW=abc\n", 2, "TWINDOW", "'abc' is not a number"),
    ("RNUM=four\n", 1, "RNUM", "not an integer"),
    ("\n\nWRITEDB=maybe\n", 3, "WRITEDB", "not a boolean"),
    ("DESTCACHE=tape\n", 1, "DESTCACHE", "scratch or persistent"),
    ("SCHEMA=dbschema\n", 1, "SCHEMA", "gw or wsdiff"),
    ("TEFF_CUT_r=-0.1\n", 1, "TEFF_CUT_r", ">= 0"),
    ("TWINDOW=-3\n", 1, "TWINDOW", ">= 0"),
    ("MIN_NITE=2017083\n", 1, "MIN_NITE", "YYYYMMDD"),
    ("MIN_NITE=20170901\nMAX_NITE=20170801\n", 2, "MAX_NITE", "after MAX_NITE"),
    ("SEASON=0\n", 1, "SEASON", ">= 1"),
    ("RNUM=4\nTEMP_OPTS=-C -t\n", 2, "TEMP_OPTS", "unquoted spaces"),
    ("SEARCH_OPTS=\"$OPTS\"\n", 1, "SEARCH_OPTS", "shell expansion"),
    ("SEARCH_OPTS=\"-C\n", 1, "SEARCH_OPTS", "cannot parse"),
    ("RNUM = 4\n", 1, None, "expected KEY=value"),
])
def test_bad_rc_values_name_file_line_and_key(text, line, key, problem):
    with pytest.raises(DagmakerConfigError) as info:
        parse_dagmaker_rc(text, "/cfg/dagmaker.rc")
    err = info.value
    assert isinstance(err, DesgwInputError)
    assert err.path == "/cfg/dagmaker.rc" and err.line == line and err.key == key
    assert problem in str(err)
    assert str(err).startswith(f"/cfg/dagmaker.rc: line {line}: ")
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.line == line


def test_toml_equivalent(tmp_path):
    path = tmp_path / "dagmaker.toml"
    path.write_text("""
[dagmaker]
RNUM = 4
PNUM = 7
SEASON = 67
WRITEDB = true
SEARCH_OPTS = ["-C"]
TEMP_OPTS = "-C -t"
TEFF_CUT_g = 0.2
teff_cut_Y = 0.25
TWINDOW = 15
MAX_NITE = 20170901
DO_HEADER_CHECK = 0
""")
    c = read_dagmaker_config(path)
    assert (c.rnum, c.pnum, c.season, c.write_db) == (4, 7, 67, True)
    assert c.search_opts == ("-C",) and c.temp_opts == ("-C", "-t")
    assert c.teff_cut("g") == 0.2 and c.teff_cut("Y") == 0.25 and c.twindow == 15.0
    assert c.max_nite == 20170901 and c.do_header_check is False


def test_toml_errors(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[dagmaker]\nRNUM = 4\nTWINDOW = \"two weeks\"\n")
    with pytest.raises(DagmakerConfigError, match=r"bad.toml: line 3: key TWINDOW: .*number"):
        read_dagmaker_config(path)
    path.write_text("[dagmaker]\nWRITEDB = 2\n")
    with pytest.raises(DagmakerConfigError, match="line 2: key WRITEDB"):
        read_dagmaker_config(path)
    path.write_text("[other]\nRNUM = 4\n")
    with pytest.raises(DagmakerConfigError, match=r"no \[dagmaker\] table"):
        read_dagmaker_config(path)
    path.write_text("[dagmaker\n")
    with pytest.raises(DagmakerConfigError, match="invalid TOML"):
        read_dagmaker_config(path)


def test_read_rc_file_and_round_trip(tmp_path):
    path = tmp_path / "dagmaker.rc"
    path.write_text(ORIGINAL_STYLE_RC)
    c = read_dagmaker_config(path)
    again = tmp_path / "again.rc"
    again.write_text(format_dagmaker_rc(c))
    assert read_dagmaker_config(again) == c
    with pytest.raises(MissingFileError):
        read_dagmaker_config(tmp_path / "none.rc")


def test_direct_construction_is_validated():
    with pytest.raises(DagmakerConfigError, match="key TWINDOW"):
        DagmakerConfig(twindow=float("nan"))
    assert pickle.loads(pickle.dumps(DagmakerConfig(rnum=9))).rnum == 9
