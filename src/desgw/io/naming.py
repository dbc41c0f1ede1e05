"""File and directory names of desgw products, in the style of the original DES-GW pipeline.

Per CCD (``R``, ``P`` = processing run and pass numbers, e.g. ``r4p5``):

* ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz`` - science, mask and weight images
* ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_fullcat.fits`` - the object catalog
* ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_psfmodel.fits`` - the PSF model (desgw addition)
* ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_qc.json`` - the CCD's quality record (desgw addition)
* ``Zero_D{expnum:08d}_{ccd:02d}_r{R}p{P}.csv`` - the CCD zeropoint
* ``D{expnum:08d}_{ccd:02d}_r{R}p{P}_ZP.csv`` - the matched-star zeropoint table

Per exposure:

* ``allZP_D{expnum:08d}_r{R}p{P}.csv`` - zeropoints of all CCDs
* ``D{expnum:08d}_{band}_r{R}p{P}_qc.json`` - the exposure's quality record (desgw addition)
* ``{expnum}.out`` - CCD corner coordinates, used to find overlaps
* ``DECam_{expnum:08d}.fits.fz`` - the raw exposure (DESDM name)

Directory: ``{root}/{scratch|persistent}/{gw|wsdiff}/exp/{nite}/{expnum}/``.
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path

from desgw.instrument.bands import validate_band

__all__ = [
    "CACHES",
    "SCHEMAS",
    "ProductName",
    "raw_name",
    "immask_name",
    "fullcat_name",
    "psf_model_name",
    "qc_ccd_name",
    "qc_exposure_name",
    "zero_csv_name",
    "allzp_csv_name",
    "zp_csv_name",
    "corners_out_name",
    "exposure_dir",
    "parse_product_name",
]

#: Valid DESTCACHE values.
CACHES: tuple[str, ...] = ("scratch", "persistent")
#: Valid SCHEMA values.
SCHEMAS: tuple[str, ...] = ("gw", "wsdiff")



def _check_int(name: str, value: int, lo: int, hi: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


def _stem(expnum: int, ccd: int | None, rnum: int, pnum: int, band: str | None) -> str:
    e = _check_int("expnum", expnum, 0, 99_999_999)
    r = _check_int("rnum", rnum, 0, 10**6)
    p = _check_int("pnum", pnum, 0, 10**6)
    parts = [f"D{e:08d}"]
    if band is not None:
        parts.append(validate_band(band, None))
    if ccd is not None:
        parts.append(f"{_check_int('ccd', ccd, 1, 99):02d}")
    parts.append(f"r{r}p{p}")
    return "_".join(parts)


def raw_name(expnum: int) -> str:
    """``DECam_{expnum:08d}.fits.fz``."""
    return f"DECam_{_check_int('expnum', expnum, 0, 99_999_999):08d}.fits.fz"


def immask_name(expnum: int, band: str, ccd: int, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz``."""
    return _stem(expnum, ccd, rnum, pnum, band) + "_immask.fits.fz"


def fullcat_name(expnum: int, band: str, ccd: int, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_fullcat.fits``."""
    return _stem(expnum, ccd, rnum, pnum, band) + "_fullcat.fits"


def psf_model_name(expnum: int, band: str, ccd: int, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_psfmodel.fits``."""
    return _stem(expnum, ccd, rnum, pnum, band) + "_psfmodel.fits"


def qc_ccd_name(expnum: int, band: str, ccd: int, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_qc.json``."""
    return _stem(expnum, ccd, rnum, pnum, band) + "_qc.json"


def qc_exposure_name(expnum: int, band: str, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{band}_r{R}p{P}_qc.json``."""
    return _stem(expnum, None, rnum, pnum, band) + "_qc.json"


def zero_csv_name(expnum: int, ccd: int, rnum: int, pnum: int) -> str:
    """``Zero_D{expnum:08d}_{ccd:02d}_r{R}p{P}.csv``."""
    return "Zero_" + _stem(expnum, ccd, rnum, pnum, None) + ".csv"


def allzp_csv_name(expnum: int, rnum: int, pnum: int) -> str:
    """``allZP_D{expnum:08d}_r{R}p{P}.csv``."""
    return "allZP_" + _stem(expnum, None, rnum, pnum, None) + ".csv"


def zp_csv_name(expnum: int, ccd: int, rnum: int, pnum: int) -> str:
    """``D{expnum:08d}_{ccd:02d}_r{R}p{P}_ZP.csv``."""
    return _stem(expnum, ccd, rnum, pnum, None) + "_ZP.csv"


def corners_out_name(expnum: int) -> str:
    """``{expnum}.out`` (no zero padding, as the original)."""
    return f"{_check_int('expnum', expnum, 0, 99_999_999)}.out"


def exposure_dir(root: str | os.PathLike[str], cache: str, schema: str, nite: int | str,
                 expnum: int) -> Path:
    """``{root}/{cache}/{schema}/exp/{nite}/{expnum}/`` (not created).

    Parameters
    ----------
    root : path
        Top of the output tree.
    cache : {"scratch", "persistent"}
    schema : {"gw", "wsdiff"}
    nite : int or str
        DES night ``YYYYMMDD``.
    expnum : int
        Exposure number.

    Raises
    ------
    ValueError
        On an unknown cache or schema, a nite that is not a valid ``YYYYMMDD``, or a negative
        exposure number.
    """
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, got {schema!r}")
    nite_s = str(nite).strip()
    if not re.fullmatch(r"(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", nite_s):
        raise ValueError(f"nite must be YYYYMMDD, got {nite!r}")
    e = _check_int("expnum", expnum, 0, 99_999_999)
    return Path(root) / cache / schema / "exp" / nite_s / str(e)


@dataclass(frozen=True)
class ProductName:
    """The parts of a parsed product file name.

    Attributes
    ----------
    kind : str
        One of ``"immask"``, ``"fullcat"``, ``"psfmodel"``, ``"qc_ccd"``, ``"qc_exposure"``,
        ``"zero"``, ``"allzp"``, ``"zp"``, ``"corners"``, ``"raw"``.
    expnum : int
    band : str or None
    ccd : int or None
    rnum, pnum : int or None
    """

    kind: str
    expnum: int
    band: str | None
    ccd: int | None
    rnum: int | None
    pnum: int | None


_RP = r"r(?P<r>\d+)p(?P<p>\d+)"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        ("immask", rf"D(?P<e>\d{{8}})_(?P<b>[A-Za-z]{{1,3}})_(?P<c>\d{{2}})_{_RP}_immask\.fits\.fz"),
        ("fullcat", rf"D(?P<e>\d{{8}})_(?P<b>[A-Za-z]{{1,3}})_(?P<c>\d{{2}})_{_RP}_fullcat\.fits"),
        ("psfmodel", rf"D(?P<e>\d{{8}})_(?P<b>[A-Za-z]{{1,3}})_(?P<c>\d{{2}})_{_RP}_psfmodel\.fits"),
        ("qc_ccd", rf"D(?P<e>\d{{8}})_(?P<b>[A-Za-z]{{1,3}})_(?P<c>\d{{2}})_{_RP}_qc\.json"),
        ("qc_exposure", rf"D(?P<e>\d{{8}})_(?P<b>[A-Za-z]{{1,3}})_{_RP}_qc\.json"),
        ("zero", rf"Zero_D(?P<e>\d{{8}})_(?P<c>\d{{2}})_{_RP}\.csv"),
        ("allzp", rf"allZP_D(?P<e>\d{{8}})_{_RP}\.csv"),
        ("zp", rf"D(?P<e>\d{{8}})_(?P<c>\d{{2}})_{_RP}_ZP\.csv"),
        ("corners", r"(?P<e>\d+)\.out"),
        ("raw", r"DECam_(?P<e>\d{8})\.fits\.fz"),
    ))


def parse_product_name(name: str | os.PathLike[str]) -> ProductName:
    """Parse a product file name (a path's directory part is ignored).

    Raises
    ------
    ValueError
        If the name matches none of the product patterns.
    """
    base = Path(name).name
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(base)
        if m is None:
            continue
        g = m.groupdict()
        return ProductName(
            kind=kind,
            expnum=int(g["e"]),
            band=g.get("b"),
            ccd=int(g["c"]) if g.get("c") else None,
            rnum=int(g["r"]) if g.get("r") else None,
            pnum=int(g["p"]) if g.get("p") else None,
        )
    raise ValueError(f"not a desgw product name: {base!r}")
