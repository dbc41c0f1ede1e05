"""Queries of a HEALPix-partitioned Gaia reference-catalog store.

:class:`RefCatStore` selects the HEALPix pixels that can hold a star of the query region
(a cone about the region centre, padded by the largest proper-motion displacement in the
store), loads them through a per-store LRU cache of numpy columns, propagates the stars
to the requested epoch and keeps exactly those inside the region.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
from astropy.table import Table
from astropy_healpix import HEALPix
from numpy.typing import ArrayLike

from desgw.errors import CorruptFileError
from desgw.refcat.geometry import (
    MAS_PER_DEG,
    ConvexFootprint,
    angular_separation_deg,
    convex_footprint,
    propagate_proper_motion,
)
from desgw.refcat.ingest import StoreIndex, pixel_path
from desgw.refcat.schema import column_unit

__all__ = ["RefCatStore"]

logger = logging.getLogger(__name__)

_Columns = dict[str, np.ndarray]


class RefCatStore:
    """A reference-catalog store written by :func:`desgw.refcat.ingest.ingest_gaia`.

    Parameters
    ----------
    store_dir : path
        Store directory (holds ``index.json``).
    cache_pixels : int
        Number of pixel tables kept in memory (least recently used are dropped).

    Attributes
    ----------
    index : StoreIndex
        The store's index.

    Notes
    -----
    Returned tables have columns ``ra``, ``dec`` (deg, at the query epoch), ``ra_ref``,
    ``dec_ref`` (deg, at each star's ``ref_epoch``) and every stored column (source_id,
    pmra, pmdec, ..., pm_missing), with units; ``meta["epoch"]`` holds the query epoch
    (None if not propagated). Rows are ordered by HEALPix pixel, then input order.
    """

    def __init__(self, store_dir: str | os.PathLike[str], *, cache_pixels: int = 512) -> None:
        self.store_dir = Path(store_dir)
        self.index = StoreIndex.read(self.store_dir)
        self._hp = HEALPix(nside=self.index.nside, order="nested")
        self._cache: OrderedDict[int, _Columns] = OrderedDict()
        self._cache_pixels = max(1, int(cache_pixels))
        self._pixels = np.array(sorted(self.index.pixel_counts), dtype=np.int64)
        self._data_columns = tuple(self.index.columns)

    def __repr__(self) -> str:
        return (f"RefCatStore({str(self.store_dir)!r}, order={self.index.order}, "
                f"total={self.index.total})")

    # ------------------------------------------------------------------ pixels
    def _load_pixel(self, pix: int) -> _Columns:
        cols = self._cache.get(pix)
        if cols is not None:
            self._cache.move_to_end(pix)
            return cols
        path = pixel_path(self.store_dir, self.index.order, pix)
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise CorruptFileError(path, None, f"cannot read pixel file: {exc}") from exc
        cols = {name: table.column(name).to_numpy() for name in self._data_columns}
        self._cache[pix] = cols
        if len(self._cache) > self._cache_pixels:
            self._cache.popitem(last=False)
        return cols

    def _pm_pad_deg(self, epoch: float | None) -> float:
        """Largest proper-motion displacement (deg) of any star between ref and query epoch."""
        if epoch is None or self.index.total == 0 or self.index.max_pm_masyr == 0:
            return 0.0
        lo, hi = self.index.ref_epoch_min, self.index.ref_epoch_max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return 0.0
        dt = max(abs(epoch - lo), abs(epoch - hi))
        return self.index.max_pm_masyr * dt / MAS_PER_DEG

    def pixels_for_cone(self, ra: float, dec: float, radius_deg: float) -> np.ndarray:
        """Non-empty store pixels overlapping a cone (deg); sorted int64 array."""
        # tiny pad against rounding in the pixel-overlap test
        r = min(float(radius_deg) + 1e-6, 180.0)
        cand = np.asarray(self._hp.cone_search_lonlat(ra * u.deg, dec * u.deg, r * u.deg),
                          dtype=np.int64)
        return np.intersect1d(cand, self._pixels, assume_unique=False)

    def _gather(self, pixels: np.ndarray) -> _Columns:
        parts = [self._load_pixel(int(p)) for p in pixels]
        if not parts:
            return {name: np.zeros(0, dtype=self._empty_dtype(name))
                    for name in self._data_columns}
        if len(parts) == 1:
            return dict(parts[0])
        return {name: np.concatenate([p[name] for p in parts]) for name in self._data_columns}

    @staticmethod
    def _empty_dtype(name: str) -> np.dtype:
        if name == "source_id":
            return np.dtype(np.int64)
        if name == "pm_missing":
            return np.dtype(bool)
        if name in ("ra", "dec", "ref_epoch"):
            return np.dtype(np.float64)
        return np.dtype(np.float32)

    def _positions(self, cols: _Columns, epoch: float | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        ra, dec = cols["ra"], cols["dec"]
        if epoch is None or ra.size == 0:
            return ra, dec
        dt = float(epoch) - cols["ref_epoch"]
        dt = np.where(np.isfinite(dt), dt, 0.0)
        return propagate_proper_motion(ra, dec, cols["pmra"], cols["pmdec"], dt)

    def _table(self, cols: _Columns, keep: np.ndarray, ra: np.ndarray, dec: np.ndarray,
               epoch: float | None) -> Table:
        t = Table(meta={"epoch": epoch, "order": self.index.order})
        t["ra"] = u.Quantity(ra[keep], u.deg, copy=False)
        t["dec"] = u.Quantity(dec[keep], u.deg, copy=False)
        t["ra_ref"] = u.Quantity(cols["ra"][keep], u.deg, copy=False)
        t["dec_ref"] = u.Quantity(cols["dec"][keep], u.deg, copy=False)
        for name in self._data_columns:
            if name in ("ra", "dec"):
                continue
            t[name] = cols[name][keep]
            unit = column_unit(name)
            if unit:
                t[name].unit = unit
        return t

    # ------------------------------------------------------------------ queries
    def query_footprint(self, corners_ra: ArrayLike, corners_dec: ArrayLike, *,
                        margin_arcsec: float = 0.0, epoch: float | None = None) -> Table:
        """Stars inside a convex footprint (e.g. a CCD), optionally grown by a margin.

        Parameters
        ----------
        corners_ra, corners_dec : array_like, shape (K,), K >= 3
            Corner positions (deg), in any order; the footprint is their convex hull with
            great-circle edges (evaluated on the gnomonic plane at the footprint centre,
            so RA wrap and high declinations are handled).
        margin_arcsec : float
            Grow the footprint by this distance (arcsec, measured on the tangent plane):
            stars within it of an edge are included.
        epoch : float or None
            Julian year (e.g. 2019.5; see :func:`desgw.refcat.geometry.mjd_to_jyear`) to
            propagate positions to, linearly in the tangent plane from each star's
            ``ref_epoch``; None keeps catalogue positions.

        Returns
        -------
        astropy.table.Table
            Stars whose (propagated) position lies inside the grown footprint.

        Raises
        ------
        ValueError
            Bad corners or margin (see :func:`desgw.refcat.geometry.convex_footprint`).
        """
        fp = convex_footprint(corners_ra, corners_dec, margin_arcsec=margin_arcsec)
        return self._query_footprint(fp, epoch)

    def _query_footprint(self, fp: ConvexFootprint, epoch: float | None) -> Table:
        pixels = self.pixels_for_cone(fp.ra0, fp.dec0, fp.radius_deg + self._pm_pad_deg(epoch))
        cols = self._gather(pixels)
        ra, dec = self._positions(cols, epoch)
        keep = fp.contains(ra, dec) if ra.size else np.zeros(0, dtype=bool)
        return self._table(cols, keep, ra, dec, epoch)

    def query_cone(self, ra: float, dec: float, radius_deg: float,
                   epoch: float | None = None) -> Table:
        """Stars within ``radius_deg`` (great-circle distance) of (ra, dec).

        Parameters
        ----------
        ra, dec : float
            Cone centre (deg).
        radius_deg : float
            Cone radius (deg, >= 0, <= 180).
        epoch : float or None
            Julian year to propagate to (see :meth:`query_footprint`).

        Returns
        -------
        astropy.table.Table
            Same columns as :meth:`query_footprint`.
        """
        if not (np.isfinite(ra) and np.isfinite(dec) and abs(dec) <= 90):
            raise ValueError(f"bad cone centre ({ra}, {dec})")
        if not (np.isfinite(radius_deg) and 0 <= radius_deg <= 180):
            raise ValueError(f"cone radius must be in [0, 180] deg, got {radius_deg}")
        pixels = self.pixels_for_cone(ra, dec, radius_deg + self._pm_pad_deg(epoch))
        cols = self._gather(pixels)
        pra, pdec = self._positions(cols, epoch)
        keep = angular_separation_deg(ra, dec, pra, pdec) <= radius_deg
        return self._table(cols, keep, pra, pdec, epoch)

    def query_footprints(self, corners: Sequence[tuple[ArrayLike, ArrayLike]], *,
                         margin_arcsec: float = 0.0, epoch: float | None = None
                         ) -> list[Table]:
        """:meth:`query_footprint` for several footprints (e.g. all CCDs of an exposure)."""
        return [self.query_footprint(r, d, margin_arcsec=margin_arcsec, epoch=epoch)
                for r, d in corners]

    def clear_cache(self) -> None:
        """Drop all cached pixel tables."""
        self._cache.clear()
