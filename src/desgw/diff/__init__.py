"""desgw.diff: difference imaging of a search CCD against templates (resample, coadd,
PSF-matched ZOGY subtraction, detection, measurement, vetoes, real/bogus, fakes), composed by
:func:`difference_ccd`.

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.diff`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "CCDProducts",
    "DiffConfig",
    "DiffError",
    "DiffResult",
    "RealBogusModelError",
    "coadd_templates",
    "detect_transients",
    "difference_ccd",
    "inject_fakes",
    "make_star_catalog",
    "make_veto_table",
    "measure_candidates",
    "resample_to_grid",
    "subtract",
]

_LAZY: dict[str, str] = {
    "DiffConfig": "pipeline",
    "DiffError": "pipeline",
    "DiffResult": "pipeline",
    "CCDProducts": "pipeline",
    "difference_ccd": "pipeline",
    "subtract": "subtract",
    "coadd_templates": "coadd",
    "resample_to_grid": "resample",
    "detect_transients": "detect",
    "measure_candidates": "measure",
    "inject_fakes": "fakes",
    "make_star_catalog": "starcat",
    "make_veto_table": "starcat",
    "RealBogusModelError": "realbogus",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
