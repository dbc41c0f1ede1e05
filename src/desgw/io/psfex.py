"""PSFEx PSF models (``.psf`` files and the Legacy Surveys per-exposure PSFEx tables).

A PSFEx model is a stack of ``ncomp`` basis images (the ``PSF_MASK`` column, shape
``(ncomp, ny, nx)``) combined with polynomial coefficients in the normalised coordinates
``u = (X_IMAGE - POLZERO1) / POLSCAL1``, ``v = (Y_IMAGE - POLZERO2) / POLSCAL2`` (1-based
SExtractor pixel coordinates). For one polynomial group of degree ``d`` the terms are, in
PSFEx order, ``u**i * v**j`` for ``j = 0..d`` (outer) and ``i = 0..d-j`` (inner): for
``d = 2`` that is ``1, u, u**2, v, u*v, v**2``. The basis images are sampled every
``PSF_SAMP`` pixels and centred on pixel ``(nx // 2, ny // 2)`` of the stamp.

Two layouts are read:

* the PSFEx output: one table row, the model keywords (``POLZERO1``, ``PSF_SAMP``, ...) in
  the table header;
* the Legacy Surveys merged/single-CCD calib files: one row per CCD, the same keywords as
  lower-case columns (``polzero1``, ``psf_samp``, ...) plus ``expnum`` and ``ccdname``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from desgw.errors import DataTypeError, HeaderError, MissingCCDError

from ._fitsutil import open_fits

__all__ = ["PSFExModel", "psfex_terms", "read_psfex"]

log = logging.getLogger(__name__)


def psfex_terms(u: float, v: float, degree: int) -> np.ndarray:
    """The PSFEx polynomial terms of one group, in PSFEx order.

    Parameters
    ----------
    u, v : float
        Normalised coordinates ``(X - POLZERO1) / POLSCAL1`` and ``(Y - POLZERO2) / POLSCAL2``.
    degree : int
        Polynomial degree ``POLDEG1`` (>= 0).

    Returns
    -------
    numpy.ndarray
        float64, shape ``((degree + 1) * (degree + 2) // 2,)``: ``u**i v**j`` with ``j`` outer
        (0..degree) and ``i`` inner (0..degree - j).
    """
    return np.array([u ** i * v ** j for j in range(degree + 1) for i in range(degree + 1 - j)],
                    dtype=np.float64)


@dataclass(frozen=True)
class PSFExModel:
    """One CCD's PSFEx model.

    Attributes
    ----------
    basis : numpy.ndarray
        float32 basis images, shape (ncomp, ny, nx), sampled every ``sampling`` pixels.
    polzero : tuple of float
        ``(POLZERO1, POLZERO2)``, 1-based image pixels.
    polscal : tuple of float
        ``(POLSCAL1, POLSCAL2)``, pixels.
    poldeg : int
        Polynomial degree (one group in X_IMAGE, Y_IMAGE).
    sampling : float
        ``PSF_SAMP``: image pixels per model pixel.
    fwhm_pix : float
        ``PSF_FWHM`` reported by PSFEx (image pixels).
    expnum : int or None
        Exposure number (Legacy Surveys tables only).
    ccdname : str or None
        CCD name (Legacy Surveys tables only).
    path : str
        The file read.
    """

    basis: np.ndarray = field(repr=False)
    polzero: tuple[float, float]
    polscal: tuple[float, float]
    poldeg: int
    sampling: float
    fwhm_pix: float
    expnum: int | None
    ccdname: str | None
    path: str

    @property
    def stamp_shape(self) -> tuple[int, int]:
        """(ny, nx) of a basis image."""
        return int(self.basis.shape[1]), int(self.basis.shape[2])

    def image_at(self, x: float, y: float, *, normalize: bool = True) -> np.ndarray:
        """The PSF model image at a CCD position, on the model grid.

        Parameters
        ----------
        x, y : float
            0-based pixel position (column, row) in the image the model was fitted on
            (converted to PSFEx's 1-based ``X_IMAGE = x + 1``).
        normalize : bool
            Scale the stamp to unit sum (PSFEx stamps sum to ~1.0-1.04 as fitted).

        Returns
        -------
        numpy.ndarray
            float64 stamp, shape ``stamp_shape``, centred on pixel ``(nx // 2, ny // 2)``,
            sampled every ``sampling`` image pixels.
        """
        u = (float(x) + 1.0 - self.polzero[0]) / self.polscal[0]
        v = (float(y) + 1.0 - self.polzero[1]) / self.polscal[1]
        terms = psfex_terms(u, v, self.poldeg)
        img = np.tensordot(terms, self.basis.astype(np.float64), axes=(0, 0))
        if normalize:
            s = img.sum()
            if not np.isfinite(s) or s <= 0:
                raise DataTypeError(self.path, None, f"PSF model at ({x}, {y}) has sum {s}; "
                                    "cannot normalise")
            img = img / s
        return img

    def aperture_fraction(self, x: float, y: float, radius_pix: float) -> float:
        """Fraction of the (unit-sum) model flux inside a circular aperture on the star.

        Parameters
        ----------
        x, y : float
            0-based CCD position at which the model is evaluated.
        radius_pix : float
            Aperture radius in image pixels.

        Returns
        -------
        float
            Sum of the normalised model inside the circle (exact pixel/circle overlap,
            approximated by 5x5 sub-pixel sampling), in [0, 1].
        """
        img = self.image_at(x, y, normalize=True)
        ny, nx = img.shape
        r_model = float(radius_pix) / self.sampling
        sub = 5
        offs = (np.arange(sub) + 0.5) / sub - 0.5
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        cover = np.zeros_like(img)
        for oy in offs:
            for ox in offs:
                cover += (np.hypot(xx + ox - nx // 2, yy + oy - ny // 2) <= r_model)
        return float(np.sum(img * cover / sub ** 2))


def _value(row: Any, header: fits.Header, names: tuple[str, ...], key: str, path: Path,
           label: str | int) -> Any:
    low = key.lower()
    if low in names:
        return row[low]
    if key in header:
        return header[key]
    raise HeaderError(path, label, f"PSFEx keyword {key} is neither a column nor in the header",
                      keyword=key)


def read_psfex(path: str | os.PathLike[str], *, ccdname: str | None = None,
               expnum: int | None = None) -> PSFExModel:
    """Read one CCD's PSFEx model.

    Parameters
    ----------
    path : path
        A PSFEx ``.psf``/``.fits`` file (model in HDU 1).
    ccdname : str, optional
        The CCD to take from a Legacy Surveys table holding several CCDs (column ``ccdname``).
    expnum : int, optional
        Also require this exposure number (column ``expnum``) when the table has one.

    Returns
    -------
    PSFExModel

    Raises
    ------
    MissingFileError, CorruptFileError
        The file is missing or unreadable.
    MissingCCDError
        No row matches ``ccdname``/``expnum``, or several rows and no ``ccdname`` given.
    HeaderError
        A model keyword (POLZERO1, POLSCAL1, POLDEG1, PSF_SAMP, ...) is missing, or the model
        has more than one polynomial group (not supported).
    DataTypeError
        ``PSF_MASK`` is not a 3-D stack matching the number of polynomial terms.
    """
    p = Path(path)
    with open_fits(p) as hdul:
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
            raise DataTypeError(p, 1, "no PSFEx binary table in HDU 1")
        hdu = hdul[1]
        label: str | int = hdu.name or 1
        header = hdu.header.copy()
        data = hdu.data
        names = tuple(n.lower() for n in data.columns.names)
        rows = np.arange(len(data))
        if "ccdname" in names and ccdname is not None:
            col = np.char.strip(np.asarray(data["ccdname"]).astype(str))
            rows = rows[np.char.upper(col) == ccdname.strip().upper()]
        if "expnum" in names and expnum is not None:
            rows = rows[np.asarray(data["expnum"])[rows] == int(expnum)]
        if len(rows) != 1:
            present = tuple(str(c).strip() for c in data["ccdname"]) if "ccdname" in names else ()
            raise MissingCCDError(p, label, f"{len(rows)} PSFEx rows match ccdname={ccdname!r}, "
                                  f"expnum={expnum!r} (CCDs in the file: {list(present)})",
                                  present=())
        row = data[int(rows[0])]
        if "psf_mask" not in names:
            raise DataTypeError(p, label, "no PSF_MASK column")
        basis = np.asarray(row["psf_mask"], dtype=np.float32)
        ngrp = int(_value(row, header, names, "POLNGRP", p, label))
        if ngrp != 1:
            raise HeaderError(p, label, f"POLNGRP={ngrp}: only one polynomial group is supported",
                              keyword="POLNGRP")
        deg = int(_value(row, header, names, "POLDEG1", p, label))
        polzero = (float(_value(row, header, names, "POLZERO1", p, label)),
                   float(_value(row, header, names, "POLZERO2", p, label)))
        polscal = (float(_value(row, header, names, "POLSCAL1", p, label)),
                   float(_value(row, header, names, "POLSCAL2", p, label)))
        samp = float(_value(row, header, names, "PSF_SAMP", p, label))
        fwhm = float(_value(row, header, names, "PSF_FWHM", p, label))
        exp = int(row["expnum"]) if "expnum" in names else None
        ccd = str(row["ccdname"]).strip() if "ccdname" in names else None
    nterm = (deg + 1) * (deg + 2) // 2
    if basis.ndim != 3 or basis.shape[0] != nterm:
        raise DataTypeError(p, label, f"PSF_MASK has shape {basis.shape}; expected "
                            f"({nterm}, ny, nx) for POLDEG1={deg}")
    if not (samp > 0 and all(s != 0 for s in polscal)):
        raise HeaderError(p, label, f"bad PSF_SAMP={samp} or POLSCAL={polscal}",
                          keyword="PSF_SAMP")
    log.debug("read PSFEx model %s (ccd %s, %d terms, %s)", p, ccd, nterm, basis.shape[1:])
    return PSFExModel(basis=basis, polzero=polzero, polscal=polscal, poldeg=deg, sampling=samp,
                      fwhm_pix=fwhm, expnum=exp, ccdname=ccd, path=str(p))
