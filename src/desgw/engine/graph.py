"""The task graph of a DES-GW processing run: per-CCD tasks and their dependencies.

A :class:`TaskGraph` is what ``desgw dagmaker`` writes and ``desgw run`` executes (and what
:mod:`desgw.engine.condor` turns into an HTCondor DAG). Each :class:`Task` has

* ``id``: unique, e.g. ``se-880001-28``, ``expcalib-880001``, ``diff-880001-28``;
* ``kind``: ``"se"`` (single-epoch processing of one CCD), ``"expcalib"`` (photometric
  calibration, exposure quality and database records of one exposure, from its CCD products)
  or ``"diff"`` (difference imaging of one search CCD against its templates);
* ``expnum`` and ``ccd`` (None for exposure-level tasks);
* ``deps``: ids of the tasks that must finish first;
* ``args``: JSON values the task needs (band, nite, rnum, pnum, cache, schema, ...; see
  :mod:`desgw.engine.run` for the keys of each kind).

The graph is validated on construction (unique ids, known kinds, dependencies that exist, no
cycle) and round-trips through JSON (:meth:`TaskGraph.to_json` / :meth:`TaskGraph.from_json`;
format version :data:`GRAPH_FORMAT`). ``meta`` holds free JSON information about how the graph
was made (search exposure, selected and rejected templates, CCD overlaps, configuration).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.atomic import atomic_write_text

__all__ = [
    "GRAPH_FORMAT",
    "TASK_KINDS",
    "GraphError",
    "Task",
    "TaskGraph",
    "diff_task_id",
    "expcalib_task_id",
    "se_task_id",
]

#: Version of the JSON layout written by :meth:`TaskGraph.to_json`.
GRAPH_FORMAT = 1
#: Task kinds, in stage order.
TASK_KINDS: tuple[str, ...] = ("se", "expcalib", "diff")


class GraphError(DesgwInputError):
    """An invalid task graph (duplicate id, unknown kind or dependency, cycle, bad JSON)."""


def se_task_id(expnum: int, ccd: int) -> str:
    """Id of the SE task of one CCD: ``se-{expnum}-{ccd}``."""
    return f"se-{int(expnum)}-{int(ccd)}"


def expcalib_task_id(expnum: int) -> str:
    """Id of the calibration task of one exposure: ``expcalib-{expnum}``."""
    return f"expcalib-{int(expnum)}"


def diff_task_id(expnum: int, ccd: int) -> str:
    """Id of the difference-imaging task of one search CCD: ``diff-{expnum}-{ccd}``."""
    return f"diff-{int(expnum)}-{int(ccd)}"


def _json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples become lists); raise for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, where) for k, v in value.items()}
    raise GraphError(None, None, f"{where}: {type(value).__name__} is not a JSON value")


@dataclass(frozen=True)
class Task:
    """One unit of work (see the module docstring).

    Attributes
    ----------
    id : str
        Unique id (no white space).
    kind : str
        One of :data:`TASK_KINDS`.
    expnum : int
        Exposure number.
    ccd : int or None
        CCD number; None for exposure-level tasks.
    deps : tuple of str
        Ids of the tasks this one needs.
    args : dict
        JSON-serialisable arguments of the task.
    """

    id: str
    kind: str
    expnum: int
    ccd: int | None = None
    deps: tuple[str, ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or any(c.isspace() for c in self.id):
            raise GraphError(None, None, f"task id {self.id!r} must be a non-empty string "
                             "without white space")
        if self.kind not in TASK_KINDS:
            raise GraphError(None, None, f"task {self.id}: kind {self.kind!r} is not one of "
                             f"{TASK_KINDS}")
        object.__setattr__(self, "expnum", int(self.expnum))
        if self.ccd is not None:
            object.__setattr__(self, "ccd", int(self.ccd))
        deps = tuple(str(d) for d in self.deps)
        if len(set(deps)) != len(deps):
            raise GraphError(None, None, f"task {self.id}: a dependency is listed twice")
        if self.id in deps:
            raise GraphError(None, None, f"task {self.id} depends on itself")
        object.__setattr__(self, "deps", deps)
        object.__setattr__(self, "args", _json_value(dict(self.args), f"task {self.id} args"))

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON values."""
        return {"id": self.id, "kind": self.kind, "expnum": self.expnum, "ccd": self.ccd,
                "deps": list(self.deps), "args": dict(self.args)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(id=d["id"], kind=d["kind"], expnum=d["expnum"], ccd=d.get("ccd"),
                       deps=tuple(d.get("deps", ())), args=d.get("args", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(None, None, f"bad task entry {d!r}: {type(exc).__name__}: {exc}"
                             ) from None


@dataclass(frozen=True)
class TaskGraph:
    """A validated, acyclic set of tasks (see the module docstring).

    Attributes
    ----------
    tasks : tuple of Task
        In topological order (every task after its dependencies; ties keep the input order).
    meta : dict
        Free JSON information (search exposure, templates, overlaps, configuration).
    """

    tasks: tuple[Task, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        by_id: dict[str, Task] = {}
        for t in tasks:
            if not isinstance(t, Task):
                raise GraphError(None, None, f"not a Task: {t!r}")
            if t.id in by_id:
                raise GraphError(None, None, f"task id {t.id} appears twice")
            by_id[t.id] = t
        for t in tasks:
            missing = [d for d in t.deps if d not in by_id]
            if missing:
                raise GraphError(None, None, f"task {t.id} depends on unknown tasks {missing}")
        object.__setattr__(self, "tasks", _topological(tasks, by_id))
        object.__setattr__(self, "meta", _json_value(dict(self.meta), "graph meta"))
        object.__setattr__(self, "_by_id", by_id)

    # ------------------------------------------------------------------ look-ups
    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id  # type: ignore[attr-defined]

    def task(self, task_id: str) -> Task:
        """The task with this id (KeyError if none)."""
        return self._by_id[task_id]  # type: ignore[attr-defined]

    def of_kind(self, kind: str) -> tuple[Task, ...]:
        """Tasks of one kind, in graph order."""
        return tuple(t for t in self.tasks if t.kind == kind)

    def dependents(self, task_id: str) -> tuple[Task, ...]:
        """Tasks that list ``task_id`` among their dependencies."""
        return tuple(t for t in self.tasks if task_id in t.deps)

    def ancestors(self, task_id: str) -> frozenset[str]:
        """Ids of every task ``task_id`` depends on, directly or not."""
        seen: set[str] = set()
        stack = list(self.task(task_id).deps)
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(self.task(d).deps)
        return frozenset(seen)

    def subgraph(self, task_ids: Iterable[str]) -> TaskGraph:
        """The graph of ``task_ids`` and everything they depend on."""
        keep: set[str] = set()
        for tid in task_ids:
            keep.add(tid)
            keep |= self.ancestors(tid)
        return TaskGraph(tuple(t for t in self.tasks if t.id in keep), self.meta)

    def counts(self) -> dict[str, int]:
        """Number of tasks per kind (every kind of :data:`TASK_KINDS`)."""
        return {k: sum(1 for t in self.tasks if t.kind == k) for k in TASK_KINDS}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The graph as JSON values."""
        return {"format": GRAPH_FORMAT, "meta": dict(self.meta),
                "tasks": [t.to_dict() for t in self.tasks]}

    def to_json(self, *, indent: int | None = 1) -> str:
        """JSON text of the graph."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> TaskGraph:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, Mapping) or "tasks" not in d:
            raise GraphError(source, None, "not a desgw task graph (no 'tasks')")
        fmt = d.get("format")
        if fmt != GRAPH_FORMAT:
            raise GraphError(source, None, f"task graph format {fmt!r} is not {GRAPH_FORMAT}")
        try:
            return cls(tuple(Task.from_dict(t) for t in d["tasks"]), d.get("meta", {}))
        except GraphError as exc:
            raise GraphError(source, None, exc.problem) from None

    @classmethod
    def from_json(cls, text: str, *, source: str | None = None) -> TaskGraph:
        """Parse :meth:`to_json` text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(source, None, f"not JSON: {exc}") from None
        return cls.from_dict(data, source=source)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically; return the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TaskGraph:
        """Read a graph written by :meth:`write`."""
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(p, None, "task graph file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise GraphError(p, None, f"not UTF-8 text (byte {exc.start}): not a task graph"
                             ) from None
        return cls.from_json(text, source=str(p))


def _topological(tasks: Sequence[Task], by_id: Mapping[str, Task]) -> tuple[Task, ...]:
    """Kahn's algorithm, stable with respect to the input order; raise on a cycle."""
    position = {t.id: i for i, t in enumerate(tasks)}
    waiting = {t.id: len(t.deps) for t in tasks}
    users: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for d in t.deps:
            users[d].append(t.id)
    ready = [position[t.id] for t in tasks if waiting[t.id] == 0]
    heapq.heapify(ready)
    out: list[Task] = []
    while ready:
        t = tasks[heapq.heappop(ready)]
        out.append(t)
        for u in users[t.id]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, position[u])
    if len(out) != len(tasks):
        stuck = sorted(tid for tid, n in waiting.items() if n > 0)
        raise GraphError(None, None, f"the task graph has a cycle among {stuck[:10]}")
    return tuple(out)
