"""Files of one difference-imaged CCD: reading SE products into
:class:`~desgw.diff.pipeline_types.CCDProducts` and writing a
:class:`~desgw.diff.pipeline_types.DiffResult` (all writes atomic).

Product folder and names (:func:`desgw.io.product_paths.diff_product_paths`; the original
``{exposure}/dp{SEASON}/{BAND}_{CCD:02d}/``; prefix
``P = D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_dp{season}``):

==============================  ==============================================================
``P_diff.fits.fz``              ``SCI`` difference (e-, PSF-stamp flux scale), ``MSK``, ``WGT``
                                (1 / propagated variance, 0 where blanked); with ``full_copy``
                                also ``SCORE`` (ZOGY ``S_corr``, sigma: 0.25 CPU-s and ~6 MB
                                per CCD; each candidate's ``score`` is its peak value)
``P_template.fits.fz``          with ``full_copy`` only: template coadd on the search grid and
                                scale (SCI/MSK/WGT); the stamps keep its pixels at candidates
``P_search.fits.fz``            with ``full_copy`` only: background-subtracted search image
                                with the fakes (SCI/MSK/WGT)
``P_resamp_{E}_{C:02d}.fits.fz``  with ``full_copy`` only: each resampled template CCD
``P_cands.fits``, ``.parquet``  candidates (:class:`DiffResult` ``candidates``)
``P_fakes.fits``                the fakes (SNFAKE) with their recovery
``P_stamps.fits``               stamps of every candidate (:func:`desgw.diff.stamps.
                                write_stamps_fits`)
``stamps/P_{id}.png``           pictures of the positive, non-vetoed, non-fake candidates
``P_efficiency.json``           efficiency curve, ``m50`` and the ideal limit
==============================  ==============================================================

Every image header carries ``EXPNUM``, ``CCDNUM``, ``BAND``, ``MAGZERO`` (search total-flux
zeropoint), ``ZPSTAMP`` (zeropoint of the stamp-flux scale), ``DESGWRP``, ``DIFFSEAS``,
``DIFFVER`` and ``DIFFCFG`` (hash of the :class:`DiffConfig`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import FITSFixedWarning

from desgw.errors import CorruptFileError, MissingFileError
from desgw.io.atomic import atomic_write_text
from desgw.io.fitscodec import (
    NOISE_QUANTIZE_LEVEL,
    Plane,
    noise_step,
    weight_step,
    write_planes,
)
from desgw.io.fitstable import read_table
from desgw.io.prepared_template import PreparedTemplate
from desgw.io.product_paths import DiffProductPaths
from desgw.io.products import (
    merge_header_cards,
    read_fits_table,
    read_immask,
    write_fits_table,
    write_immask,
    write_parquet,
)
from desgw.util.jsonsafe import json_safe

from .pipeline_types import CCDProducts, DiffConfig, DiffResult
from .stamps import write_stamps_fits, write_stamps_png
from .template_crop import OffsetPSF

__all__ = [
    "config_hash",
    "load_ccd_products",
    "load_template_products",
    "prepare_template_from_memory",
    "template_settings_hash",
    "write_diff_products",
]

log = logging.getLogger(__name__)


def config_hash(config: DiffConfig) -> str:
    """Short stable hash (12 hex digits) of every :class:`DiffConfig` setting."""
    text = json.dumps(asdict(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- reading
def _float_key(header: fits.Header, key: str, default: float) -> float:
    v = header.get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def load_ccd_products(immask: str | os.PathLike[str], *, psfmodel: str | os.PathLike[str],
                      fullcat: str | os.PathLike[str] | None = None,
                      qc: str | os.PathLike[str] | None = None, band: str | None = None,
                      expnum: int | None = None, ccdnum: int | None = None,
                      crop: Callable[[Any, tuple[int, int]], tuple[slice, slice] | None]
                      | None = None) -> CCDProducts:
    """A processed CCD's products as :class:`CCDProducts`.

    Reads the immask (SCI/MSK/WGT, the fitted WCS and the header keywords ``MAGZERO``,
    ``EXPTIME``, ``BAND``, ``QCPASS``, ``FWHMASEC``, ``PSFAPCOR``, ``EXPNUM``, ``CCDNUM``,
    ``AIRMASS``), the
    PSF model (``psf`` None when the file is absent), the fullcat (optional) and the CCD QC file
    (t_eff; optional). ``crop(wcs, shape)`` may choose a part of the CCD to read
    (:func:`desgw.io.products.read_immask`); the WCS and PSF model are then those of the
    cut-out's pixels (:class:`desgw.diff.template_crop.OffsetPSF`).

    Raises
    ------
    MissingFileError, CorruptFileError
        The immask is missing or unreadable; a PSF or catalog file that exists but cannot be
        read.
    """
    im = read_immask(immask, crop=crop)
    return _products(im.sci, im.msk, im.wgt, im.header, im.wcs, im.origin, psfmodel=psfmodel,
                     fullcat=fullcat, qc=qc, band=band, expnum=expnum, ccdnum=ccdnum)


def _products(image: np.ndarray, mask: np.ndarray, weight: np.ndarray, h: fits.Header,
              wcs: Any, origin: tuple[int, int], *, psfmodel: str | os.PathLike[str],
              fullcat: str | os.PathLike[str] | None, qc: str | os.PathLike[str] | None,
              band: str | None, expnum: int | None, ccdnum: int | None,
              sky_subtracted: bool = False) -> CCDProducts:
    from desgw.se.psf import PSFModel

    psf: PSFModel | OffsetPSF | None = None
    p = Path(psfmodel)
    if p.is_file():
        try:
            with fits.open(p) as hdul:
                psf = PSFModel.from_fits_hdul(hdul, path=str(p))
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptFileError(p, None, f"not a PSF model file: {exc}") from None
    else:
        log.warning("%s: no PSF model file", p)
    # cfitsio (desgw.io.fitstable): the same Table as the astropy reader in a quarter of the
    # CPU time; a file cfitsio cannot read goes to the astropy reader for its typed error
    catalog = read_table(fullcat) if fullcat is not None and Path(fullcat).is_file() else None
    t_eff = math.nan
    if qc is not None and Path(qc).is_file():
        try:
            d = json.loads(Path(qc).read_text(encoding="utf-8"))
            v = d["qc"]["metrics"]["teff"]["teff"]
            t_eff = float(v) if v is not None else math.nan
        except (ValueError, KeyError, TypeError):
            log.warning("%s: no t_eff in the QC file", qc)
    if psf is not None and origin != (0, 0):
        psf = OffsetPSF(psf, *origin)
    qcpass = h.get("QCPASS")
    return CCDProducts(
        image=image, mask=mask, weight=weight, wcs=wcs, psf=psf,
        zp=_float_key(h, "MAGZERO", math.nan), exptime=_float_key(h, "EXPTIME", math.nan),
        band=str(band if band is not None else h.get("BAND", "")).strip(),
        expnum=int(expnum if expnum is not None else h.get("EXPNUM", -1)),
        ccdnum=int(ccdnum if ccdnum is not None else h.get("CCDNUM", -1)),
        catalog=catalog, qc_passed=bool(qcpass) if qcpass is not None else True,
        fwhm=_float_key(h, "FWHMASEC", math.nan), t_eff=t_eff,
        psf_apcor=_float_key(h, "PSFAPCOR", 1.0), sky_subtracted=sky_subtracted,
        airmass=_float_key(h, "AIRMASS", math.nan),
        weight_scale=_float_key(h, "WGTSCALE", 1.0))


def _prepared_target(immask: str | os.PathLike[str], config: DiffConfig
                     ) -> tuple[str, dict[str, Any], Path]:
    """(settings hash, source stamp, path) of the prepared form of ``immask``."""
    from desgw.io.prepared_template import prepared_path, source_stamp

    key = template_settings_hash(config)
    return key, source_stamp(immask), prepared_path(immask, key)


def template_settings_hash(config: DiffConfig) -> str:
    """Short hash (12 hex digits) of what a template's sky depends on: the background
    settings, ``object_sigma``, the desgw version and the prepared-file format."""
    from desgw import __version__
    from desgw.io.prepared_template import PREPARED_FORMAT

    doc = {"background": asdict(config.background), "object_sigma": config.object_sigma,
           "version": __version__, "format": PREPARED_FORMAT}
    text = json.dumps(doc, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_template_products(immask: str | os.PathLike[str], *,
                           psfmodel: str | os.PathLike[str],
                           fullcat: str | os.PathLike[str] | None = None,
                           qc: str | os.PathLike[str] | None = None, band: str | None = None,
                           expnum: int | None = None, ccdnum: int | None = None,
                           config: DiffConfig | None = None,
                           crop: Callable[[Any, tuple[int, int]], tuple[slice, slice] | None]
                           | None = None, prepare: bool = True) -> CCDProducts:
    """A template CCD's products with its sky already subtracted, from its prepared form.

    The prepared file (:mod:`desgw.io.prepared_template`, next to the immask) is read when it
    exists and its key matches the immask as it is now and ``config``'s sky settings
    (:func:`template_settings_hash`); otherwise the whole immask is read, its sky estimated
    (:func:`desgw.diff.pipeline_steps.subtract_sky`, on the whole CCD), the prepared file
    written atomically, and read back (so the first search CCD uses exactly the pixels later
    ones will). Concurrent callers for one template CCD make it once: the others wait on a
    lock (:func:`desgw.io.prepared_template.preparation_lock`) and read it. A template folder
    that cannot be written to (or ``prepare`` False) gives the in-memory result without a
    file. Arguments otherwise as :func:`load_ccd_products`; the
    result has ``sky_subtracted`` True.

    Raises
    ------
    MissingFileError, CorruptFileError
        The immask is missing or unreadable; a PSF or catalog file that exists but cannot be
        read. (An unreadable prepared file is only logged, then made again.)
    """
    from desgw.errors import DesgwError
    from desgw.io.prepared_template import preparation_lock, read_prepared

    config = DiffConfig() if config is None else config
    key, source, ppath = _prepared_target(immask, config)
    def existing() -> PreparedTemplate | None:
        try:
            return read_prepared(ppath, source=source, settings_hash=key, crop=crop)
        except DesgwError as exc:
            log.warning("%s: %s; preparing the template CCD again", ppath, exc)
            return None

    prep = existing()
    if prep is None:
        with preparation_lock(ppath) if prepare else nullcontext(False) as held:
            if held:  # another diff may have made it while this one waited
                prep = existing()
            if prep is None:
                prep = _prepare_template(immask, ppath, source, key, config, crop, prepare)
    return _products(prep.image, prep.mask, prep.weight, prep.header, prep.wcs, prep.origin,
                     psfmodel=psfmodel, fullcat=fullcat, qc=qc, band=band, expnum=expnum,
                     ccdnum=ccdnum, sky_subtracted=True)


def prepare_template_from_memory(immask: str | os.PathLike[str], image: np.ndarray,
                                 mask: np.ndarray, weight: np.ndarray, header: fits.Header, *,
                                 config: DiffConfig | None = None) -> Path:
    """Write a template CCD's prepared form from its SE result in memory, right after SE
    wrote its immask: what :func:`load_template_products` would make from that immask,
    without decompressing it again (~0.45 CPU-s per CCD) and without the immask's own
    quantisation (the prepared file quantises once, sigma / 16).

    Parameters
    ----------
    immask : path-like
        The immask just written from these planes (its stamp is the prepared file's key).
    image : numpy.ndarray
        The SE image (e-, sky not subtracted), float32, shape (ny, nx).
    mask : numpy.ndarray
        Its mask bits (integer), same shape.
    weight : numpy.ndarray
        Its inverse variance (e-**-2), same shape.
    header : astropy.io.fits.Header
        The immask's SCI header (:func:`desgw.io.products.immask_sci_header`: keywords and WCS).
    config : DiffConfig, optional
        Difference-imaging settings whose sky the file holds (default: the defaults).

    Returns
    -------
    pathlib.Path
        The prepared file.

    Raises
    ------
    MissingFileError
        No immask at ``immask``.
    OSError
        The file cannot be written.
    """
    from desgw.io.prepared_template import preparation_lock, write_prepared

    from .pipeline_steps import subtract_sky

    config = DiffConfig() if config is None else config
    key, source, ppath = _prepared_target(immask, config)
    msk = np.asarray(mask).astype(np.int32, copy=False)
    sub, sky, rms = subtract_sky(np.asarray(image, dtype=np.float32), msk, config)
    with preparation_lock(ppath):
        write_prepared(ppath, sub, msk, np.asarray(weight, dtype=np.float32), header,
                       source=source, settings_hash=key, sky=sky, sky_rms=rms)
    return ppath


def _prepare_template(immask: str | os.PathLike[str], ppath: Path, source: dict[str, Any],
                      key: str, config: DiffConfig,
                      crop: Callable[[Any, tuple[int, int]], tuple[slice, slice] | None] | None,
                      write: bool) -> PreparedTemplate:
    """The whole immask, its sky subtracted, written as ``ppath`` (when ``write``) and read
    back through ``crop``; in memory when it cannot be written."""
    from desgw.io.prepared_template import read_prepared, write_prepared

    from .pipeline_steps import subtract_sky

    im = read_immask(immask)
    sub, sky, rms = subtract_sky(im.sci, im.msk, config)
    if write:
        try:
            write_prepared(ppath, sub, im.msk, im.wgt, im.header, source=source,
                           settings_hash=key, sky=sky, sky_rms=rms)
            prep = read_prepared(ppath, source=source, settings_hash=key, crop=crop)
            if prep is not None:
                return prep
        except OSError as exc:
            log.warning("%s: cannot write the prepared template (%s); using it unsaved",
                        ppath, exc)
    box = crop(im.wcs, im.shape) if crop is not None else None
    if box is None:
        return PreparedTemplate(sub, im.msk, im.wgt, im.header, im.wcs, (0, 0), sky, rms)
    ys, xs = box
    return PreparedTemplate(np.ascontiguousarray(sub[box]), np.ascontiguousarray(im.msk[box]),
                            np.ascontiguousarray(im.wgt[box]), im.header,
                            None if im.wcs is None else im.wcs.slice(box),
                            (int(xs.start or 0), int(ys.start or 0)), sky, rms)


# ----------------------------------------------------------------------------- writing
def _image_header(base: fits.Header | None, wcs: Any) -> fits.Header:
    h = fits.Header() if base is None else base.copy()
    if wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs_hdr = wcs.to_header(relax=True)
        merged = merge_header_cards(list(h.cards), wcs_hdr)  # one parse, not card by card
        if merged is not None:
            return merged
        h.update(wcs_hdr)
    return h


def write_diff_image(path: str | os.PathLike[str], result: DiffResult, *,
                     header: fits.Header | None = None, wcs: Any = None,
                     score: bool = True) -> Path:
    """``SCI`` difference, ``MSK``, ``WGT`` (1 / variance) and, with ``score``, ``SCORE``,
    tile-compressed.

    SCI and SCORE are quantised with absolute steps of 1/16 of their noise (RICE_1, subtractive
    dither 2: sigma from the median weight for SCI, 1 for SCORE), WGT with the step (smallest
    positive weight) / 1024, MSK lossless (RICE_1) (:mod:`desgw.io.fitscodec`). Blanked pixels
    have SCI = SCORE = 0 and WGT = 0.
    """
    assert result.diff is not None and result.diff_var is not None and result.mask is not None
    from desgw.io.rice import inverse_variance  # numba: imported when first needed

    h = _image_header(header, wcs)
    w = inverse_variance(result.diff_var)  # 0 where the variance is not finite and > 0
    wcs_only = fits.Header([c for c in h.cards if c.keyword.startswith(
        ("CTYPE", "CRPIX", "CRVAL", "CD1_", "CD2_", "CDELT", "PC1_", "PC2_", "CUNIT", "A_", "B_",
         "AP_", "BP_", "RADESYS", "EQUINOX", "LONPOLE", "LATPOLE", "WCSAXES", "MJDREF"))])
    diff = np.asarray(result.diff, np.float32)
    planes = [Plane("SCI", diff, h, noise_step(w, image=diff)),
              Plane("MSK", np.asarray(result.mask), wcs_only),
              Plane("WGT", w, wcs_only, weight_step(w))]
    if score:  # S_corr is in units of its own sigma
        planes.append(Plane("SCORE", np.asarray(result.score, np.float32), wcs_only,
                            1.0 / NOISE_QUANTIZE_LEVEL))
    write_planes(Path(path), planes)
    return Path(path)


def read_diff_image(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The planes of a ``P_diff.fits.fz`` file: ``SCI``, ``MSK``, ``WGT`` and, when the file
    has it (written with ``full_copy``), ``SCORE``."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "difference image not found")
    out = {}
    with fits.open(p) as hdul:
        for name in ("SCI", "MSK", "WGT"):
            if name not in hdul:
                raise CorruptFileError(p, None, f"no {name} HDU")
            out[name] = np.asarray(hdul[name].data)
        if "SCORE" in hdul:
            out["SCORE"] = np.asarray(hdul["SCORE"].data)
    return out


def _efficiency_doc(result: DiffResult) -> dict[str, Any]:
    eff, lim = result.efficiency, result.ideal_limit
    doc: dict[str, Any] = {"expnum": result.expnum, "ccdnum": result.ccdnum,
                           "n_fakes": len(result.fakes),
                           "n_recovered": int(np.sum(result.fakes["recovered"]))
                           if len(result.fakes) else 0,
                           "zp_stamp": result.zp_stamp, "flags": list(result.flags),
                           "usable_area_fraction": result.meta.get("usable_area_fraction"),
                           "n_fakes_masked": result.meta.get("fakes_masked")}
    if lim is not None:
        doc["ideal_limit"] = {"mag": lim.mag, "flux_e": lim.flux_e, "flux_err_e": lim.flux_err_e,
                              "nea_pix": lim.nea_pix, "difference_fwhm_px": lim.difference_fwhm_px,
                              "template_noise_factor": lim.template_noise_factor}
    if eff is not None:
        doc["efficiency"] = {
            "model": eff.model, "m50": eff.m50, "m50_err": eff.m50_err, "width": eff.width,
            "width_err": eff.width_err, "plateau": eff.plateau, "plateau_err": eff.plateau_err,
            "n_fakes": eff.n_fakes, "converged": bool(eff.converged),
            "bins": [{k: (float(row[k]) if k not in ("n", "n_recovered") else int(row[k]))
                      for k in eff.table.colnames} for row in eff.table]}
    return json_safe(doc)


def write_diff_products(result: DiffResult, paths: DiffProductPaths, *,
                        header: fits.Header | None = None, wcs: Any = None,
                        full_copy: bool = False, search: CCDProducts | None = None,
                        png: bool = True) -> dict[str, str]:
    """Write a non-empty result's products (module docstring); return kind -> path.

    ``full_copy`` adds the template coadd, the search image with the fakes (with ``search``'s
    mask and weight, when given), each resampled template CCD kept in the result and the
    difference image's ``SCORE`` plane (the original ``-F``: copy back every intermediate
    image). Without it the template coadd is not written (2.3 s and ~20 MB per CCD): the
    stamps, cut from it in memory, keep its pixels at every candidate; nor is ``SCORE``
    (0.25 CPU-s and ~6 MB per CCD): each candidate's ``score`` column is S_corr at its peak.
    """
    if result.empty:
        raise ValueError("an empty DiffResult has no products to write")
    if result.template_image is None or result.template_mask is None \
            or result.template_weight is None or result.search_image is None:
        raise ValueError("a DiffResult without its search and template images has no products")
    paths.directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    written["diff"] = str(write_diff_image(paths.diff, result, header=header, wcs=wcs,
                                          score=full_copy))
    if full_copy:
        written["template"] = str(write_immask(paths.template, result.template_image,
                                               result.template_mask, result.template_weight,
                                               header=header, wcs=wcs))
        if search is not None:
            written["search"] = str(write_immask(paths.search, result.search_image, search.mask,
                                                 search.weight, header=header, wcs=wcs))
        for (e, c), r in zip(result.templates_used, result.resampled):
            p = paths.resampled(e, c)
            written[f"resamp_{e}_{c}"] = str(write_immask(p, r.image, r.mask, r.weight,
                                                          header=header, wcs=wcs))
    cat_header = fits.Header()
    if header is not None:
        for key in ("EXPNUM", "CCDNUM", "BAND", "MAGZERO", "ZPSTAMP", "DESGWRP", "DIFFSEAS",
                    "DIFFVER", "DIFFCFG", "RBTHRESH", "ZPMODE", "ZPSOURCE", "MAGZERR"):
            if key in header:
                cat_header[key] = header[key]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS format")
        warnings.filterwarnings("ignore", message="Keyword name .* HIERARCH card")
        written["candidates_fits"] = str(write_fits_table(paths.candidates_fits,
                                                          result.candidates, header=cat_header,
                                                          extname="CANDIDATES"))
        written["candidates_parquet"] = str(write_parquet(paths.candidates_parquet,
                                                          result.candidates))
        written["fakes"] = str(write_fits_table(paths.fakes, result.fakes, header=cat_header,
                                                extname="SNFAKE"))
        if result.stamps is not None:
            written["stamps"] = str(write_stamps_fits(paths.stamps, result.stamps,
                                                      result.candidates))
    if png and result.stamps is not None and len(result.candidates):
        c = result.candidates
        sel = np.flatnonzero(~np.asarray(c["negative"], bool) & ~np.asarray(c["veto"], bool)
                             & ~np.asarray(c["is_fake"], bool))
        if sel.size:
            from .stamps import Stamps

            st = result.stamps
            sub = Stamps(data=st.data[sel], valid=st.valid[sel], kinds=st.kinds, x0=st.x0[sel],
                         y0=st.y0[sel], fill=st.fill)
            write_stamps_png(paths.stamps_dir, sub, [int(i) for i in np.asarray(c["id"])[sel]],
                             prefix=f"{paths.prefix}_")
            written["stamps_png"] = str(paths.stamps_dir)
    eff_doc = _efficiency_doc(result)
    if header is not None and "RBTHRESH" in header:
        eff_doc["real_bogus_threshold"] = float(header["RBTHRESH"])
    written["efficiency"] = str(atomic_write_text(
        paths.efficiency, json.dumps(eff_doc, indent=1, sort_keys=True) + "\n"))
    return written


def read_candidates(paths: DiffProductPaths) -> Table:
    """The candidate table of a finished CCD (FITS)."""
    return read_fits_table(paths.candidates_fits)
