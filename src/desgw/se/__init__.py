"""desgw.se: single-epoch processing, raw CCD -> calibrated image, catalog, WCS, PSF,
zeropoint, QC: pure functions on arrays composed by :func:`process_ccd`.

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.se`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "AstrometryError",
    "CCDInputs",
    "CCDResult",
    "PSFFitError",
    "PhotometricCalibrationError",
    "SEConfig",
    "assess_quality",
    "compute_qc_metrics",
    "detect_sources",
    "detrend_ccd",
    "estimate_background",
    "fit_psf",
    "measure_sources",
    "process_ccd",
    "run_expcalib",
    "solve_wcs",
]

_LAZY: dict[str, str] = {
    "SEConfig": "process",
    "CCDInputs": "process",
    "CCDResult": "process",
    "process_ccd": "process",
    "detrend_ccd": "detrend",
    "estimate_background": "background",
    "detect_sources": "detect",
    "measure_sources": "measure",
    "solve_wcs": "astrometry",
    "fit_psf": "psf",
    "PhotometricCalibrationError": "photocal",
    "AstrometryError": "astrometry",
    "PSFFitError": "psf",
    "run_expcalib": "expcalib",
    "assess_quality": "quality",
    "compute_qc_metrics": "quality",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
