"""desgw.io: all file reading and writing of the package, and where every file lives.

Modules
-------
atomic         atomic_write_path / atomic_write_text / atomic_write_bytes
sections       FITS section strings ``[x1:x2,y1:y2]`` <-> Section
raw            raw DECam exposures (.fits / .fits.fz): RawExposure, read_exposure_header,
               write_raw_exposure
calib          calibration images (bias, flat, starflat, bpm, linearity): write_calib,
               CalibFile, read_calib
calib_cache    decoded calibration and raw planes kept uncompressed for later CCD tasks
instcal        NOIRLab Community Pipeline InstCal products: read_instcal
psfex          PSFEx models: read_psfex
products       immask images (SCI/MSK/WGT) and FITS/CSV/Parquet tables
fitscodec      tile-compressed image planes written with cfitsio (the product codecs)
prepared_template  the prepared (sky-subtracted, fast to read) form of a template CCD
naming         product file names and the exposure directory layout
product_paths  the product paths of a CCD (SE and difference imaging), find_exposure_dir
completion     which products mark an engine task as finished
corners        the ``{expnum}.out`` CCD corners file
star_lists     the SNSTAR / SNVETO list files
zp_tables      the Zero / allZP / _ZP CSV files of the photometric calibration
settings       where inputs and outputs live (Settings, load_settings)
demo_files     the folder layout of ``desgw demo``
landing        when a raw file arriving in a watched folder is complete (``desgw watch``)

The exceptions (DesgwError, DesgwInputError and its subclasses) live in :mod:`desgw.errors`.

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.io`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "CalibFile",
    "LandingWatch",
    "RawExposure",
    "Settings",
    "atomic_write_bytes",
    "atomic_write_path",
    "atomic_write_text",
    "ccd_product_paths",
    "diff_product_paths",
    "find_exposure_dir",
    "fits_structure_complete",
    "load_settings",
    "read_calib",
    "read_corners_out",
    "read_expcalib_csv",
    "read_exposure_header",
    "read_fits_table",
    "read_immask",
    "read_instcal",
    "read_star_list",
    "read_veto_list",
    "write_calib",
    "write_corners_out",
    "write_fits_table",
    "write_immask",
    "write_raw_exposure",
    "write_star_list",
    "write_veto_list",
]

_LAZY: dict[str, str] = {
    "atomic_write_bytes": "atomic",
    "atomic_write_path": "atomic",
    "atomic_write_text": "atomic",
    "RawExposure": "raw",
    "read_exposure_header": "raw",
    "write_raw_exposure": "raw",
    "CalibFile": "calib",
    "read_calib": "calib",
    "write_calib": "calib",
    "read_instcal": "instcal",
    "read_immask": "products",
    "write_immask": "products",
    "read_fits_table": "products",
    "write_fits_table": "products",
    "ccd_product_paths": "product_paths",
    "diff_product_paths": "product_paths",
    "find_exposure_dir": "product_paths",
    "read_corners_out": "corners",
    "write_corners_out": "corners",
    "read_star_list": "star_lists",
    "read_veto_list": "star_lists",
    "write_star_list": "star_lists",
    "write_veto_list": "star_lists",
    "read_expcalib_csv": "zp_tables",
    "Settings": "settings",
    "load_settings": "settings",
    "LandingWatch": "landing",
    "fits_structure_complete": "landing",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
