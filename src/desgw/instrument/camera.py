"""DECam detectors and amplifiers, loaded from the package's copy of the real instrument data.

Sources (see ``data/SOURCES.md``): ``chipcenters.txt`` (CCD positions in the focal plane, mm),
``segmentfile.txt`` (per-amplifier gain, saturation, read noise) and the LSST camGeom amplifier
tables ``camgeom/<DETPOS>.fits`` (raw pixel layout: data, overscan and prescan boxes). The
boxes of those 62 tables are read from one compact file, ``camgeom_boxes.npz`` (made from them
by ``scripts/make_camgeom_boxes.py``; a test checks they are equal): a process loads the camera
in ~10 ms instead of ~0.6 s of FITS table reads.

Conventions
-----------
* Raw CCD HDU: 2160 x 4146 pixels (NAXIS1 x NAXIS2), numpy shape ``(4146, 2160)``.
* Trimmed CCD image: 2048 x 4096, numpy shape ``(4096, 2048)``; it is the raw array cut to the
  union of the two amplifiers' data sections, without any flip (as the DECam Community Pipeline
  and the LSST assembled images do). All pixel coordinates in the package are 0-based
  ``(x, y)`` = ``(column, row)`` of the trimmed image unless a name says otherwise.
* Focal plane: millimetres, the frame of ``chipcenters.txt``; trimmed pixel x runs along +x_mm and
  pixel y along +y_mm, 15 um pixels.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "Amplifier",
    "CCD",
    "Box",
    "RAW_SHAPE",
    "CCD_SHAPE",
    "PIXEL_SIZE_MM",
    "PIXEL_SCALE_ARCSEC",
    "EDGE_BORDER_PIX",
    "CORNER_PIXELS_1BASED",
    "DEAD_CCDS",
    "SCIENCE_CCDNUMS",
    "DEFAULT_CCDNUMS",
    "parse_ccd_list",
    "UNSTABLE_AMPS",
    "ccds",
    "get_ccd",
]

#: numpy shape (rows, columns) of a raw DECam CCD HDU.
RAW_SHAPE: tuple[int, int] = (4146, 2160)
#: numpy shape (rows, columns) of a trimmed DECam CCD image.
CCD_SHAPE: tuple[int, int] = (4096, 2048)
#: Physical pixel size in mm (15 micron).
PIXEL_SIZE_MM: float = 0.015
#: Nominal pixel scale (arcsec per pixel) near the centre of the focal plane (the optics model,
#: :func:`desgw.instrument.pixel_scale_arcsec`, gives it per position).
PIXEL_SCALE_ARCSEC: float = 0.263
#: Width (pixels) of the EDGE border of a trimmed CCD that the original pipeline left out.
EDGE_BORDER_PIX: int = 15
#: 1-based (x, y) pixels at the corners of the usable area inside the EDGE border, in the
#: order of the original corner files: (16, 16), (2033, 16), (2033, 4081), (16, 4081).
CORNER_PIXELS_1BASED: tuple[tuple[int, int], ...] = (
    (EDGE_BORDER_PIX + 1, EDGE_BORDER_PIX + 1),
    (CCD_SHAPE[1] - EDGE_BORDER_PIX, EDGE_BORDER_PIX + 1),
    (CCD_SHAPE[1] - EDGE_BORDER_PIX, CCD_SHAPE[0] - EDGE_BORDER_PIX),
    (EDGE_BORDER_PIX + 1, CCD_SHAPE[0] - EDGE_BORDER_PIX),
)
#: CCDNUMs that are dead: 2 (S30, since 2013) and 61 (N30, since 2012).
DEAD_CCDS: tuple[int, ...] = (2, 61)
#: All 62 science CCDs.
SCIENCE_CCDNUMS: tuple[int, ...] = tuple(range(1, 63))
#: The original pipeline's default CCD list: 1-62 without the dead CCDs.
DEFAULT_CCDNUMS: tuple[int, ...] = tuple(c for c in SCIENCE_CCDNUMS if c not in DEAD_CCDS)
#: (CCDNUM, amp) pairs known to be unreliable: S7 (CCD 31) amplifier A has unstable gain.
UNSTABLE_AMPS: tuple[tuple[int, str], ...] = ((31, "A"),)

_CCD_ITEM = re.compile(r"^\s*(\d{1,12})\s*(?:-\s*(\d{1,12})\s*)?$")


def parse_ccd_list(text: str) -> list[int]:
    """CCDNUMs from a list such as ``"28,35"``, ``"1-5,9"`` or ``"all"`` (the 62 CCDs).

    Every item is a CCDNUM or an ascending range ``lo-hi`` of them, all within 1..62; the
    range is checked before it is expanded, so no list can ask for more than 62 numbers.

    Parameters
    ----------
    text : str
        The list (items separated by commas, spaces around items allowed).

    Returns
    -------
    list of int
        The CCDNUMs in the order given, each once.

    Raises
    ------
    ValueError
        An empty list, an empty item, an item that is not a number or a range, a descending
        range, or a number outside 1..62; the message names the item.
    """
    stripped = str(text).strip()
    if stripped.lower() == "all":
        return list(SCIENCE_CCDNUMS)
    if not stripped:
        raise ValueError("empty CCD list (give CCDNUMs such as 28,35 or 1-5, or 'all')")
    lo_ok, hi_ok = SCIENCE_CCDNUMS[0], SCIENCE_CCDNUMS[-1]
    out: dict[int, None] = {}
    for item in stripped.split(","):
        m = _CCD_ITEM.match(item)
        if m is None:
            raise ValueError(f"bad CCD list item {item.strip()!r} in {stripped!r}: expected a "
                             f"CCDNUM ({lo_ok}-{hi_ok}) or a range such as 1-5")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        for n in (lo, hi):
            if not lo_ok <= n <= hi_ok:
                raise ValueError(f"CCD {n} in {item.strip()!r} is not a DECam CCDNUM "
                                 f"({lo_ok}-{hi_ok})")
        if hi < lo:
            raise ValueError(f"descending CCD range {item.strip()!r} (write {hi}-{lo})")
        out.update(dict.fromkeys(range(lo, hi + 1)))
    return list(out)


@dataclass(frozen=True)
class Box:
    """A rectangle of pixels, 0-based, half-open: rows ``y0:y1``, columns ``x0:x1``."""

    x0: int
    x1: int
    y0: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, column_slice)`` for numpy indexing."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """numpy shape ``(rows, columns)``."""
        return self.y1 - self.y0, self.x1 - self.x0

    def fits_section(self) -> str:
        """The box as a 1-based inclusive FITS section string ``[x1:x2,y1:y2]``."""
        return f"[{self.x0 + 1}:{self.x1},{self.y0 + 1}:{self.y1}]"


@dataclass(frozen=True)
class Amplifier:
    """One DECam amplifier.

    Attributes
    ----------
    name : str
        ``"A"`` or ``"B"``.
    gain : float
        Gain in electrons per ADU.
    saturation_adu : float
        Saturation level in ADU (raw counts above the bias level).
    read_noise_e : float
        Read noise in electrons.
    raw_data : Box
        Data (light-sensitive) pixels in the raw HDU.
    raw_overscan : Box
        Serial (horizontal) overscan columns in the raw HDU, same rows as the data.
    raw_parallel_overscan : Box
        Parallel (vertical) overscan rows in the raw HDU, same columns as the data.
    raw_prescan : Box
        Prescan columns in the raw HDU: the columns between the HDU edge and the serial overscan
        on the amplifier's side (6 for DECam; the LSST table lists none, so they are derived).
    trimmed : Box
        Where the data pixels land in the trimmed 2048 x 4096 image.
    readout_left : bool
        True if this amplifier's serial register reads out at the low-x side of the raw HDU;
        two amplifiers that read out at opposite sides see each other's pixels mirrored in x.
    readout_bottom : bool
        True if the first row read out is the lowest data row of the raw HDU (the parallel
        overscan rows are then stored above the data).
    """

    name: str
    gain: float
    saturation_adu: float
    read_noise_e: float
    raw_data: Box
    raw_overscan: Box
    raw_parallel_overscan: Box
    raw_prescan: Box
    trimmed: Box
    readout_left: bool
    readout_bottom: bool


@dataclass(frozen=True)
class CCD:
    """One DECam science CCD.

    Attributes
    ----------
    ccdnum : int
        CCDNUM, 1..62.
    detpos : str
        DETPOS name, ``S1..S31`` or ``N1..N31``.
    x_center_mm, y_center_mm : float
        Centre of the CCD in the focal plane (mm).
    rotation_deg : float
        Small rotation of the CCD in the focal plane (degrees, counter-clockwise x_mm -> y_mm).
    amps : dict[str, Amplifier]
        The two amplifiers, keyed ``"A"`` and ``"B"``.
    """

    ccdnum: int
    detpos: str
    x_center_mm: float
    y_center_mm: float
    rotation_deg: float
    amps: dict[str, Amplifier]

    @property
    def dead(self) -> bool:
        """True for the dead CCDs 2 and 61."""
        return self.ccdnum in DEAD_CCDS

    @property
    def raw_datasec(self) -> Box:
        """Union of both amplifiers' data boxes in the raw HDU (the trimmed image region)."""
        boxes = [a.raw_data for a in self.amps.values()]
        return Box(
            min(b.x0 for b in boxes), max(b.x1 for b in boxes),
            min(b.y0 for b in boxes), max(b.y1 for b in boxes),
        )

    def amp_at(self, x: np.ndarray) -> np.ndarray:
        """Amplifier name (``"A"`` or ``"B"``) for trimmed pixel column(s) ``x``."""
        a = self.amps["A"].trimmed
        return np.where((np.asarray(x) >= a.x0) & (np.asarray(x) < a.x1), "A", "B")


def _data_file(name: str):
    return resources.files("desgw.instrument").joinpath("data", name)


def _box(row, prefix: str) -> Box:
    x0 = int(row[f"{prefix}_min_x"])
    y0 = int(row[f"{prefix}_min_y"])
    return Box(x0, x0 + int(row[f"{prefix}_extent_x"]), y0, y0 + int(row[f"{prefix}_extent_y"]))


@functools.cache
def _segment_table() -> dict[tuple[int, str], tuple[float, float, float]]:
    out: dict[tuple[int, str], tuple[float, float, float]] = {}
    with _data_file("segmentfile.txt").open() as fh:
        for line in fh:
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue
            ccdnum, amp = int(parts[0]), parts[2]
            out[(ccdnum, amp)] = (float(parts[7]), float(parts[8]), float(parts[9]))
    return out


def _prescan_box(data: Box, over: Box) -> Box:
    if over.x0 < data.x0:  # amplifier at the low-x edge: prescan from column 0 to the overscan
        return Box(0, over.x0, data.y0, data.y1)
    return Box(over.x1, RAW_SHAPE[1], data.y0, data.y1)


#: The camGeom box columns kept in ``camgeom_boxes.npz`` (pixels, 0-based): the trimmed box
#: and the raw data, horizontal (serial) and vertical (parallel) overscan boxes of each amplifier.
CAMGEOM_BOX_COLUMNS: tuple[str, ...] = tuple(
    f"{box}_{part}" for box in ("bbox", "raw_databbox", "raw_horizontaloverscanbbox",
                                "raw_verticaloverscanbbox")
    for part in ("min_x", "min_y", "extent_x", "extent_y"))
#: Package data file of the camGeom amplifier boxes of the 62 CCDs.
CAMGEOM_BOXES_FILE = "camgeom_boxes.npz"


@functools.cache
def _camgeom_boxes() -> dict[tuple[str, str], dict[str, int]]:
    """(DETPOS, amplifier) -> {column of :data:`CAMGEOM_BOX_COLUMNS`: value}."""
    with _data_file(CAMGEOM_BOXES_FILE).open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            detpos, names, boxes = z["detpos"], z["amp"], z["boxes"]
            columns = tuple(str(c) for c in z["columns"])
    if columns != CAMGEOM_BOX_COLUMNS:
        raise ValueError(f"{CAMGEOM_BOXES_FILE}: columns {columns} are not "
                         f"{CAMGEOM_BOX_COLUMNS}")
    return {(str(d), str(n)): dict(zip(columns, (int(v) for v in row)))
            for d, n, row in zip(detpos, names, boxes)}


def _load_amps(ccdnum: int, detpos: str) -> dict[str, Amplifier]:
    seg = _segment_table()
    amps = {}
    for (det, name), row in _camgeom_boxes().items():
        if det != detpos:
            continue
        gain, sat, rdnoise = seg[(ccdnum, name)]
        data = _box(row, "raw_databbox")
        over = _box(row, "raw_horizontaloverscanbbox")
        pover = _box(row, "raw_verticaloverscanbbox")
        amps[name] = Amplifier(
            name=name,
            gain=gain,
            saturation_adu=sat,
            read_noise_e=rdnoise,
            raw_data=data,
            raw_overscan=over,
            raw_parallel_overscan=pover,
            raw_prescan=_prescan_box(data, over),
            trimmed=_box(row, "bbox"),
            readout_left=over.x0 < data.x0,
            readout_bottom=pover.y0 >= data.y1,
        )
    if not amps:
        raise KeyError(f"{CAMGEOM_BOXES_FILE}: no amplifier of DETPOS {detpos}")
    return amps


@functools.cache
def _ccd_table() -> dict[int, CCD]:
    out: dict[int, CCD] = {}
    with _data_file("chipcenters.txt").open() as fh:
        for line in fh:
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue
            ccdnum = int(parts[0])
            if ccdnum > 62:  # guide and focus chips
                continue
            detpos = parts[1]
            xmin, xmax, ymin, ymax, rot = map(float, parts[2:7])
            out[ccdnum] = CCD(
                ccdnum=ccdnum,
                detpos=detpos,
                x_center_mm=0.5 * (xmin + xmax),
                y_center_mm=0.5 * (ymin + ymax),
                rotation_deg=rot,
                amps=_load_amps(ccdnum, detpos),
            )
    return out


def ccds() -> list[CCD]:
    """All 62 DECam science CCDs, ordered by CCDNUM."""
    table = _ccd_table()
    return [table[k] for k in sorted(table)]


def get_ccd(key: int | str) -> CCD:
    """Look a CCD up by CCDNUM (int, 1..62) or DETPOS (``"N4"``, ``"S29"``).

    Raises
    ------
    KeyError
        If no science CCD has that CCDNUM or DETPOS.
    """
    table = _ccd_table()
    if isinstance(key, (int, np.integer)):
        if int(key) not in table:
            raise KeyError(f"no DECam science CCD with CCDNUM {key} (valid: 1..62)")
        return table[int(key)]
    name = str(key).strip().upper()
    for ccd in table.values():
        if ccd.detpos == name:
            return ccd
    raise KeyError(f"no DECam science CCD with DETPOS {key!r}")
