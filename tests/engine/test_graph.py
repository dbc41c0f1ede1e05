"""TaskGraph: validation, topological order, JSON round trip."""

import json

import pytest

from desgw.engine.graph import (
    GraphError,
    Task,
    TaskGraph,
    diff_task_id,
    expcalib_task_id,
    se_task_id,
)

ARGS = {"band": "r", "nite": 20190814, "rnum": 2, "pnum": 1, "cache": "scratch", "schema": "gw"}


def _graph():
    # deliberately listed out of order: the diff first, its dependencies after
    diff = Task(diff_task_id(880001, 28), "diff", 880001, 28,
                (se_task_id(880001, 28), expcalib_task_id(880001), se_task_id(664075, 22),
                 expcalib_task_id(664075)),
                {**ARGS, "season": 67, "templates": [664075],
                 "template_ccds": {"664075": [22]}, "fakes": True})
    return TaskGraph((
        diff,
        Task(expcalib_task_id(664075), "expcalib", 664075, None, (se_task_id(664075, 22),),
             {**ARGS, "ccds": (22,), "template": True}),
        Task(se_task_id(664075, 22), "se", 664075, 22, (), {**ARGS, "template": True}),
        Task(expcalib_task_id(880001), "expcalib", 880001, None, (se_task_id(880001, 28),),
             {**ARGS, "ccds": [28]}),
        Task(se_task_id(880001, 28), "se", 880001, 28, (), ARGS),
    ), {"search": {"expnum": 880001}, "overlaps": {"28": {"664075": [22]}}})


def test_topological_order_puts_every_task_after_its_dependencies():
    g = _graph()
    position = {t.id: i for i, t in enumerate(g.tasks)}
    for t in g.tasks:
        assert all(position[d] < position[t.id] for d in t.deps), t.id
    assert g.tasks[-1].id == "diff-880001-28"
    # stable: among independent tasks the input order is kept
    assert [t.id for t in g.tasks][:2] == ["se-664075-22", "expcalib-664075"]
    assert g.counts() == {"se": 2, "expcalib": 2, "diff": 1}
    assert g.ancestors("diff-880001-28") == {"se-880001-28", "expcalib-880001",
                                             "se-664075-22", "expcalib-664075"}
    assert [t.id for t in g.dependents("se-664075-22")] == ["expcalib-664075",
                                                            "diff-880001-28"]
    sub = g.subgraph(["expcalib-664075"])
    assert [t.id for t in sub.tasks] == ["se-664075-22", "expcalib-664075"]


def test_json_round_trip(tmp_path):
    g = _graph()
    text = g.to_json()
    back = TaskGraph.from_json(text)
    assert back == g
    assert back.to_json() == text
    assert back.task("expcalib-664075").args["ccds"] == [22]  # tuples become JSON lists
    path = g.write(tmp_path / "graph.json")
    assert TaskGraph.read(path) == g
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and len(doc["tasks"]) == 5


@pytest.mark.parametrize("tasks, words", [
    ((Task("a", "se", 1, 1), Task("a", "se", 1, 2)), "appears twice"),
    ((Task("a", "se", 1, 1, ("b",)),), "unknown tasks"),
    ((Task("a", "se", 1, 1, ("b",)), Task("b", "expcalib", 1, None, ("c",)),
      Task("c", "diff", 1, 1, ("a",))), "cycle"),
])
def test_invalid_graphs_are_refused(tasks, words):
    with pytest.raises(GraphError, match=words):
        TaskGraph(tasks)


def test_invalid_tasks_and_files_are_refused(tmp_path):
    with pytest.raises(GraphError, match="kind"):
        Task("x", "swarp", 1, 1)
    with pytest.raises(GraphError, match="white space"):
        Task("se 1", "se", 1, 1)
    with pytest.raises(GraphError, match="itself"):
        Task("a", "se", 1, 1, ("a",))
    with pytest.raises(GraphError, match="not a JSON value"):
        Task("a", "se", 1, 1, (), {"path": tmp_path})
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 99, "tasks": []}')
    with pytest.raises(GraphError, match="format"):
        TaskGraph.read(bad)
    bad.write_text("{not json")
    with pytest.raises(GraphError, match="not JSON"):
        TaskGraph.read(bad)
