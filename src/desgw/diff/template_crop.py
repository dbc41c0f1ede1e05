"""Crop a template CCD to the part of it that lands on the search CCD.

In a dithered survey a search CCD overlaps three or four template CCDs, each only in part.
Sky estimation and resampling of the whole template CCD cost the same whatever the overlap,
so the difference imaging of a full exposure spent most of its template time on pixels that
never reach the search grid (measured on the simulated exposure: ~0.45 s of sky + ~0.4 s of
resampling per template CCD). :func:`crop_to_search` cuts each template to the bounding box
of the search CCD's footprint on it, grown by a margin that covers the resampling kernel and
a background mesh, and shifts its WCS and PSF model accordingly, so that every later step
sees a smaller but otherwise identical template. :func:`crop_box_wcs` needs only the two
WCS and shapes, so that the workflow can read just that part of a template's immask
(``desgw.io.products.read_immask(crop=...)``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from desgw.diff.pipeline_types import CCDProducts

__all__ = ["OffsetPSF", "crop_box", "crop_box_wcs", "crop_to_search"]

log = logging.getLogger(__name__)


class OffsetPSF:
    """A PSF model evaluated in the pixel frame of a cut-out starting at ``(x0, y0)``.

    ``render(x, y, ...)`` and ``fwhm_at(x, y)`` of the cut-out's pixel ``(x, y)`` are those
    of the full CCD's pixel ``(x + x0, y + y0)``; other attributes are the wrapped model's.
    """

    def __init__(self, psf: Any, x0: int, y0: int) -> None:
        self.psf, self.x0, self.y0 = psf, int(x0), int(y0)

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """Normalised PSF stamp at cut-out pixel ``(x, y)`` (see ``PSFModel.render``)."""
        return self.psf.render(x + self.x0, y + self.y0, size=size, dx=dx, dy=dy)

    def fwhm_at(self, x: float, y: float) -> float:
        """FWHM (pixels) at cut-out pixel ``(x, y)``."""
        return self.psf.fwhm_at(x + self.x0, y + self.y0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.psf, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (OffsetPSF, (self.psf, self.x0, self.y0))


def crop_box(template: CCDProducts, search: CCDProducts, *, margin_px: int = 160,
             step_px: int = 128) -> tuple[slice, slice] | None:
    """Template rows and columns that can contribute to the search grid
    (:func:`crop_box_wcs` of the two CCDs' WCS and shapes)."""
    return crop_box_wcs(template.wcs, template.shape, search.wcs, search.shape,
                        margin_px=margin_px, step_px=step_px)


def crop_box_wcs(wcs_t: Any, shape_t: tuple[int, int], wcs_s: Any, shape_s: tuple[int, int],
                 *, margin_px: int = 160, step_px: int = 128) -> tuple[slice, slice] | None:
    """Template rows and columns that can contribute to the search grid.

    The search CCD's border (and interior, every ``step_px``) is mapped to template pixels;
    the box around the mapped points inside the template, grown by ``margin_px``, is returned.
    None when it is the whole CCD, when nothing maps inside, or when a WCS is missing or the
    mapping fails (no crop then).

    Parameters
    ----------
    wcs_t, shape_t : astropy.wcs.WCS, (ny, nx)
        The template CCD's WCS and shape.
    wcs_s, shape_s : astropy.wcs.WCS, (ny, nx)
        The search CCD's.
    margin_px : int
        Growth of the box (template pixels): covers the resampling kernel, the mapping's
        interpolation error and part of a background mesh so that the sky of the cut-out
        matches that of the full CCD near the overlap.
    step_px : int
        Sampling of the search grid (pixels).
    """
    if wcs_t is None or wcs_s is None:
        return None
    sny, snx = shape_s
    tny, tnx = shape_t
    xs = np.r_[np.arange(0, snx, step_px, dtype=float), snx - 1.0]
    ys = np.r_[np.arange(0, sny, step_px, dtype=float), sny - 1.0]
    gx, gy = np.meshgrid(xs, ys)
    with np.errstate(all="ignore"):
        try:
            ra, dec = wcs_s.all_pix2world(gx.ravel(), gy.ravel(), 0)
            try:
                tx, ty = wcs_t.all_world2pix(ra, dec, 0, quiet=True)
            except TypeError:  # a WCS whose all_world2pix has no quiet argument
                tx, ty = wcs_t.all_world2pix(ra, dec, 0)
        except Exception as exc:  # noqa: BLE001 - no crop; the full CCD is used
            log.debug("template crop: mapping failed (%s); not cropped", exc)
            return None
    ok = np.isfinite(tx) & np.isfinite(ty)
    inside = ok & (tx >= -margin_px) & (tx <= tnx - 1 + margin_px) \
        & (ty >= -margin_px) & (ty <= tny - 1 + margin_px)
    if not inside.any():
        return None
    x0 = max(int(np.floor(tx[inside].min())) - margin_px, 0)
    x1 = min(int(np.ceil(tx[inside].max())) + margin_px + 1, tnx)
    y0 = max(int(np.floor(ty[inside].min())) - margin_px, 0)
    y1 = min(int(np.ceil(ty[inside].max())) + margin_px + 1, tny)
    if x0 == 0 and y0 == 0 and x1 == tnx and y1 == tny:
        return None
    return slice(y0, y1), slice(x0, x1)


def crop_to_search(template: CCDProducts, search: CCDProducts, *,
                   margin_px: int = 160) -> CCDProducts:
    """``template`` cut to :func:`crop_box` (itself when no crop applies).

    The image, mask and weight are contiguous copies of the box; the WCS is astropy's slice of the
    template WCS (CRPIX and SIP reference shifted), the PSF an :class:`OffsetPSF`. Catalogs,
    zeropoints and quality values are unchanged (they are per CCD or in sky coordinates).
    """
    box = crop_box(template, search, margin_px=margin_px)
    if box is None:
        return template
    ys, xs = box
    wcs = template.wcs.slice((ys, xs))
    psf = None if template.psf is None else OffsetPSF(template.psf, xs.start, ys.start)
    log.debug("template %d CCD %d cropped to rows %d:%d, cols %d:%d", template.expnum,
              template.ccdnum, ys.start, ys.stop, xs.start, xs.stop)
    return replace(template, image=np.ascontiguousarray(template.image[box]),
                   mask=np.ascontiguousarray(template.mask[box]),
                   weight=np.ascontiguousarray(template.weight[box]), wcs=wcs, psf=psf)
