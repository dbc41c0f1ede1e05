"""desgw.workflow: planning (DAGMaker rules, overlaps, template selection) and the runners
that compose io + se + diff + db into tasks (SE of an exposure, difference imaging of a search
CCD, SEdiff, the demo, the live ``watch`` service).

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.workflow`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "RUNNERS",
    "CCDSummary",
    "CCDTask",
    "DagmakerConfig",
    "DiffSummary",
    "DiffTask",
    "SERunReport",
    "calibrate_exposure",
    "ccd_overlaps",
    "make_dag",
    "makestarcat_main",
    "read_dagmaker_config",
    "run_ccd_task",
    "run_demo",
    "run_diff_ccd",
    "run_pipeline",
    "run_se_exposure",
    "run_sediff",
    "run_watch",
    "select_templates",
]

_LAZY: dict[str, str] = {
    "run_se_exposure": "se_exposure",
    "run_ccd_task": "se_ccd",
    "CCDTask": "se_types",
    "CCDSummary": "se_types",
    "SERunReport": "se_types",
    "calibrate_exposure": "se_calib",
    "DiffTask": "diff_ccd",
    "DiffSummary": "diff_ccd",
    "run_diff_ccd": "diff_ccd",
    "run_sediff": "sediff",
    "make_dag": "dagmaker",
    "DagmakerConfig": "dagmaker_rc",
    "read_dagmaker_config": "dagmaker_rc",
    "select_templates": "templates",
    "ccd_overlaps": "templates",
    "makestarcat_main": "makestarcat",
    "RUNNERS": "tasks",
    "run_pipeline": "tasks",
    "run_demo": "demo",
    "run_watch": "watch",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
