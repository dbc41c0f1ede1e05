"""Writing rendered exposures as real-format raw DECam files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .model import ExposureSpec
from .render import RenderedCCD
from .render_headers import exposure_primary_header

__all__ = ["write_rendered_exposure"]


def write_rendered_exposure(path: str | os.PathLike[str], spec: ExposureSpec,
                            rendered: Sequence[RenderedCCD], *, compress: bool | None = None) -> Path:
    """Write rendered CCDs as one raw DECam multi-extension FITS file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        ``.fits`` or ``.fits.fz`` (RICE_1 tile compression, fpack style).
    spec : ExposureSpec
        The exposure (primary header from `exposure_primary_header`).
    rendered : sequence of RenderedCCD
        One HDU each, in this order.
    compress : bool or None
        See `desgw.io.raw.write_raw_exposure` (``None``: compress for ``.fz`` names).

    Returns
    -------
    pathlib.Path
    """
    from ..io.raw import write_raw_exposure

    return write_raw_exposure(path, exposure_primary_header(spec),
                              [(r.header, r.raw) for r in rendered], compress=compress)
