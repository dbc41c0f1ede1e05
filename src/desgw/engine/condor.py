"""HTCondor DAG export of a task graph (the original ``desgw_pipeline_EXPNUM.dag``).

:func:`write_condor_dag` writes, in one folder:

* ``desgw_pipeline_{EXPNUM}.dag``: one DAGMan node per task (template SE nodes first; they
  have no parents, so DAGMan runs them in parallel, as the original's template jobs),
  ``VARS`` with the task's arguments, ``RETRY`` lines and the ``PARENT ... CHILD`` edges of
  the graph;
* ``se.sub``, ``expcalib.sub``, ``diff.sub``: one submit description per task kind, each
  calling the ``desgw`` command with the original SEdiff letters:

  - ``se``: ``desgw se -E -r -p -n -b -d -m -S -c CCD -s [-t]`` (SE of one CCD);
  - ``expcalib``: ``desgw se ... -c CCDS -j -s [-t]`` (calibration, corners, quality and
    database records of the exposure from the CCD products: the original ``-j``);
  - ``diff``: ``desgw sediff -E -r -p -n -b -S -c CCD -d -m -v VERSION -s [-C] [-F] [-T -V]
    --templates LIST`` (its SE and calibration are found done, so it runs the difference
    imaging of the CCD);

  with ``request_cpus = 1``, ``request_memory = 3584`` (MB: the 3.5 GB the original
  budgeted), ``request_disk`` and a 5 hour lifetime (``periodic_remove``);
* ``logs/``: the jobs' stdout/stderr and the DAG's user log.

Every value written into these files is quoted by HTCondor's rules, so no path, rc value or
option can add a command or an argument: a job argument that holds white space or a quote is
put in single quotes (``'`` doubled, ``"`` doubled: the "new syntax" of ``arguments``), the
environment values likewise (``environment = "NAME='value' ..."``), ``$`` becomes
``$(DOLLAR)`` (no macro expansion of a value), and the DAG's ``VARS`` values escape the
backslash and ``"`` with a backslash. A value with a new line (or another control character) cannot be
written safely and raises :class:`CondorValueError`.

The jobs find their inputs through ``DESGW_RAW_DIR``, ``DESGW_CALIB_DIR``, ``DESGW_REFCAT`` and
``DESGW_OUT`` set in the submit files from the settings. The database URL is *not* written
to any file (it may hold a password): the jobs take ``DESGW_DB_URL`` (and ``DESGW_CONFIG``)
from the environment of ``condor_submit_dag`` (``getenv``).

``SEARCH_OPTS``/``TEMP_OPTS`` of the DAGMaker configuration: ``-Y`` and ``-O`` are passed on
to the search (diff) and template (SE) jobs; other letters are already encoded in the graph
(template mode, calibration, CCDs) and are left out with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from desgw.engine.graph import Task, TaskGraph
from desgw.errors import DesgwInputError
from desgw.io.atomic import atomic_write_text
from desgw.io.settings import Settings

__all__ = [
    "LIFETIME_S",
    "REQUEST_DISK",
    "REQUEST_MEMORY_MB",
    "CondorExport",
    "CondorValueError",
    "condor_argument",
    "condor_env_value",
    "dag_node_name",
    "desgw_executable",
    "write_condor_dag",
]

log = logging.getLogger(__name__)

#: Memory per job (MB): the original's 3.5 GB budget.
REQUEST_MEMORY_MB = 3584
#: Scratch disk per job (one CCD's products and temporaries).
REQUEST_DISK = "8GB"
#: Longest a job may run (s): the original's 5 hour lifetime.
LIFETIME_S = 5 * 3600

_PASS_ON_OPTS = ("-Y", "-O")


@dataclass(frozen=True)
class CondorExport:
    """The files written by :func:`write_condor_dag`.

    Attributes
    ----------
    dag : Path
        The DAG file (submit it with ``condor_submit_dag``).
    submit_files : dict of str to Path
        Submit description per task kind.
    log_dir : Path
        Folder of the job logs.
    n_nodes : int
        DAG nodes (= tasks).
    """

    dag: Path
    submit_files: dict[str, Path]
    log_dir: Path
    n_nodes: int


def dag_node_name(task_id: str) -> str:
    """DAGMan node name of a task (``se-880001-28`` -> ``se_880001_28``)."""
    return task_id.replace("-", "_")


def desgw_executable() -> str:
    """Absolute path of the ``desgw`` command of this installation (or ``desgw``)."""
    here = Path(sys.executable).parent / "desgw"
    if here.is_file():
        return str(here)
    found = shutil.which("desgw")
    return found if found else "desgw"


def _passed_on(opts: Sequence[str], what: str) -> list[str]:
    kept = [o for o in opts if o in _PASS_ON_OPTS]
    dropped = [o for o in opts if o not in _PASS_ON_OPTS]
    if dropped:
        log.warning("%s: options %s are encoded in the task graph or not known to the jobs; "
                    "left out of the HTCondor jobs", what, dropped)
    return kept


class CondorValueError(DesgwInputError):
    """A value (a path, an rc setting, an option) that cannot be written into an HTCondor
    submit or DAG file: it holds a new line or another control character."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEEDS_QUOTES = re.compile(r"[\s'\"]")


def _one_line(value: object, what: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise CondorValueError(None, None, f"{what} {text!r} holds a new line or another "
                               "control character; it cannot be written into an HTCondor "
                               "file")
    return text.replace("$", "$(DOLLAR)")


def condor_argument(value: object, what: str = "job argument") -> str:
    """One job argument in HTCondor's ``arguments`` new syntax: as it is when it has no white
    space or quote, else in single quotes with ``'`` and ``"`` doubled; ``$`` as
    ``$(DOLLAR)``.

    Raises
    ------
    CondorValueError
        The value holds a new line or another control character.
    """
    text = _one_line(value, what)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return "'" + text.replace("'", "''").replace('"', '""') + "'"


def condor_env_value(value: object, what: str = "environment value") -> str:
    """An ``environment`` value in HTCondor's new syntax: single-quoted, ``'`` and ``"``
    doubled, ``$`` as ``$(DOLLAR)``.

    Raises
    ------
    CondorValueError
        The value holds a new line or another control character.
    """
    text = _one_line(value, what)
    return "'" + text.replace("'", "''").replace('"', '""') + "'"


def _quote_var(value: str) -> str:
    """A DAG ``VARS`` value (without its surrounding double quotes)."""
    if _CONTROL.search(value):
        raise CondorValueError(None, None, f"DAG variable value {value!r} holds a new line or "
                               "another control character")
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _node_vars(task: Task, has_calib: bool) -> dict[str, str]:
    """The DAG variables of a task's node: each an argument (or several, space-separated)
    already quoted for the submit file's ``arguments``."""
    a = task.args

    def arg(value: object, name: str) -> str:
        return condor_argument(value, f"{task.id}: {name}")

    def args(values: Sequence[object], name: str) -> str:
        return " ".join(arg(x, name) for x in values)

    v = {"expnum": arg(task.expnum, "expnum"), "rnum": arg(a["rnum"], "rnum"),
         "pnum": arg(a["pnum"], "pnum"), "nite": arg(a["nite"], "nite"),
         "band": arg(a["band"], "band"), "cache": arg(a["cache"], "cache"),
         "schema": arg(a["schema"], "schema"),
         # -t: template; --instcal: a CP InstCal exposure (SE and its calibration)
         "tflag": " ".join(f for f, on in (("-t", a.get("template")),
                                           ("--instcal", a.get("instcal") and task.kind != "diff"))
                           if on)}
    if task.kind == "se":
        v["ccd"] = arg(task.ccd, "ccd")
        v["extra"] = args(_passed_on(a.get("extra_opts", []), "TEMP_OPTS"), "TEMP_OPTS")
    elif task.kind == "expcalib":
        v["ccds"] = arg(",".join(str(c) for c in a["ccds"]), "ccds")
    else:
        extra = _passed_on(a.get("extra_opts", []), "SEARCH_OPTS")
        if has_calib:
            extra.append("-C")
        if not a.get("fakes", True):
            extra.append("--no-fakes")
        if a.get("full_copy"):
            extra.append("-F")
        if a.get("snstar"):
            extra += ["-T", str(a["snstar"])]
        if a.get("snveto"):
            extra += ["-V", str(a["snveto"])]
        v.update(ccd=arg(task.ccd, "ccd"), season=arg(a["season"], "season"),
                 version=arg(a["version"], "version"),
                 templates=arg(",".join(str(e) for e in a["templates"]), "templates"),
                 extra=args(extra, "SEARCH_OPTS"))
    return v


_ARGUMENTS = {
    "se": ("se -E $(expnum) -r $(rnum) -p $(pnum) -n $(nite) -b $(band) -d $(cache) "
           "-m $(schema) -c $(ccd) -s $(tflag) $(extra)"),
    "expcalib": ("se -E $(expnum) -r $(rnum) -p $(pnum) -n $(nite) -b $(band) -d $(cache) "
                 "-m $(schema) -c $(ccds) -j -s $(tflag)"),
    "diff": ("sediff -E $(expnum) -r $(rnum) -p $(pnum) -n $(nite) -b $(band) -S $(season) "
             "-c $(ccd) -d $(cache) -m $(schema) -v $(version) -s --templates $(templates) "
             "$(extra)"),
}


def _submit_text(kind: str, executable: str, settings: Settings, log_dir: Path,
                 request_memory_mb: int, request_disk: str, lifetime_s: int) -> str:
    env = " ".join(f"{name}={condor_env_value(value, name)}" for name, value in (
        ("DESGW_RAW_DIR", settings.raw_dir), ("DESGW_CALIB_DIR", settings.calib_dir),
        ("DESGW_REFCAT", settings.refcat_dir), ("DESGW_OUT", settings.out_root)))
    logs = _one_line(log_dir, "log folder")
    return "\n".join([
        f"# desgw {kind} job (written by desgw dagmaker)",
        "universe = vanilla",
        f"executable = {_one_line(executable, 'executable')}",
        f"arguments = \"{_ARGUMENTS[kind]}\"",
        f"environment = \"{env}\"",
        "getenv = DESGW_DB_URL, DESGW_CONFIG",
        "request_cpus = 1",
        f"request_memory = {int(request_memory_mb)}",
        f"request_disk = {request_disk}",
        (f"periodic_remove = (JobStatus == 2) && ((time() - EnteredCurrentStatus) > "
         f"{int(lifetime_s)})"),
        f"output = {logs}/$(JOB).out",
        f"error = {logs}/$(JOB).err",
        f"log = {logs}/desgw_pipeline.log",
        "queue",
        "",
    ])


def write_condor_dag(graph: TaskGraph, directory: str | os.PathLike[str], *,
                     settings: Settings, search_expnum: int | None = None,
                     executable: str | None = None, retries: int = 2,
                     request_memory_mb: int = REQUEST_MEMORY_MB,
                     request_disk: str = REQUEST_DISK, lifetime_s: int = LIFETIME_S
                     ) -> CondorExport:
    """Write the HTCondor DAG and submit files of ``graph`` (see the module docstring).

    Parameters
    ----------
    graph : TaskGraph
    directory : path
        Output folder (created).
    settings : Settings
        Folders the jobs use (the database URL is not written).
    search_expnum : int, optional
        Exposure number in the DAG file name (default: the graph's search exposure).
    executable : str, optional
        The ``desgw`` command (default :func:`desgw_executable`).
    retries : int
        DAGMan ``RETRY`` count of every node.
    request_memory_mb, request_disk, lifetime_s
        Job resources.

    Returns
    -------
    CondorExport

    Raises
    ------
    CondorValueError
        A value (a folder of the settings, an argument of a task, the executable) holds a new
        line or another control character, or the output folder's path holds white space.
    """
    out = Path(directory).absolute()
    if _CONTROL.search(str(out)) or re.search(r"\s", str(out)):
        raise CondorValueError(out, None, "the HTCondor folder's path holds white space or a "
                               "control character (DAGMan JOB lines cannot quote it)")
    log_dir = out / "logs"
    if search_expnum is None:
        search_expnum = int(graph.meta.get("search", {}).get("expnum", 0)) or \
            min((t.expnum for t in graph.of_kind("diff")), default=graph.tasks[0].expnum)
    exe = executable or desgw_executable()
    kinds = sorted({t.kind for t in graph.tasks})
    # every text is made (and every value checked) before anything is written
    submit_texts = {kind: _submit_text(kind, exe, settings, log_dir, request_memory_mb,
                                       request_disk, lifetime_s) for kind in kinds}
    submit_files = {kind: out / f"{kind}.sub" for kind in kinds}
    calibrated = {t.expnum for t in graph.of_kind("expcalib")}
    # template SE nodes first (they start at once, in parallel), then the search's
    order = sorted(graph.tasks, key=lambda t: (t.kind != "se" or not t.args.get("template"),
                                               graph.tasks.index(t)))
    lines = [f"# desgw pipeline of search exposure {search_expnum}: {len(graph)} nodes",
             f"# submit with: condor_submit_dag {out}/desgw_pipeline_{search_expnum}.dag", ""]
    for t in order:
        node = dag_node_name(t.id)
        lines.append(f"JOB {node} {submit_files[t.kind]}")
        values = _node_vars(t, t.expnum in calibrated)
        lines.append(f"VARS {node} " + " ".join(f'{k}="{_quote_var(v)}"'
                                                 for k, v in values.items()))
        if retries > 0:
            lines.append(f"RETRY {node} {int(retries)}")
    lines.append("")
    for t in order:
        if t.deps:
            parents = " ".join(dag_node_name(d) for d in t.deps)
            lines.append(f"PARENT {parents} CHILD {dag_node_name(t.id)}")
    log_dir.mkdir(parents=True, exist_ok=True)
    for kind, text in submit_texts.items():
        atomic_write_text(submit_files[kind], text)
    dag = atomic_write_text(out / f"desgw_pipeline_{search_expnum}.dag", "\n".join(lines) + "\n")
    log.info("wrote %s (%d nodes) and %s", dag, len(graph),
             ", ".join(p.name for p in submit_files.values()))
    return CondorExport(dag=dag, submit_files=submit_files, log_dir=log_dir, n_nodes=len(graph))
