"""The verdict of a pipeline run (the exit status of `desgw sediff` and `desgw run`): a
photometric calibration that failed only for lack of stars, while everything depending on it
succeeded, is DEGRADED (:func:`degraded_calibrations`, the run's report and summary JSON) with
a warning and the run is ok; any other failure, or a dependent that did not succeed, is not."""

from __future__ import annotations

import pytest

from desgw.engine.graph import Task, TaskGraph
from desgw.engine.run import RunReport
from desgw.engine.tasks import TaskResult
from desgw.workflow.sediff import SEdiffReport
from desgw.workflow.tasks import degraded_calibrations

REASON = "expcalib: PhotometricCalibrationError: exposure 7 band z: only 0 of 1 matched stars"


def _report(*, calib_only: bool = True, diff_status: str = "done",
            template_calib_status: str = "done") -> SEdiffReport:
    tasks = [Task("se-7-20", "se", 7, 20), Task("expcalib-7", "expcalib", 7, None, ("se-7-20",)),
             Task("se-5-4", "se", 5, 4), Task("expcalib-5", "expcalib", 5, None, ("se-5-4",)),
             Task("diff-7-20", "diff", 7, 20, ("expcalib-7", "expcalib-5"))]
    graph = TaskGraph(tuple(tasks), meta={"templates": [{"expnum": 5, "ccds": [4]}]})
    status = {"se-7-20": "done", "se-5-4": "done", "expcalib-7": "failed",
              "expcalib-5": template_calib_status, "diff-7-20": diff_status}
    results = {}
    for t in graph.tasks:
        s = status[t.id]
        detail = {"calibration_only": True} if t.id == "expcalib-7" and calib_only else {}
        results[t.id] = TaskResult(t.id, t.kind, t.expnum, t.ccd, s,
                                   reason=REASON if s == "failed" else None, detail=detail)
    run = RunReport(results=results, wall_seconds=1.0, run_id="r1",
                    degraded=degraded_calibrations(graph, results))
    assert run.to_dict()["degraded"] == list(run.degraded)
    return SEdiffReport(7, graph, run)


def test_a_calibration_short_of_stars_with_its_diff_done_is_degraded_not_failed():
    rep = _report()
    assert rep.degraded == ("expcalib-7",) and rep.ok
    text = "\n".join(rep.lines())
    assert f"DEGRADED expcalib-7: {REASON}" in text and "FAILED" not in text
    assert "photometric calibration of exposure 7 degraded (too few stars)" in text
    assert "ZPMODE" in text
    assert "DEGRADED expcalib-7" in "\n".join(rep.run.lines())  # `desgw run` prints it too
    assert rep.run.ok  # and exits 0


@pytest.mark.parametrize("kwargs", [
    {"calib_only": False},  # another cause (the corners or the exposure QC are missing)
    {"diff_status": "failed"},  # a dependent did not succeed
    {"diff_status": "blocked"},
])
def test_otherwise_the_failure_stands(kwargs):
    rep = _report(**kwargs)
    assert rep.degraded == () and not rep.ok
    assert "  FAILED expcalib-7: " in "\n".join(rep.lines())


def test_a_degraded_calibration_does_not_hide_another_failure():
    rep = _report(template_calib_status="failed")  # expcalib-5 failed, not calibration-only
    assert rep.degraded == ("expcalib-7",) and not rep.ok
