"""Issue 10 case 5: every value written into the HTCondor submit and DAG files is quoted by
HTCondor's rules. The files are read back here as condor_submit and DAGMan read them (DAG
``VARS`` backslash escapes, macro substitution with ``$(DOLLAR)``, the ``arguments`` and
``environment`` new syntax) and must give back exactly the hostile values, as single
arguments; new lines are refused before anything is written."""

from __future__ import annotations

import re

import pytest

from desgw.engine.condor import CondorValueError, condor_argument, write_condor_dag
from desgw.engine.graph import Task, TaskGraph
from desgw.io.settings import load_settings
from desgw.workflow.dagmaker_rc import parse_dagmaker_rc

ARGS = {"band": "i", "nite": 20170817, "rnum": 4, "pnum": 7, "cache": "scratch",
        "schema": "gw"}
SEARCH, TEMPLATE = 668443, 668400
HOSTILE_VERSION = "gw13 --out X -O"


def split_new_syntax(text: str) -> list[str]:
    """Arguments from the inside of an HTCondor new-syntax ``"..."`` string."""
    out: list[str] = []
    cur: list[str] = []
    have = quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':  # inside the outer double quotes, "" is one literal "
            assert text[i + 1:i + 2] == '"', f"lone double quote in {text!r}"
            cur.append('"')
            have = True
            i += 2
            continue
        if ch == "'":
            if quoted and text[i + 1:i + 2] == "'":
                cur.append("'")
                i += 2
                continue
            quoted = not quoted
            have = True
        elif ch.isspace() and not quoted:
            if have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    assert not quoted, f"unterminated single quote in {text!r}"
    if have:
        out.append("".join(cur))
    return out


def submit_value(sub: str, key: str) -> str:
    (line,) = [ln for ln in sub.splitlines() if ln.startswith(f"{key} = ")]
    value = line.split(" = ", 1)[1]
    assert value.startswith('"') and value.endswith('"')
    return value[1:-1]


def dag_vars(dag: str, node: str) -> dict[str, str]:
    (line,) = [ln for ln in dag.splitlines() if ln.startswith(f"VARS {node} ")]
    pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[len(f"VARS {node} "):])
    return {k: re.sub(r"\\(.)", r"\1", v) for k, v in pairs}


def expand(template: str, variables: dict[str, str]) -> str:
    text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), template)
    return text.replace("$(DOLLAR)", "$")


def _graph(version: str, snstar: str) -> TaskGraph:
    tasks = (
        Task(f"se-{SEARCH}-33", "se", SEARCH, 33, (), {**ARGS, "extra_opts": ["-Y"]}),
        Task(f"diff-{SEARCH}-33", "diff", SEARCH, 33, (f"se-{SEARCH}-33",),
             {**ARGS, "season": 67, "version": version, "templates": [TEMPLATE],
              "template_ccds": {str(TEMPLATE): [33]}, "snstar": snstar, "fakes": False}),
    )
    return TaskGraph(tasks, {"search": {"expnum": SEARCH}})


def test_rc_value_and_hostile_paths_stay_single_values(tmp_path):
    config = parse_dagmaker_rc(f'DIFFIMG_EUPS_VERSION="{HOSTILE_VERSION}"\n', "dagmaker.rc")
    assert config.diffimg_eups_version == HOSTILE_VERSION
    out_root = tmp_path / "it's a \"dir\" $(HOME) $$x"
    snstar = "SNSTAR 'x' \"y\" $(z).LIST"
    settings = load_settings(raw_dir=tmp_path / "raw dir", calib_dir=tmp_path / "calib",
                             refcat_dir=tmp_path / "refcat", out_root=out_root, environ={},
                             cwd=tmp_path)
    export = write_condor_dag(_graph(config.diffimg_eups_version, snstar), tmp_path / "dag",
                              settings=settings, executable="/opt/desgw/bin/desgw")
    dag = export.dag.read_text()
    sub = export.submit_files["diff"].read_text()
    argv = split_new_syntax(expand(submit_value(sub, "arguments"),
                                   dag_vars(dag, f"diff_{SEARCH}_33")))
    assert argv[0] == "sediff" and argv[argv.index("-v") + 1] == HOSTILE_VERSION
    assert "--out" not in argv and "-O" not in argv  # the rc value added no option
    assert argv[argv.index("-T") + 1] == snstar
    assert argv[argv.index("-E") + 1] == str(SEARCH) and "--no-fakes" in argv
    env = split_new_syntax(expand(submit_value(sub, "environment"), {}))
    assert env == [f"DESGW_RAW_DIR={tmp_path / 'raw dir'}", f"DESGW_CALIB_DIR={tmp_path / 'calib'}",
                   f"DESGW_REFCAT={tmp_path / 'refcat'}", f"DESGW_OUT={out_root}"]
    se_argv = split_new_syntax(expand(submit_value(export.submit_files["se"].read_text(),
                                                   "arguments"),
                                      dag_vars(dag, f"se_{SEARCH}_33")))
    assert se_argv[:3] == ["se", "-E", str(SEARCH)] and se_argv[-1] == "-Y"
    # every line of the files is one key (no injected executable/arguments lines)
    keys = [ln.split(" = ", 1)[0] for ln in sub.splitlines() if ln and not ln.startswith("#")]
    assert keys.count("executable") == 1 and keys.count("arguments") == 1
    assert keys.count("environment") == 1


@pytest.mark.parametrize("where", ["out_root", "version", "snstar"])
def test_new_lines_are_refused_and_nothing_is_written(tmp_path, where):
    evil = "x\nexecutable = /bin/sh\narguments = -c id"
    out_root = tmp_path / (evil if where == "out_root" else "out")
    settings = load_settings(raw_dir=tmp_path / "raw", calib_dir=tmp_path / "calib",
                             refcat_dir=tmp_path / "refcat", out_root=out_root, environ={},
                             cwd=tmp_path)
    graph = _graph(evil if where == "version" else "gw8",
                   evil if where == "snstar" else "SNSTAR.LIST")
    with pytest.raises(CondorValueError, match="new line"):
        write_condor_dag(graph, tmp_path / "dag", settings=settings, executable="/bin/desgw")
    assert not (tmp_path / "dag").exists()


def test_condor_argument_rules():
    assert condor_argument("28") == "28"
    assert condor_argument("") == "''"
    assert condor_argument("a b") == "'a b'"
    assert condor_argument("it's") == "'it''s'"
    assert condor_argument('say "hi"') == "'say \"\"hi\"\"'"
    assert condor_argument("$(HOME)") == "$(DOLLAR)(HOME)"
    for text in ["a b", "it's", 'say "hi"', "", "x $(y) 'z'"]:
        assert split_new_syntax(expand(condor_argument(text), {})) == [text]
