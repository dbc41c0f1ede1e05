"""World-coordinate helpers of single-epoch processing: the initial TAN-SIP of a CCD and its corners.

:func:`initial_wcs_for` plays the part of SCAMP's ``fNN.head`` files in the original pipeline:
a TAN-SIP WCS in *trimmed* 0-based pixel coordinates that carries the DECam optical distortion
(:mod:`desgw.instrument.optics`, radial cubic + quintic) for the telescope pointing of the
exposure header (``TELRA``/``TELDEC``, sky rotation 0). It is wrong by the pointing error of the
header (arcsec to tens of arcsec) but right in shape, so :func:`desgw.se.astrometry.solve_wcs`
only has to fit an offset, rotation and scale, which a CCD with a dozen Gaia stars supports.

The mapping is represented exactly enough: :func:`tan_sip_from_mapping` fits the pixel ->
tangent-plane mapping on a grid with polynomials of increasing order until the fit is within
``tolerance_arcsec`` everywhere on the CCD (0.5 mas; order 3 for every DECam CCD), and fits the
inverse (AP/BP) on the same grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from astropy.wcs import WCS, Sip
from numpy.typing import NDArray

from desgw.errors import HeaderError
from desgw.instrument import CCD_SHAPE, DECAM_DISTORTION, Pointing, pixel_to_sky
from desgw.instrument.camera import CORNER_PIXELS_1BASED as DECAM_CORNER_PIXELS
from desgw.instrument.optics import sky_to_tangent
from desgw.se.sip import sip_design, sip_terms

if TYPE_CHECKING:
    from desgw.io.raw import ExposureHeader, RawCCD

__all__ = ["CORNER_PIXELS_1BASED", "tan_sip_from_mapping", "initial_wcs_for", "ccd_corners"]

#: 1-based pixels whose sky positions are a CCD's corners in the products: the corners of the
#: usable area inside the 15-pixel EDGE border, as the original pipeline's corner files used.
CORNER_PIXELS_1BASED: tuple[tuple[float, float], ...] = tuple(
    (float(x), float(y)) for x, y in DECAM_CORNER_PIXELS)


def tan_sip_from_mapping(pixel_to_world: Callable[[NDArray, NDArray], tuple[NDArray, NDArray]],
                         shape: tuple[int, int] = CCD_SHAPE, *, max_order: int = 5,
                         tolerance_arcsec: float = 0.0005, margin_pix: float = 50.0,
                         ) -> WCS:
    """A TAN-SIP WCS that reproduces a pixel -> sky mapping over an image.

    Parameters
    ----------
    pixel_to_world : callable
        ``(x, y) -> (ra, dec)``: 0-based pixel coordinates (x = column) to degrees.
    shape : tuple of int
        ``(rows, columns)`` of the image; CRPIX is its centre.
    max_order : int
        Highest SIP order tried.
    tolerance_arcsec : float
        The lowest order whose largest error on a 33 x 65 grid over the image (plus
        ``margin_pix``) is below this is used.
    margin_pix : float
        Margin of the fitting grid beyond the image (pixels).

    Returns
    -------
    astropy.wcs.WCS
        ``RA---TAN-SIP`` (``RA---TAN`` if order 1 suffices) with A/B and AP/BP, CRVAL the sky
        position of the centre; ``pixel_shape`` set. Use ``origin=0``.
    """
    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    ra0, dec0 = (float(np.asarray(a).ravel()[0]) for a in pixel_to_world(np.array([cx]), np.array([cy])))
    gx, gy = np.meshgrid(np.linspace(-margin_pix, nx - 1 + margin_pix, 33),
                         np.linspace(-margin_pix, ny - 1 + margin_pix, 65))
    u, v = gx.ravel() - cx, gy.ravel() - cy
    ra, dec = pixel_to_world(u + cx, v + cy)
    xi, eta = sky_to_tangent(np.asarray(ra), np.asarray(dec), Pointing(ra0, dec0, 0.0))  # deg
    target = np.column_stack([xi, eta])
    su, sv = nx / 2.0, ny / 2.0
    us, vs = u / su, v / sv
    best = None
    for order in range(1, max_order + 1):
        d = sip_design(us, vs, sip_terms(order, 1))
        coef, *_ = np.linalg.lstsq(d, target, rcond=None)
        err = float(np.max(np.hypot(*(target - d @ coef).T))) * 3600.0
        best = (order, coef)
        if err <= tolerance_arcsec:
            break
    assert best is not None
    order, coef = best
    terms = sip_terms(order, 1)
    poly = {(p, q): coef[k] / (su**p * sv**q) for k, (p, q) in enumerate(terms)}
    cd = np.array([[poly[(1, 0)][0], poly[(0, 1)][0]], [poly[(1, 0)][1], poly[(0, 1)][1]]])
    w = WCS(naxis=2)
    w.wcs.crpix = [cx + 1.0, cy + 1.0]
    w.wcs.crval = [ra0, dec0]
    w.wcs.cd = cd
    w.wcs.cunit = ["deg", "deg"]
    w.pixel_shape = (nx, ny)
    if order == 1:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.set()
        return w
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    cdinv = np.linalg.inv(cd)
    a = np.zeros((order + 1, order + 1))
    b = np.zeros((order + 1, order + 1))
    for (p, q), c in poly.items():
        if p + q >= 2:
            a[p, q], b[p, q] = cdinv @ c
    # inverse: (u, v) = (U, V) + AP/BP(U, V) with (U, V) = (u, v) + A/B(u, v)
    t2 = sip_terms(order, 2)
    fwd = sip_design(u, v, t2)
    uu = u + fwd @ np.array([a[p, q] for p, q in t2])
    vv = v + fwd @ np.array([b[p, q] for p, q in t2])
    inv_order = order + 1
    tinv = sip_terms(inv_order, 1)
    dinv = sip_design(uu / su, vv / sv, tinv)
    icoef, *_ = np.linalg.lstsq(dinv, np.column_stack([u - uu, v - vv]), rcond=None)
    ap = np.zeros((inv_order + 1, inv_order + 1))
    bp = np.zeros((inv_order + 1, inv_order + 1))
    for k, (p, q) in enumerate(tinv):
        ap[p, q] = icoef[k, 0] / (su**p * sv**q)
        bp[p, q] = icoef[k, 1] / (su**p * sv**q)
    w.sip = Sip(a, b, ap, bp, w.wcs.crpix)
    w.wcs.set()
    return w


def initial_wcs_for(raw: RawCCD, exposure: ExposureHeader) -> WCS:
    """Trimmed-pixel TAN-SIP of a raw CCD from the DECam optics at the header pointing.

    Parameters
    ----------
    raw : desgw.io.raw.RawCCD
        The CCD (its ``ccdnum`` and ``trimmed_shape`` are used).
    exposure : desgw.io.raw.ExposureHeader
        The exposure header; ``ra_deg``/``dec_deg`` (TELRA/TELDEC) are the pointing, the sky
        rotation is taken as 0 (DECam's).

    Returns
    -------
    astropy.wcs.WCS
        TAN-SIP for 0-based trimmed pixel coordinates (see :func:`tan_sip_from_mapping`).

    Raises
    ------
    desgw.errors.HeaderError
        The header has no pointing (TELRA/TELDEC, RA/DEC).
    """
    ra, dec = getattr(exposure, "ra_deg", None), getattr(exposure, "dec_deg", None)
    if ra is None or dec is None or not (np.isfinite(ra) and np.isfinite(dec)):
        raise HeaderError(getattr(raw, "path", None), 0, "no telescope pointing (TELRA/TELDEC) "
                          "in the exposure header: cannot build the initial WCS",
                          keyword="TELRA")
    ccdnum = int(raw.ccdnum)
    ny, nx = getattr(raw, "trimmed_shape", CCD_SHAPE)
    pointing = Pointing(float(ra), float(dec), 0.0)

    def mapping(x: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
        return pixel_to_sky(ccdnum, x, y, pointing, DECAM_DISTORTION)

    return tan_sip_from_mapping(mapping, (int(ny), int(nx)))


def ccd_corners(wcs: WCS) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RA, Dec (deg) of the 1-based pixels :data:`CORNER_PIXELS_1BASED` through ``wcs``.

    Returns
    -------
    ra, dec : ndarray of float64, shape (4,)
        Order (16,16), (2033,16), (2033,4081), (16,4081).
    """
    xy = np.asarray(CORNER_PIXELS_1BASED, dtype=np.float64)
    ra, dec = wcs.all_pix2world(xy[:, 0], xy[:, 1], 1)
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
