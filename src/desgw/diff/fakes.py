"""Fake point sources: plan, inject into the search image, match to detections (SNFAKE).

The original difference-imaging pipeline injected fake supernovae into each search CCD
before subtraction and recorded which were found (the SNFAKE table); the recovered fraction
as a function of magnitude is the detection efficiency (:mod:`desgw.diff.efficiency`).

* :func:`plan_fakes` draws positions and magnitudes: magnitudes uniform over ``mag_range``
  (choose it to span the detection limit, e.g. ``m5 - 2 .. m5 + 1.5``, see
  :func:`fake_mag_range`); a fraction ``host_fraction`` placed on galaxies (catalog rows with
  ``SPREAD_MODEL > 0.005``) at an offset drawn from an exponential-disk light profile with the
  galaxy's half-light radius, axis ratio and position angle, truncated at
  ``max_host_offset_re`` half-light radii; the rest uniform over the CCD. Every fake keeps
  ``edge_px`` from the CCD edge, has no unusable mask bit within ``mask_radius_px`` and lies at
  least ``min_separation_px`` from the other fakes. Given the search catalogue as
  ``detections``, every fake also keeps ``min_detection_separation_px`` from every detection
  other than its own host (the difference pipeline uses 3 FWHM of the difference's PSF): a
  fake on a real transient merged with it into one candidate flagged as a fake (hiding the
  transient) and its forced flux took the transient's (a pull of +8.8 in a CI run), and at 3
  FWHM a Moffat beta 2.5 neighbour's light is 0.2 % of its peak. The efficiency is then that
  of transients clear of other detections by that distance.
* :func:`inject_fakes` renders each fake with the search PSF at its sub-pixel position (all
  in one ``render_batch`` call when the PSF has one, bit for bit the single renders:
  ``inject_fakes`` 0.059 -> 0.024 CPU-s for 200 fakes on a sparse CCD),
  flux ``FLUX_e = 10**(-0.4 (mag - zp))`` (``m_AB = -2.5 log10(FLUX_e) + zp``, flux summed
  over the exposure; with ``exptime`` the zeropoint is per second), adds Poisson noise of the
  injected flux and returns new arrays (inputs are never modified).
* :func:`match_fakes` pairs fakes and detections one-to-one (nearest first) within
  ``radius_px``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from desgw.se.maskbits import UNUSABLE

__all__ = [
    "FakeInjection",
    "FakeMatch",
    "PSFLike",
    "fake_fluxes",
    "fake_mag_range",
    "inject_fakes",
    "match_fakes",
    "plan_fakes",
    "select_host_galaxies",
]

log = logging.getLogger(__name__)

#: Half-light radius of an exponential disk in units of its scale length.
_RE_OVER_H = 1.678347


class PSFLike(Protocol):
    """What :func:`inject_fakes` needs of a PSF (``desgw.se.psf.PSFModel`` has it)."""

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray: ...

    # optional: ``render_batch(x, y, size=, dx=, dy=)`` -> (n, size, size), stamp k equal to
    # ``render(x[k], y[k], size=, dx=dx[k], dy=dy[k])`` (desgw.se.psf.PSFModel.render_batch);
    # inject_fakes renders all fakes in one call when the PSF has it


@dataclass(frozen=True)
class FakeInjection:
    """Result of :func:`inject_fakes`.

    Attributes
    ----------
    image : numpy.ndarray
        (ny, nx) float32, the search image with the fakes (a new array).
    weight : numpy.ndarray or None
        (ny, nx) float32 inverse variance including the fakes' Poisson variance where noise
        was added (a new array; 0 stays 0); ``None`` when no weight was given.
    flux_e : numpy.ndarray
        (n,) float64 total flux of each fake (e-), before noise.
    windows : numpy.ndarray
        (m, 4) int64 rows ``(y0, y1, x0, x1)``: the windows (rows ``y0:y1``, columns
        ``x0:x1``) where stamps were added; ``image`` equals the input outside them
        (:meth:`desgw.diff.subtract.MaskPrediction.update` compares these only).
    """

    image: np.ndarray
    weight: np.ndarray | None
    flux_e: np.ndarray
    windows: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))


@dataclass(frozen=True)
class FakeMatch:
    """Result of :func:`match_fakes`.

    Attributes
    ----------
    recovered : numpy.ndarray
        (n_fakes,) bool.
    det_index : numpy.ndarray
        (n_fakes,) int64 row of the matched detection; -1 where ``recovered`` is False.
    separation_px : numpy.ndarray
        (n_fakes,) float64 distance to the matched detection (px); NaN where not recovered.
    """

    recovered: np.ndarray
    det_index: np.ndarray
    separation_px: np.ndarray

    @property
    def n_recovered(self) -> int:
        """Number of recovered fakes."""
        return int(self.recovered.sum())


def fake_mag_range(m5: float, *, brighter: float = 2.0, fainter: float = 1.5
                   ) -> tuple[float, float]:
    """Magnitude range spanning a 5-sigma limit ``m5``: ``(m5 - brighter, m5 + fainter)``."""
    return float(m5) - float(brighter), float(m5) + float(fainter)


def _col(table: Table, names: Sequence[str]) -> NDArray[np.float64] | None:
    for n in names:
        if n in table.colnames:
            return np.asarray(np.ma.filled(np.ma.asarray(table[n], dtype=np.float64), np.nan))
    return None


def _catalog_xy_ids(catalog: Table, search_wcs: Any
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """0-based pixel positions of an SE catalog's rows (``XWIN_IMAGE``/``YWIN_IMAGE``, else
    the sky positions through ``search_wcs``) and their ids (``NUMBER``, else the row)."""
    n = len(catalog)
    x = _col(catalog, ("XWIN_IMAGE", "X_IMAGE"))
    y = _col(catalog, ("YWIN_IMAGE", "Y_IMAGE"))
    if x is not None and y is not None:
        x, y = x - 1.0, y - 1.0
    else:
        ra = _col(catalog, ("ALPHAWIN_J2000", "ALPHA_J2000", "RA", "ra"))
        dec = _col(catalog, ("DELTAWIN_J2000", "DELTA_J2000", "DEC", "dec"))
        if ra is None or dec is None:
            raise ValueError("galaxy catalog needs pixel (XWIN_IMAGE) or sky (ALPHAWIN_J2000) "
                             "positions")
        px, py = search_wcs.world_to_pixel_values(ra, dec)
        x, y = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    number = _col(catalog, ("NUMBER",))
    ident = np.arange(n, dtype=np.int64) if number is None else number.astype(np.int64)
    return x, y, ident


def select_host_galaxies(catalog: Table, search_wcs: Any, shape: tuple[int, int], *,
                         min_spread_model: float = 0.005) -> Table:
    """Galaxies of an SE catalog usable as fake hosts, with 0-based pixel positions.

    Parameters
    ----------
    catalog : astropy.table.Table
        SE catalog with ``SPREAD_MODEL``, ``FLUX_RADIUS`` (half-light radius, px) and either
        ``XWIN_IMAGE``/``YWIN_IMAGE`` (1-based) or ``ALPHAWIN_J2000``/``DELTAWIN_J2000`` (then
        ``search_wcs`` gives the pixel position); optional ``A_IMAGE``, ``B_IMAGE``,
        ``THETA_IMAGE`` (deg, counter-clockwise from +x) and ``NUMBER``.
    search_wcs : astropy.wcs.WCS
        WCS of the search CCD (used when the catalog has no pixel positions).
    shape : (ny, nx)
        Search CCD shape.
    min_spread_model : float
        Keep ``SPREAD_MODEL > min_spread_model``.

    Returns
    -------
    astropy.table.Table
        ``host_id`` (``NUMBER`` or the row index), ``x``, ``y`` (0-based px), ``r_half`` (px),
        ``q`` (axis ratio b/a in (0, 1]), ``theta`` (rad).
    """
    n = len(catalog)
    spread = _col(catalog, ("SPREAD_MODEL",))
    rhalf = _col(catalog, ("FLUX_RADIUS",))
    if spread is None or rhalf is None:
        raise ValueError("galaxy catalog needs SPREAD_MODEL and FLUX_RADIUS columns")
    x, y, ident = _catalog_xy_ids(catalog, search_wcs)
    a = _col(catalog, ("A_IMAGE",))
    b = _col(catalog, ("B_IMAGE",))
    theta = _col(catalog, ("THETA_IMAGE",))
    q = (np.clip(b / a, 0.05, 1.0) if a is not None and b is not None else np.ones(n))
    q = np.where(np.isfinite(q), q, 1.0)
    th = np.radians(theta) if theta is not None else np.zeros(n)
    th = np.where(np.isfinite(th), th, 0.0)
    ny, nx = shape
    with np.errstate(invalid="ignore"):
        keep = ((spread > min_spread_model) & np.isfinite(rhalf) & (rhalf > 0)
                & np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= nx - 1) & (y >= 0)
                & (y <= ny - 1))
    return Table({"host_id": ident[keep], "x": x[keep], "y": y[keep], "r_half": rhalf[keep],
                  "q": q[keep], "theta": th[keep]})


class _Placer:
    """Checks candidate positions: edge, mask, separation from fakes already placed and from
    the detections (``det_x``, ``det_y``, ``det_id``) other than the fake's host."""

    def __init__(self, shape: tuple[int, int], mask: NDArray[Any] | None, bits: int,
                 edge_px: float, mask_radius_px: float, min_separation_px: float,
                 det_x: NDArray[np.float64] | None = None,
                 det_y: NDArray[np.float64] | None = None,
                 det_id: NDArray[np.int64] | None = None, det_sep_px: float = 0.0) -> None:
        self.det_tree = None
        self.det_id = np.zeros(0, dtype=np.int64)
        self.det_sep = float(det_sep_px)
        if det_x is not None and det_y is not None and det_id is not None and det_sep_px > 0:
            good = np.isfinite(det_x) & np.isfinite(det_y)
            if good.any():
                self.det_tree = cKDTree(np.column_stack([det_x[good], det_y[good]]))
                self.det_id = np.asarray(det_id)[good]
        self.ny, self.nx = shape
        # the mask is read in each candidate's window only (a few hundred windows, no
        # full-image intermediate)
        self.mask = None if mask is None else np.asarray(mask)
        self.bits = int(bits)
        self.edge = float(edge_px)
        self.r = int(np.ceil(mask_radius_px))
        yy, xx = np.mgrid[-self.r:self.r + 1, -self.r:self.r + 1]
        self.disk = (xx ** 2 + yy ** 2) <= mask_radius_px ** 2
        self.sep2 = float(min_separation_px) ** 2
        self.xs: list[float] = []
        self.ys: list[float] = []

    def ok(self, x: float, y: float, host_id: int = -1) -> bool:
        if not (self.edge <= x <= self.nx - 1 - self.edge and self.edge <= y <= self.ny - 1 - self.edge):
            return False
        if self.det_tree is not None:
            near = self.det_tree.query_ball_point((x, y), self.det_sep)
            if near and np.any(self.det_id[near] != host_id):
                return False
        if self.mask is not None:
            ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            y0, y1 = iy - self.r, iy + self.r + 1
            x0, x1 = ix - self.r, ix + self.r + 1
            if y0 < 0 or x0 < 0 or y1 > self.ny or x1 > self.nx:
                return False
            if np.any((self.mask[y0:y1, x0:x1] & self.bits)[self.disk]):
                return False
        if self.xs and self.sep2 > 0:
            d2 = (np.asarray(self.xs) - x) ** 2 + (np.asarray(self.ys) - y) ** 2
            if np.min(d2) < self.sep2:
                return False
        self.xs.append(x)
        self.ys.append(y)
        return True


def plan_fakes(search_wcs: Any, shape: tuple[int, int], mask: NDArray[Any] | None = None, *,
               n: int = 200, mag_range: tuple[float, float], host_fraction: float = 0.0,
               galaxies: Table | None = None, rng: np.random.Generator,
               edge_px: float = 30.0, mask_radius_px: float = 3.0,
               min_separation_px: float = 12.0, max_host_offset_re: float = 2.0,
               min_spread_model: float = 0.005, unusable_bits: int = UNUSABLE,
               max_tries: int = 200, detections: Table | None = None,
               min_detection_separation_px: float = 0.0) -> Table:
    """Draw fake positions and magnitudes on the search CCD.

    Parameters
    ----------
    search_wcs : astropy.wcs.WCS
        WCS of the search CCD (0-based pixel convention of ``pixel_to_world_values``).
    shape : (ny, nx)
        Search CCD shape.
    mask : numpy.ndarray or None
        (ny, nx) int mask bits; positions with any ``unusable_bits`` within
        ``mask_radius_px`` are avoided. ``None``: no mask.
    n : int
        Number of fakes wanted.
    mag_range : (float, float)
        Magnitudes are uniform in this range (AB); see :func:`fake_mag_range`.
    host_fraction : float
        Fraction of the fakes placed on galaxies (needs ``galaxies``).
    galaxies : astropy.table.Table or None
        SE catalog of the search CCD; rows with ``SPREAD_MODEL > min_spread_model`` are the
        hosts (see :func:`select_host_galaxies`).
    rng : numpy.random.Generator
        Random numbers (the plan is deterministic given its state).
    edge_px : float
        Smallest distance to the CCD edge (px).
    mask_radius_px : float
        Radius (px) that must be free of unusable pixels.
    min_separation_px : float
        Smallest distance between two fakes (px); at least ``min_detection_separation_px``.
    max_host_offset_re : float
        Hosted offsets are truncated at this many half-light (elliptical) radii.
    min_spread_model : float
        Galaxy selection threshold.
    unusable_bits : int
        Mask bits to avoid.
    max_tries : int
        Position draws per fake before giving up on it (the table is then shorter than
        ``n``; a warning is logged).
    detections : astropy.table.Table or None
        The search CCD's SE catalog (every detection, positions as for ``galaxies``; ids
        ``NUMBER`` or the row). ``None``: fakes may land on detections.
    min_detection_separation_px : float
        Smallest distance (px) from a fake to every detection of ``detections`` other than
        its host (3 FWHM in the difference pipeline; module docstring).

    Returns
    -------
    astropy.table.Table
        ``fake_id`` (1..), ``x``, ``y`` (0-based px), ``ra``, ``dec`` (deg), ``mag`` (AB),
        ``hosted`` (bool), ``host_id`` (the galaxy's ``NUMBER``; -1 when not hosted),
        ``host_offset_re`` (elliptical offset from the host in half-light radii; NaN when
        not hosted).
    """
    if not 0.0 <= host_fraction <= 1.0:
        raise ValueError(f"host_fraction must be in [0, 1], got {host_fraction}")
    lo, hi = float(mag_range[0]), float(mag_range[1])
    if not hi > lo:
        raise ValueError(f"mag_range must be (faint > bright), got {mag_range}")
    if mask is not None and np.shape(mask) != tuple(shape):
        raise ValueError(f"mask shape {np.shape(mask)} differs from shape {tuple(shape)}")
    if not min_detection_separation_px >= 0:
        raise ValueError(f"min_detection_separation_px must be >= 0, got "
                         f"{min_detection_separation_px}")
    ny, nx = shape
    det_x = det_y = det_id = None
    if detections is not None and len(detections) and min_detection_separation_px > 0:
        det_x, det_y, det_id = _catalog_xy_ids(detections, search_wcs)
    placer = _Placer(shape, mask, unusable_bits, edge_px, mask_radius_px,
                     max(float(min_separation_px), float(min_detection_separation_px)),
                     det_x, det_y, det_id, float(min_detection_separation_px))
    n_host = round(host_fraction * n)
    hosts = None
    if n_host > 0:
        if galaxies is None:
            raise ValueError("host_fraction > 0 needs a galaxies catalog")
        hosts = select_host_galaxies(galaxies, search_wcs, shape,
                                     min_spread_model=min_spread_model)
        if len(hosts) == 0:
            log.warning("no host galaxies on the CCD: all fakes placed in the field")
            n_host = 0
    xs: list[float] = []
    ys: list[float] = []
    host_ids: list[int] = []
    offsets: list[float] = []
    missing = 0
    for k in range(n):
        hosted = k < n_host
        for _ in range(max_tries):
            if hosted:
                assert hosts is not None
                g = hosts[int(rng.integers(len(hosts)))]
                # exponential disk: r / h ~ Gamma(2); truncated in half-light radii
                rr = rng.gamma(2.0) / _RE_OVER_H
                if rr > max_host_offset_re:
                    continue
                phi = rng.uniform(0.0, 2.0 * np.pi)
                q = float(g["q"])
                re = float(g["r_half"])
                u = rr * re / np.sqrt(q) * np.cos(phi)  # along the major axis
                v = rr * re * np.sqrt(q) * np.sin(phi)
                c, s = np.cos(float(g["theta"])), np.sin(float(g["theta"]))
                x, y = float(g["x"]) + c * u - s * v, float(g["y"]) + s * u + c * v
            else:
                x, y = rng.uniform(0.0, nx - 1.0), rng.uniform(0.0, ny - 1.0)
            if placer.ok(x, y, int(g["host_id"]) if hosted else -1):
                xs.append(x)
                ys.append(y)
                host_ids.append(int(g["host_id"]) if hosted else -1)
                offsets.append(rr if hosted else np.nan)
                break
        else:
            missing += 1
    if missing:
        log.warning("plan_fakes: %d of %d fakes could not be placed in %d tries", missing, n,
                    max_tries)
    m = len(xs)
    x_arr, y_arr = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if m:
        ra, dec = (np.asarray(v, dtype=np.float64)
                   for v in search_wcs.pixel_to_world_values(x_arr, y_arr))
    else:
        ra = dec = np.zeros(0)
    hid = np.asarray(host_ids, dtype=np.int64)
    return Table({"fake_id": np.arange(1, m + 1, dtype=np.int64), "x": x_arr, "y": y_arr,
                  "ra": ra, "dec": dec, "mag": rng.uniform(lo, hi, m),
                  "hosted": hid >= 0, "host_id": hid,
                  "host_offset_re": np.asarray(offsets, dtype=np.float64)})


def fake_fluxes(mag: ArrayLike, *, zp: float, exptime: float | None = None
                ) -> NDArray[np.float64]:
    """Total flux (e-) of magnitudes ``mag``: ``10**(-0.4 (mag - zp))`` (x ``exptime``).

    ``zp`` is the zeropoint of the flux summed over the exposure (desgw convention); with
    ``exptime`` (s) it is the zeropoint of 1 e-/s.
    """
    flux = 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - float(zp)))
    return flux * float(exptime) if exptime is not None else flux


def inject_fakes(image: NDArray[Any], weight: NDArray[Any] | None, psf: PSFLike, fakes: Table,
                 *, zp: float, exptime: float | None = None,
                 rng: np.random.Generator | None = None, add_noise: bool = True,
                 stamp_size: int | None = None) -> FakeInjection:
    """Add fake point sources to a copy of the search image.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) search image (e-). Not modified.
    weight : numpy.ndarray or None
        (ny, nx) inverse variance (e^-2). Not modified. ``None``: the result's ``weight`` is
        ``None`` too.
    psf : PSFLike
        Search PSF; ``render(x, y, size=, dx=, dy=)`` gives a unit-sum stamp centred at
        ``(floor(x+0.5) + dx, floor(y+0.5) + dy)`` (``desgw.se.psf.PSFModel``).
    fakes : astropy.table.Table
        ``x``, ``y`` (0-based px) and ``mag`` (AB), e.g. from :func:`plan_fakes`.
    zp : float
        Zeropoint (``m_AB = -2.5 log10(FLUX_e) + zp``).
    exptime : float or None
        If given, ``zp`` is per second and the flux is multiplied by ``exptime`` (s).
    rng : numpy.random.Generator or None
        Needed when ``add_noise``.
    add_noise : bool
        Add Poisson noise of the injected counts (``Poisson(model) - model`` per pixel) and
        the model's variance to the weight (``1 / (1/w + model)`` where ``w > 0``).
    stamp_size : int or None
        Side of the rendered stamps (odd px); default the PSF's own. Stamps are clipped at
        the CCD edges (plan fakes away from edges to inject their whole flux).

    Returns
    -------
    FakeInjection
        New image and weight arrays (float32) and the fakes' total fluxes (e-).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    if weight is not None and np.shape(weight) != img.shape:
        raise ValueError(f"weight shape {np.shape(weight)} differs from image {img.shape}")
    if add_noise and rng is None:
        raise ValueError("add_noise=True needs an rng")
    ny, nx = img.shape
    out = img.astype(np.float32, copy=True)
    model_var = np.zeros(img.shape, dtype=np.float32) if (add_noise and weight is not None) \
        else None
    flux = fake_fluxes(fakes["mag"], zp=zp, exptime=exptime)
    windows: list[tuple[int, int, int, int]] = []
    xs, ys = np.asarray(fakes["x"], np.float64), np.asarray(fakes["y"], np.float64)
    ixs, iys = np.floor(xs + 0.5), np.floor(ys + 0.5)
    batch = getattr(psf, "render_batch", None)
    stamps = None if batch is None or len(xs) == 0 else batch(
        xs, ys, size=stamp_size, dx=xs - ixs, dy=ys - iys)
    for k, (x, y, f) in enumerate(zip(xs, ys, flux)):
        ix, iy = int(ixs[k]), int(iys[k])
        stamp = np.asarray(psf.render(x, y, size=stamp_size, dx=x - ix, dy=y - iy)
                           if stamps is None else stamps[k], dtype=np.float64)
        h = stamp.shape[0] // 2
        y0, y1 = max(iy - h, 0), min(iy + h + 1, ny)
        x0, x1 = max(ix - h, 0), min(ix + h + 1, nx)
        if y0 >= y1 or x0 >= x1:
            continue
        model = f * stamp[y0 - (iy - h):y1 - (iy - h), x0 - (ix - h):x1 - (ix - h)]
        add = model
        if add_noise:
            assert rng is not None
            pos = np.clip(model, 0.0, None)
            add = model + (rng.poisson(pos) - pos)
            if model_var is not None:
                model_var[y0:y1, x0:x1] += pos.astype(np.float32)
        out[y0:y1, x0:x1] += add.astype(np.float32)
        windows.append((y0, y1, x0, x1))
    new_weight = None
    if weight is not None:
        w = np.asarray(weight, dtype=np.float32)
        if model_var is None:
            new_weight = w.copy()
        else:
            with np.errstate(divide="ignore"):
                new_weight = np.where(w > 0, 1.0 / (1.0 / np.where(w > 0, w, 1.0) + model_var),
                                      0.0).astype(np.float32)
    return FakeInjection(image=out, weight=new_weight, flux_e=flux,
                         windows=np.asarray(windows, np.int64).reshape(-1, 4))


def _detection_xy(detections: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if isinstance(detections, Table):
        for xn, yn, off in (("x", "y", 0.0), ("XWIN_IMAGE", "YWIN_IMAGE", 1.0),
                            ("X_IMAGE", "Y_IMAGE", 1.0)):
            if xn in detections.colnames and yn in detections.colnames:
                return (np.asarray(detections[xn], np.float64) - off,
                        np.asarray(detections[yn], np.float64) - off)
        raise ValueError("detections need x/y (0-based) or XWIN_IMAGE/YWIN_IMAGE (1-based)")
    x, y = detections
    return np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()


def match_fakes(fakes: Table, detections: Any, radius_px: float = 1.5) -> FakeMatch:
    """Match fakes to detections one-to-one, closest pairs first.

    Parameters
    ----------
    fakes : astropy.table.Table
        ``x``, ``y`` (0-based px).
    detections : astropy.table.Table or (x, y)
        Detections on the difference image: a table with ``x``, ``y`` (0-based) or
        ``XWIN_IMAGE``, ``YWIN_IMAGE`` (1-based, SExtractor), or a pair of 0-based arrays.
    radius_px : float
        Largest fake-detection distance (px).

    Returns
    -------
    FakeMatch
    """
    fx = np.asarray(fakes["x"], np.float64)
    fy = np.asarray(fakes["y"], np.float64)
    dx, dy = _detection_xy(detections)
    nf = fx.size
    det_index = np.full(nf, -1, dtype=np.int64)
    sep = np.full(nf, np.nan)
    if nf and dx.size:
        good = np.flatnonzero(np.isfinite(dx) & np.isfinite(dy))
        pairs = cKDTree(np.c_[fx, fy]).sparse_distance_matrix(
            cKDTree(np.c_[dx[good], dy[good]]), float(radius_px), output_type="ndarray")
        order = np.argsort(pairs["v"], kind="stable")
        used: set[int] = set()
        for i, j, d in zip(pairs["i"][order], pairs["j"][order], pairs["v"][order]):
            if det_index[i] >= 0 or j in used:
                continue
            det_index[i] = good[j]
            sep[i] = d
            used.add(int(j))
    return FakeMatch(recovered=det_index >= 0, det_index=det_index, separation_px=sep)
