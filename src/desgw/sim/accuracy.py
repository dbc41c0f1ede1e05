"""Helpers that measure accuracy against the simulator's truth (used by tests and bench/).

They work on the truth tables of `desgw.sim.truth` (``Truth.objects_on_ccd`` rows: ``x``, ``y``
0-based trimmed pixels, ``flux_e``, ``mag``) and plain arrays, so the tests and the science
benchmark (``bench/bench_science.py``) select stars and blank sky the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["isolated", "blank_sky", "expected_snr", "map_pixels"]


def isolated(objects: Any, radius: float, frac: float) -> NDArray[np.bool_]:
    """Objects with no other object brighter than ``frac`` of their own flux within ``radius``.

    Parameters
    ----------
    objects : table
        Columns ``x``, ``y`` (pixels) and ``flux_e`` (electrons).
    radius : float
        Isolation radius (pixels).
    frac : float
        A neighbour counts when its flux exceeds ``frac`` times the object's.

    Returns
    -------
    ndarray of bool
        One entry per object.
    """
    xy = np.column_stack([np.asarray(objects["x"], float), np.asarray(objects["y"], float)])
    flux = np.asarray(objects["flux_e"], float)
    ok = np.ones(len(flux), dtype=bool)
    if len(flux) == 0:
        return ok
    for k, nb in enumerate(cKDTree(xy).query_ball_point(xy, radius)):
        others = [n for n in nb if n != k]
        if others and flux[others].max() > frac * flux[k]:
            ok[k] = False
    return ok


def blank_sky(objects: Any, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels far from every object: radius ``clip(8 + 4 (24 - mag), 8, 200)`` pixels.

    Parameters
    ----------
    objects : table
        Columns ``x``, ``y`` (0-based pixels) and ``mag`` (AB).
    shape : (ny, nx)

    Returns
    -------
    ndarray of bool, shape ``shape``
        True on blank sky.
    """
    x, y, mag = (np.asarray(objects[k], float) for k in ("x", "y", "mag"))
    radius = np.clip(8.0 + 4.0 * (24.0 - mag), 8.0, 200.0)
    occupied = np.zeros(shape, bool)
    for lo, hi in ((0, 12), (12, 20), (20, 40), (40, 80), (80, 201)):
        m = (radius >= lo) & (radius < hi)
        if not m.any():
            continue
        pts = np.zeros(shape, bool)
        pts[np.clip(np.round(y[m]).astype(int), 0, shape[0] - 1),
            np.clip(np.round(x[m]).astype(int), 0, shape[1] - 1)] = True
        occupied |= ndimage.distance_transform_edt(~pts) < hi
    return ~occupied


def expected_snr(mag: ArrayLike, limit_5sigma_mag: float) -> NDArray[np.float64]:
    """PSF-fit S/N of a point source of AB magnitude ``mag`` on an image whose 5-sigma
    point-source limit is ``limit_5sigma_mag`` (background-limited: S/N proportional to flux)."""
    return 5.0 * 10.0 ** (-0.4 * (np.asarray(mag, float) - float(limit_5sigma_mag)))


def map_pixels(truth: Any, from_exp: int, from_ccd: int, to_exp: int, to_ccd: int,
               x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pixels of one CCD of an exposure mapped onto another CCD with the TRUE astrometry.

    Parameters
    ----------
    truth : desgw.sim.truth.Truth
    from_exp, from_ccd, to_exp, to_ccd : int
    x, y : array_like
        0-based trimmed pixels of ``(from_exp, from_ccd)``.

    Returns
    -------
    (x, y) : ndarray
        0-based trimmed pixels of ``(to_exp, to_ccd)`` (may lie off that CCD).
    """
    ra, dec = truth.true_pixel_to_sky(from_exp, from_ccd, x, y)
    return truth.true_sky_to_pixel(to_exp, to_ccd, ra, dec)
