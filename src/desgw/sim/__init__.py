"""desgw.sim: a DECam sky, survey and instrument simulator with truth.

Sky and survey side: `make_scene` (stars with Gaia truth, galaxies, variables, transients, an
asteroid), `plan_night` (template and search exposures), `simulate_night` (renders and writes a
night: raw files, calibrations, Gaia catalogue, truth) and `load_truth` (reads the truth back).
Heavy modules are imported lazily so ``import desgw.sim`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute

from .model import OBJECT_KINDS, ExposureSpec, ObjectTable, PSFField, SimSwitches

__all__ = [
    "OBJECT_KINDS", "ExposureSpec", "ObjectTable", "PSFField", "SimSwitches",
    "Scene", "SceneConfig", "make_scene", "SurveyConfig", "plan_night",
    "NightSummary", "simulate_night", "Truth", "load_truth",
]

_LAZY = {
    "Scene": "scene", "SceneConfig": "scene", "make_scene": "scene",
    "SurveyConfig": "survey", "plan_night": "survey",
    "NightSummary": "night", "simulate_night": "night",
    "Truth": "truth", "load_truth": "truth",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)
