"""IRAF/FITS image sections such as ``DATASECA = '[1025:2048,1:4096]'``.

A section string is ``[x1:x2,y1:y2]`` with 1-based, inclusive pixel coordinates, x along
NAXIS1 (numpy's last axis) and y along NAXIS2 (numpy's first axis). ``x1 > x2`` (a flipped
section, as DETSEC sometimes is) is allowed; :attr:`Section.slices` always covers the same
pixels in increasing order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from desgw.errors import HeaderError

__all__ = ["Section", "parse_section", "format_section", "section_from_header"]

_SECTION_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


@dataclass(frozen=True)
class Section:
    """A rectangular pixel section, 1-based inclusive (FITS convention).

    Attributes
    ----------
    x1, x2 : int
        First and last column (NAXIS1 direction), 1-based, inclusive.
    y1, y2 : int
        First and last row (NAXIS2 direction), 1-based, inclusive.
    """

    x1: int
    x2: int
    y1: int
    y2: int

    @property
    def xmin(self) -> int:
        """Smallest 1-based column."""
        return min(self.x1, self.x2)

    @property
    def xmax(self) -> int:
        """Largest 1-based column."""
        return max(self.x1, self.x2)

    @property
    def ymin(self) -> int:
        """Smallest 1-based row."""
        return min(self.y1, self.y2)

    @property
    def ymax(self) -> int:
        """Largest 1-based row."""
        return max(self.y1, self.y2)

    @property
    def flipped_x(self) -> bool:
        """True when the section is written with x1 > x2."""
        return self.x1 > self.x2

    @property
    def flipped_y(self) -> bool:
        """True when the section is written with y1 > y2."""
        return self.y1 > self.y2

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice_y, slice_x)``, 0-based half-open, for indexing a numpy array ``a[s.slices]``."""
        return (slice(self.ymin - 1, self.ymax), slice(self.xmin - 1, self.xmax))

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``: the numpy shape of the section."""
        return (self.ymax - self.ymin + 1, self.xmax - self.xmin + 1)

    @property
    def nx(self) -> int:
        """Number of columns."""
        return self.xmax - self.xmin + 1

    @property
    def ny(self) -> int:
        """Number of rows."""
        return self.ymax - self.ymin + 1

    def fits_in(self, shape: tuple[int, ...]) -> bool:
        """True when the section lies inside an array of numpy ``shape`` ``(ny, nx)``."""
        ny, nx = shape[-2], shape[-1]
        return self.xmin >= 1 and self.ymin >= 1 and self.xmax <= nx and self.ymax <= ny

    def __str__(self) -> str:
        return format_section(self)


def parse_section(text: object, *, keyword: str | None = None,
                  path: str | os.PathLike[str] | None = None,
                  hdu: str | int | None = None) -> Section:
    """Parse ``"[x1:x2,y1:y2]"`` into a :class:`Section`.

    Parameters
    ----------
    text : str
        The section string (a header value).
    keyword, path, hdu : optional
        Where the string came from, used only in the error message.

    Returns
    -------
    Section

    Raises
    ------
    HeaderError
        If ``text`` is not a string of the form ``[x1:x2,y1:y2]`` with positive integers.
    """
    name = keyword or "section"
    if not isinstance(text, str):
        raise HeaderError(path, hdu, f"keyword {name} is not a section string: {text!r}",
                          keyword=keyword)
    match = _SECTION_RE.match(text)
    if match is None:
        raise HeaderError(path, hdu, f"keyword {name} is malformed: {text!r} "
                          "(expected '[x1:x2,y1:y2]')", keyword=keyword)
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    if min(x1, x2, y1, y2) < 1:
        raise HeaderError(path, hdu, f"keyword {name} has a pixel index below 1: {text!r}",
                          keyword=keyword)
    return Section(x1, x2, y1, y2)


def format_section(section: Section | tuple[int, int, int, int]) -> str:
    """Format a :class:`Section` (or ``(x1, x2, y1, y2)``) as ``"[x1:x2,y1:y2]"``."""
    if isinstance(section, Section):
        x1, x2, y1, y2 = section.x1, section.x2, section.y1, section.y2
    else:
        x1, x2, y1, y2 = (int(v) for v in section)
    return f"[{x1}:{x2},{y1}:{y2}]"


def section_from_header(header: object, keyword: str, *,
                        path: str | os.PathLike[str] | None = None,
                        hdu: str | int | None = None) -> Section:
    """Read and parse the section keyword ``keyword`` from a FITS header.

    Raises
    ------
    HeaderError
        If the keyword is missing or malformed (the message names the keyword, file and HDU).
    """
    try:
        value = header[keyword]  # type: ignore[index]
    except KeyError:
        raise HeaderError(path, hdu, f"missing header keyword {keyword}",
                          keyword=keyword) from None
    return parse_section(value, keyword=keyword, path=path, hdu=hdu)
