"""Difference imaging of one search CCD from the SE products on disk (RUN_DIFFIMG_PIPELINE.sh).

:func:`run_diff_ccd` is a plain function of a picklable :class:`DiffTask` (a local loop, a
process pool or a Dask worker run it alike) and never raises for a failed CCD:

1. the search CCD's SE products (``exposure_dir(out_root, cache, schema, nite, expnum)``, else
   found with :func:`~desgw.io.product_paths.find_exposure_dir`);
2. the template CCDs that overlap it: for each template exposure (``template_expnums``, or,
   when empty, every exposure under ``out_root`` with SE products of the same band and
   ``r{R}p{P}``, the search excepted) its ``{expnum}.out`` corners and
   :func:`~desgw.workflow.templates.ccd_overlaps` against the search CCD's corners from its
   fitted WCS; their immask, PSF model, fullcat and QC file;
3. the star and veto lists (makestarcat: :func:`desgw.diff.starcat.make_star_catalog` on the
   template CCDs' catalogs, calibrated with their zeropoints, inside the search CCD), written as
   ``SNSTAR_{expnum}_{ccd}_r{R}p{P}.LIST`` and ``SNVETO_...LIST``;
4. :func:`desgw.diff.pipeline.difference_ccd`;
5. with a database URL, the templates used, the fakes and the detections (:mod:`desgw.db`),
   then the products, atomically, under ``{exposure_dir}/dp{season}/{band}_{ccd:02d}/`` (the
   original ``${procnum}/${BAND}_${CCD}`` folder; names in :mod:`desgw.diff.pipeline_products`),
   and last the completion marker ``..._diffdone.json`` (a summary). A CCD whose marker exists
   (with the same explicit template list) is not redone unless ``overwrite``.

The fused search CCD (:mod:`desgw.workflow.sediff_ccd`) passes its search CCD in memory
(step 1 is then not read) and writes its SE products just before the marker.

``fakes`` switches the fake injection (SNFAKE; on by default, as the original always
injected). ``full_copy`` is the original ``-F`` (FULLCOPY): keep every intermediate image
(the search image with the fakes and each resampled template CCD), not only the difference
and the template coadd.

The random numbers of the fakes are seeded from (search expnum, CCD, season): a re-run gives
the same fakes (:func:`fake_rng`, draw 0). :func:`gather_diff_inputs` gives the inputs of
step 4 without writing anything, so that an audit can run :func:`difference_ccd` again with
other draws of the fakes (``bench/bench_science.py --fake-seeds``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from desgw import __version__
from desgw.errors import DesgwError, describe_error
from desgw.io.atomic import atomic_write_text
from desgw.io.checksums import file_record, records_problems
from desgw.io.corners import read_corners_out
from desgw.io.naming import corners_out_name, exposure_dir
from desgw.io.product_paths import (
    ccd_product_paths,
    diff_product_paths,
    find_exposure_dir,
)
from desgw.io.settings import Settings
from desgw.io.star_lists import (
    snstar_name,
    snveto_name,
    write_star_list,
    write_veto_list,
)

from .templates import ccd_corners_from_wcs, ccd_overlaps

__all__ = [
    "DiffInputs",
    "DiffSummary",
    "DiffTask",
    "fake_rng",
    "find_template_ccds",
    "gather_diff_inputs",
    "run_diff_ccd",
]

log = logging.getLogger(__name__)

_DONE_FORMAT = 1


@dataclass(frozen=True)
class DiffTask:
    """Everything one search CCD's difference imaging needs; picklable.

    Attributes
    ----------
    search_expnum, ccdnum : int
        The search exposure and CCD.
    template_expnums : tuple of int
        Template exposures; empty: every processed exposure of the band under ``out_root``
        except the search.
    settings : Settings
        Product root (``out_root``) and database URL.
    rnum, pnum : int
        SE processing version of the inputs (``r{R}p{P}``).
    season : int
        Run number (the ``dp{season}`` product folder).
    cache, schema : str
        ``scratch``/``persistent`` and ``gw``/``wsdiff`` of the search exposure's folder.
    version : str
        DiffImg version tag, recorded in the products (``DIFFVER``).
    band : str
    nite : int
        Night of the search exposure's product folder.
    fakes : bool
        Inject fakes (SNFAKE) and measure the efficiency.
    overwrite : bool
        Redo a CCD whose products exist.
    full_copy : bool
        The original ``-F``: also write the intermediate images.
    config : DiffConfig or None
        Difference-imaging settings (None: the defaults; ``fakes`` overrides its ``fakes``).
    """

    search_expnum: int
    ccdnum: int
    template_expnums: tuple[int, ...]
    settings: Settings
    rnum: int
    pnum: int
    season: int
    cache: str
    schema: str
    version: str
    band: str
    nite: int
    fakes: bool = True
    overwrite: bool = False
    full_copy: bool = False
    config: Any = None


@dataclass(frozen=True)
class DiffSummary:
    """Outcome of one search CCD (small, picklable).

    Attributes
    ----------
    ccdnum : int
    ok : bool
        True when the products exist (made now or found).
    error : BaseException or None
        The exception when not ok (:attr:`reason` gives its text).
    n_candidates, n_fakes, n_fakes_recovered : int
    timings : dict of str to float
        Seconds: ``read``, ``starcat``, the steps of :func:`difference_ccd`, ``write``, ``db``,
        ``total``.
    skipped : bool
        Products found, nothing redone.
    error_kind : str or None
        ``"nothing_to_do"`` (no usable template: running again will not help) or ``"failed"``.
    flags : tuple of str
        Flags of the result (e.g. ``partial_coverage``, ``no_template``).
    templates_used : tuple of (expnum, ccdnum)
    m50, m50_err, ideal_limit_mag : float
        Efficiency of the fakes and the ideal 5-sigma limit (NaN when not measured).
    outdir : str or None
        The product folder.
    rb_threshold : float or None
        Real/bogus threshold of the scoring model (None when unknown, e.g. an old product).
    n_above_threshold : int
        Candidates that pass: positive, not vetoed, not a fake, real/bogus >= the threshold.
    """

    ccdnum: int
    ok: bool
    error: BaseException | None = field(default=None, compare=False)
    n_candidates: int = 0
    n_fakes: int = 0
    n_fakes_recovered: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    error_kind: str | None = None
    flags: tuple[str, ...] = ()
    templates_used: tuple[tuple[int, int], ...] = ()
    m50: float = math.nan
    m50_err: float = math.nan
    ideal_limit_mag: float = math.nan
    outdir: str | None = None
    rb_threshold: float | None = None
    n_above_threshold: int = 0

    @property
    def reason(self) -> str | None:
        """``"Type: message"`` of the failure (None when ok)."""
        return None if self.error is None else describe_error(self.error)


# ----------------------------------------------------------------------------- look-ups
def _search_dir(task: DiffTask) -> Path:
    d = exposure_dir(task.settings.out_root, task.cache, task.schema, int(task.nite),
                     int(task.search_expnum))
    if ccd_product_paths(d, task.search_expnum, task.band, task.ccdnum, task.rnum,
                         task.pnum).immask.is_file():
        return d
    return find_exposure_dir(task.settings.out_root, task.search_expnum, task.rnum, task.pnum)


def _processed_exposures(out_root: Path, band: str, exclude: int) -> list[tuple[int, Path]]:
    """(expnum, folder) of every exposure under ``out_root`` with a corners file of ``band``."""

    found: dict[int, Path] = {}
    for p in sorted(out_root.glob("*/*/exp/*/*/*.out")):
        if p.stem != p.parent.name or not p.stem.isdigit() or int(p.stem) == int(exclude):
            continue
        try:
            c = read_corners_out(p)
        except DesgwError as exc:
            log.warning("%s: %s", p, exc)
            continue
        if c.band not in (None, band):
            continue
        found.setdefault(int(p.stem), p.parent)
    return sorted(found.items())


def template_corners(directory: Path, expnum: int, rnum: int, pnum: int) -> dict[int, Any]:
    """CCD number -> sky corners of a processed exposure's CCDs.

    From its ``{expnum}.out``, which the exposure step writes (``se -C``, ``sediff -C``,
    ``expcalib``); without one (an exposure whose CCDs went through SE only), from the corners
    each CCD's ``qc.json`` records after its astrometric fit.

    Raises
    ------
    MissingFileError
        Neither the corners file nor a CCD with SE products and corners.
    DesgwInputError
        A corrupt corners file.
    """
    from desgw.errors import DesgwInputError, MissingFileError
    from desgw.io.naming import parse_product_name
    from desgw.io.product_paths import find_fullcats

    from .se_qc import load_ccd_summary

    path = directory / corners_out_name(expnum)
    if path.is_file():
        return dict(read_corners_out(path).corners)
    found: dict[int, Any] = {}
    for ccd, fullcat in sorted(find_fullcats(directory, expnum, rnum, pnum).items()):
        band = parse_product_name(fullcat).band
        if band is None:  # not a product name desgw writes
            continue
        qc = ccd_product_paths(directory, expnum, band, ccd, rnum, pnum).qc
        try:
            summary = load_ccd_summary(qc, ccd)
        except DesgwInputError as exc:  # an unfinished or damaged CCD: not a template CCD
            log.warning("exposure %d CCD %d left out of the template search: %s", expnum, ccd,
                        exc)
            continue
        if summary.ok and summary.corners is not None:
            found[ccd] = np.array(summary.corners, dtype=np.float64)
    if not found:
        raise MissingFileError(path, None, "CCD corners file not found, and no CCD of the "
                               "exposure has SE products with corners (qc.json)")
    log.info("exposure %d: no %s; corners of %d CCDs from their qc.json", expnum, path.name,
             len(found))
    return found


def find_template_ccds(search_corners: Any, ccdnum: int, template_expnums: Sequence[int], *,
                       out_root: str | Path, band: str, rnum: int, pnum: int,
                       search_expnum: int) -> dict[int, tuple[Path, list[int]]]:
    """Template exposure -> (product folder, overlapping CCDs) for one search CCD.

    Parameters
    ----------
    search_corners : (ra[4], dec[4])
        The search CCD's corners (deg).
    template_expnums : sequence of int
        Template exposures; empty: every processed exposure of ``band`` but the search.

    Raises
    ------
    MissingFileError, DesgwInputError
        An explicit template exposure has no product folder or no ``{expnum}.out``.
    """

    root = Path(out_root)
    if template_expnums:
        dirs = [(int(e), find_exposure_dir(root, int(e), rnum, pnum)) for e in template_expnums]
    else:
        dirs = _processed_exposures(root, band, search_expnum)
    out: dict[int, tuple[Path, list[int]]] = {}
    for e, d in dirs:
        corners = template_corners(d, e, rnum, pnum)
        ccds = ccd_overlaps({int(ccdnum): search_corners}, corners)[int(ccdnum)]
        if ccds:
            out[e] = (d, ccds)
    return out


def _load(directory: Path, expnum: int, band: str, ccd: int, rnum: int, pnum: int,
          search: Any = None, config: Any = None) -> Any:
    """A CCD's products; with ``search`` (a template CCD's search CCD) the template's
    prepared form, sky subtracted (made on first use: :func:`desgw.diff.pipeline_products.
    load_template_products`), of which only the part that can land on the search CCD is read
    (:func:`desgw.diff.template_crop.crop_box_wcs`)."""
    from desgw.diff.pipeline_products import load_ccd_products, load_template_products
    from desgw.diff.template_crop import crop_box_wcs

    crop = None
    if search is not None and search.wcs is not None:
        def crop(wcs: Any, shape: tuple[int, int]) -> tuple[slice, slice] | None:
            return crop_box_wcs(wcs, shape, search.wcs, search.shape)

    p = ccd_product_paths(directory, expnum, band, ccd, rnum, pnum)
    if search is not None:
        return load_template_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat,
                                      qc=p.qc, band=band, expnum=expnum, ccdnum=ccd,
                                      config=config, crop=crop)
    return load_ccd_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat, qc=p.qc,
                             band=band, expnum=expnum, ccdnum=ccd, crop=crop)


def _header(task: DiffTask, result: Any, cfg_hash: str) -> fits.Header:
    h = fits.Header()
    h["EXPNUM"] = (int(task.search_expnum), "search exposure number")
    h["CCDNUM"] = (int(task.ccdnum), "CCD number")
    h["BAND"] = (task.band, "filter band")
    h["MAGZERO"] = (float(result.zp), "AB zeropoint of the search total flux in e-")
    h["ZPSTAMP"] = (float(result.zp_stamp), "AB zeropoint of the PSF-stamp flux scale")
    h["BUNIT"] = ("electrons", "search electrons, PSF-stamp scale")
    h["DESGWRP"] = (f"r{task.rnum}p{task.pnum}", "SE processing version of the inputs")
    h["DIFFSEAS"] = (int(task.season), "season (dp) of the difference imaging")
    h["DIFFVER"] = (str(task.version), "DiffImg version tag")
    h["DIFFCFG"] = (cfg_hash, "hash of the DiffConfig settings")
    h["DESGWVER"] = (__version__, "desgw version")
    h["NTEMPL"] = (len(result.templates_used), "template CCDs in the coadd")
    threshold = real_bogus_threshold()
    if threshold is not None:
        h["RBTHRESH"] = (threshold, "real/bogus score threshold: >= is a candidate")
    for key, name, what in (("MASKFRAC", "masked_fraction", "masked in diff"),
                            ("BADFRAC", "bad_fraction", "bad in inputs")):
        v = result.meta.get(name)
        if v is not None:
            h[key] = (round(float(v), 6), f"template-area fraction {what}")
    if result.meta.get("zogy_kernel_size") is not None:
        h["ZOGYKSZ"] = (int(result.meta["zogy_kernel_size"]), "[px] ZOGY filter grid side")
    regs = tuple(getattr(result, "registrations", ()))
    h["NREGAFF"] = (sum(r.method == "affine" for r in regs), "templates registered: affine fit")
    h["NREGSHF"] = (sum(r.method == "shift" for r in regs), "templates registered: shift fit")
    h["NREGWCS"] = (sum(r.method == "wcs" for r in regs), "templates aligned by WCS only")
    for k, ((e, c), r) in enumerate(zip(result.templates_used, regs), start=1):
        if k > 99:
            break
        h[f"REGT{k}"] = (f"{e}/{c} {r.method} n={r.n_stars}", "template exp/CCD, fit, stars")
        if r.applied:
            h[f"REGDX{k}"] = (round(float(r.shift_x), 4), "[px] template x shift (stars mean)")
            h[f"REGDY{k}"] = (round(float(r.shift_y), 4), "[px] template y shift")
            h[f"REGRMS{k}"] = (round(float(r.rms_after), 4), "[px] star residual rms after fit")
    return h


def _record_db(task: DiffTask, result: Any, *, zp_source: str = "se") -> None:
    """The CCD's template uses, fakes and detections, replacing an earlier run's, in one
    transaction (:func:`desgw.db.replace_ccd_results`): a rerun, a crash before the
    completion marker or two runs of one exposure never duplicate rows. Tried again with
    backoff for up to ``settings.db_timeout_s`` while the database is locked or down.

    Each detection records the search zeropoint its magnitude is on (``result.zp``) and
    ``zp_source`` (:attr:`desgw.workflow.diff_relzp.ZeropointResolution.search_source`); when
    the exposure calibration of this version has already recorded the CCD's zeropoint, the
    magnitudes are put on it in the same transaction (and otherwise by the calibration when
    it runs: :func:`desgw.db.recalibrate_detections`)."""
    from desgw.db import (
        NewDetection,
        NewFake,
        TemplateUse,
        connect_shared,
        replace_ccd_results,
        retry_database,
    )
    from desgw.diff.pipeline_steps import candidate_flags

    e, c = int(task.search_expnum), int(task.ccdnum)
    def col(table: Any, name: str, kind: type) -> list[Any]:
        """A column as Python values (one conversion per column, not per row and field);
        masked values NaN in a float column, refused in the others (as float() and int() of a
        masked value)."""
        values = np.ma.asarray(table[name])
        if kind is float:
            return np.ma.filled(values.astype(np.float64), np.nan).tolist()
        if np.ma.is_masked(values):
            raise ValueError(f"column {name!r} has masked values")
        return np.ma.getdata(values).astype(kind).tolist()

    f = result.fakes
    fakes = [NewFake(ra=ra, dec=dec, mag=mag, host=host) for ra, dec, mag, host in zip(
        col(f, "ra", float), col(f, "dec", float), col(f, "mag", float),
        col(f, "hosted", bool))] if len(f) else []
    fake_index = {fid: k for k, fid in enumerate(col(f, "fake_id", int))} if len(f) else {}
    cands = result.candidates
    zp_used = float(result.zp) if math.isfinite(float(result.zp)) else None
    rows = []
    if len(cands):
        flags = np.asarray(candidate_flags(cands)).astype(int).tolist()
        for ra, dec, flux, ferr, snr, mag, magerr, rb, flag, is_fake, fid in zip(
                col(cands, "ra", float), col(cands, "dec", float), col(cands, "flux", float),
                col(cands, "flux_err", float), col(cands, "snr", float),
                col(cands, "mag", float), col(cands, "magerr", float),
                col(cands, "real_bogus", float), flags, col(cands, "is_fake", bool),
                col(cands, "fake_id", int)):
            rows.append(NewDetection(
                ra=ra, dec=dec, flux=flux, fluxerr=ferr, snr=snr,
                mag=mag if math.isfinite(mag) else None,
                magerr=magerr if math.isfinite(magerr) else None, real_bogus=rb, flags=flag,
                is_fake=is_fake, fake_id=fake_index.get(fid) if fid >= 0 else None,
                zp=zp_used, zp_source=zp_source if zp_used is not None else None))
    regs = {(int(r["expnum"]), int(r["ccdnum"])): r
            for r in result.meta.get("registration", ())}
    uses = []
    for te, tc in result.templates_used:
        reg = regs.get((int(te), int(tc)))
        uses.append(TemplateUse(e, c, int(te), int(tc)) if reg is None else TemplateUse(
            e, c, int(te), int(tc), reg_method=str(reg["method"]), reg_nstars=int(reg["n_stars"]),
            **{f"reg_{k}": None if reg.get(v) is None else float(reg[v])
               for k, v in (("dx", "shift_x"), ("dy", "shift_y"), ("rms_before", "rms_before"),
                            ("rms_after", "rms_after"))}))
    timeout = float(getattr(task.settings, "db_timeout_s", 60.0))

    def write() -> None:  # the worker's open database: statements compiled once
        with connect_shared(task.settings.db_url, busy_timeout_s=timeout,
                            connect_timeout_s=min(10.0, max(1.0, timeout))) as db:
            replace_ccd_results(db, e, c, templates_used=uses, fakes=fakes, detections=rows,
                                zeropoint_version=(int(task.rnum), int(task.pnum)))

    retry_database(write, timeout_s=timeout, what=f"database records of {e} CCD {c}")


def _db_has_records(task: DiffTask) -> bool:
    """Without a database True; with one, whether it holds this CCD's records (a CCD made
    without a database, or whose database write failed, is done again to write them)."""
    if task.settings.db_url is None:
        return True
    from desgw.db import connect, has_diff_records

    timeout = float(getattr(task.settings, "db_timeout_s", 60.0))
    with connect(task.settings.db_url, busy_timeout_s=timeout,
                 connect_timeout_s=min(10.0, max(1.0, timeout))) as db:
        found = has_diff_records(db, task.search_expnum, task.ccdnum)
    if not found:
        log.warning("exposure %d CCD %d: products exist but the database has no records of "
                    "them; doing the CCD again", task.search_expnum, task.ccdnum)
    return found


def _summary_from_done(path: Path, ccdnum: int) -> DiffSummary:
    d = json.loads(path.read_text(encoding="utf-8"))
    eff = d.get("efficiency") or {}

    def num(v: Any) -> float:
        return float(v) if v is not None else math.nan

    return DiffSummary(ccdnum=int(ccdnum), ok=True, n_candidates=int(d["n_candidates"]),
                       n_fakes=int(d["n_fakes"]), n_fakes_recovered=int(d["n_fakes_recovered"]),
                       timings={k: float(v) for k, v in d.get("timings", {}).items()},
                       skipped=True, flags=tuple(d.get("flags", [])),
                       templates_used=tuple((int(a), int(b)) for a, b in d["templates_used"]),
                       m50=num(eff.get("m50")), m50_err=num(eff.get("m50_err")),
                       ideal_limit_mag=num(d.get("ideal_limit_mag")),
                       outdir=str(path.parent), rb_threshold=d.get("real_bogus_threshold"),
                       n_above_threshold=int(d.get("n_candidates_above_threshold") or 0))


def real_bogus_threshold() -> float | None:
    """The threshold of the real/bogus model that scores the candidates (score >= it: a
    candidate to look at); None when the scorer module has no model (a stand-in scorer)."""
    import importlib

    load_model = getattr(importlib.import_module("desgw.diff.realbogus"), "load_model", None)
    return None if load_model is None else float(load_model().threshold)


def n_above_threshold(candidates: Any, threshold: float) -> int:
    """Candidates that pass: positive, not vetoed, not an injected fake, score >= threshold."""
    if len(candidates) == 0 or "real_bogus" not in candidates.colnames:
        return 0
    ok = np.asarray(candidates["real_bogus"], dtype=np.float64) >= threshold
    for col in ("negative", "veto", "is_fake"):
        if col in candidates.colnames:
            ok &= ~np.asarray(candidates[col], dtype=bool)
    return int(ok.sum())


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


# ----------------------------------------------------------------------------- the task
def _resolve_zeropoints(task: DiffTask, sdir: Path, search: Any, templates: list[Any],
                        found: dict[int, tuple[Path, list[int]]]) -> tuple[Any, list[Any], Any]:
    """:func:`desgw.workflow.diff_relzp.resolve_zeropoints` with the CCDs' QC reasons; a search
    CCD left without a zeropoint is a :class:`DiffError` that says why."""
    from desgw.diff.pipeline import DiffError

    from .diff_relzp import qc_reasons, resolve_zeropoints

    def reasons(d: Path, e: int, c: int) -> list[str]:
        return qc_reasons(ccd_product_paths(d, e, task.band, c, task.rnum, task.pnum).qc)

    qc = {(int(task.search_expnum), int(task.ccdnum)): reasons(
        sdir, task.search_expnum, task.ccdnum)}
    for e, (d, ccds) in found.items():
        for c in ccds:
            qc[(int(e), int(c))] = reasons(d, e, c)
    search, templates, res = resolve_zeropoints(search, templates, qc=qc)
    if not math.isfinite(search.zp):
        detail = "; ".join(f"{t['expnum']}/{t['ccdnum']}: {t['reason']}"
                           for t in res.templates) or "no template CCD"
        raise DiffError(f"search CCD {task.ccdnum} has no zeropoint, and no relative flux "
                        f"scale to a template could be measured ({detail})", kind="failed")
    return search, templates, res


@dataclass(frozen=True)
class DiffInputs:
    """The inputs of :func:`desgw.diff.pipeline.difference_ccd` for one search CCD.

    Attributes
    ----------
    search : CCDProducts
        The search CCD, zeropoint resolved.
    templates : list of CCDProducts
        The template CCDs that overlap it (prepared form, cropped), zeropoints resolved.
    missing : list of dict
        Template CCDs that could not be read: ``expnum``, ``ccdnum``, ``reasons``.
    zeropoints : ZeropointResolution
        :func:`desgw.workflow.diff_relzp.resolve_zeropoints`'s record.
    stars, veto : astropy.table.Table
        The star list and the veto table made from the templates' catalogues.
    """

    search: Any
    templates: list[Any]
    missing: list[dict[str, Any]]
    zeropoints: Any
    stars: Any
    veto: Any


def fake_rng(task: DiffTask, draw: int = 0) -> np.random.Generator:
    """Random numbers of a search CCD's fakes (plan and Poisson noise).

    Draw 0 is the pipeline's, seeded from (search expnum, CCD, season): a re-run gives the
    same fakes. Draw ``k >= 1`` is the child ``k`` of that seed (``SeedSequence`` spawn key
    ``(k,)``): an independent stream, for an audit that draws the fakes again.
    """
    entropy = [int(task.search_expnum), int(task.ccdnum), int(task.season)]
    if draw < 0:
        raise ValueError(f"draw must be >= 0, got {draw}")
    if draw == 0:
        return np.random.default_rng(entropy)
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(int(draw),)))


def gather_diff_inputs(task: DiffTask, sdir: Path | None = None, search: Any = None,
                       config: Any = None, timings: dict[str, float] | None = None
                       ) -> DiffInputs:
    """Steps 1-3 of :func:`run_diff_ccd` (module docstring), nothing written: the search CCD
    (read from ``sdir`` unless given), its template CCDs, their zeropoints, the star and veto
    lists.

    Parameters
    ----------
    task : DiffTask
    sdir : pathlib.Path, optional
        The search exposure's product folder (None: found as :func:`run_diff_ccd` finds it).
    search : CCDProducts, optional
        The search CCD in memory (not read then).
    config : DiffConfig, optional
        Settings of the templates' prepared form (None: the defaults).
    timings : dict, optional
        Gets ``read`` and ``starcat`` (seconds).

    Raises
    ------
    DiffError
        The search CCD has no WCS, or no zeropoint and no relative scale.
    MissingFileError, DesgwInputError
        The search CCD's products or an explicit template exposure's corners are missing.
    """
    from desgw.diff.pipeline import DiffConfig, DiffError
    from desgw.diff.starcat import make_star_catalog, make_veto_table

    config = DiffConfig() if config is None else config
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    if sdir is None:
        sdir = _search_dir(task)
    if search is None:
        search = _load(sdir, task.search_expnum, task.band, task.ccdnum, task.rnum, task.pnum)
    if search.wcs is None:
        raise DiffError(f"search CCD {task.ccdnum} has no WCS", kind="failed")
    s_corners = ccd_corners_from_wcs(search.wcs)
    found = find_template_ccds(s_corners, task.ccdnum, task.template_expnums,
                               out_root=task.settings.out_root, band=task.band,
                               rnum=task.rnum, pnum=task.pnum,
                               search_expnum=task.search_expnum)
    templates, missing = [], []
    for e, (d, ccds) in sorted(found.items()):
        for c in ccds:
            try:
                templates.append(_load(d, e, task.band, c, task.rnum, task.pnum,
                                       search=search, config=config))
            except DesgwError as exc:
                missing.append({"expnum": e, "ccdnum": c, "reasons": [str(exc)]})
                log.warning("template %d CCD %d: %s", e, c, exc)
    # a CCD without a zeropoint (sparse field): relative scales, flagged (diff_relzp)
    search, templates, zpres = _resolve_zeropoints(task, sdir, search, templates, found)
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cats = [t for t in templates if t.catalog is not None and np.isfinite(t.zp)]
    stars = make_star_catalog([t.catalog for t in cats], ccd_footprint=s_corners,
                              zeropoints=[t.zp for t in cats])
    veto = make_veto_table(stars)
    timings["starcat"] = time.perf_counter() - t0
    return DiffInputs(search=search, templates=templates, missing=missing, zeropoints=zpres,
                      stars=stars, veto=veto)


def run_diff_ccd(task: DiffTask, *, search: Any = None,
                 before_marker: Callable[[], None] | None = None) -> DiffSummary:
    """Difference imaging of one search CCD with its products written (module docstring).

    Never raises for a CCD failure: the summary has ``ok`` False, the error and its kind.

    Parameters
    ----------
    task : DiffTask
    search : CCDProducts, optional
        The search CCD already in memory (the fused search CCD,
        :func:`desgw.workflow.sediff_ccd.run_sediff_ccd`): its SE products are not read, the
        product folder is ``exposure_dir(out_root, cache, schema, nite, expnum)`` and the
        resume check is left to the caller.
    before_marker : callable, optional
        Called after the candidates, the database rows and the products are written, before
        the completion marker (the fused CCD writes its SE products there); an exception from
        it fails the CCD.
    """
    from desgw.diff.pipeline import DiffConfig, DiffError, difference_ccd
    from desgw.diff.pipeline_products import config_hash, write_diff_products

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    config = task.config if task.config is not None else DiffConfig()
    if bool(config.fakes) != bool(task.fakes):
        from dataclasses import replace

        config = replace(config, fakes=bool(task.fakes))
    try:
        sdir = _search_dir(task) if search is None else exposure_dir(
            task.settings.out_root, task.cache, task.schema, int(task.nite),
            int(task.search_expnum))
        paths = diff_product_paths(sdir, task.search_expnum, task.band, task.ccdnum, task.rnum,
                                   task.pnum, task.season)
        if search is None and not task.overwrite and paths.done.is_file():
            try:
                doc = json.loads(paths.done.read_text(encoding="utf-8"))
                # the templates asked for (a rejected one is not in template_expnums)
                asked = doc.get("templates_requested", doc.get("template_expnums", []))
                problems = records_problems(paths.directory, doc.get("products"))
                if problems:
                    log.warning("%s: %s; doing the CCD again", paths.done, "; ".join(problems))
                elif (not task.template_expnums or sorted(int(e) for e in asked) ==
                        sorted(int(e) for e in task.template_expnums)) and \
                        _db_has_records(task):
                    return _summary_from_done(paths.done, task.ccdnum)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: %s; doing the CCD again", paths.done, exc)

        # --- read, star and veto lists
        inputs = gather_diff_inputs(task, sdir, search, config, timings)
        search, templates, zpres = inputs.search, inputs.templates, inputs.zeropoints
        t0 = time.perf_counter()
        paths.directory.mkdir(parents=True, exist_ok=True)
        write_star_list(paths.directory / snstar_name(task.search_expnum, task.ccdnum,
                                                      task.rnum, task.pnum), inputs.stars,
                        band=task.band, rnum=task.rnum, pnum=task.pnum)
        write_veto_list(paths.directory / snveto_name(task.search_expnum, task.ccdnum,
                                                      task.rnum, task.pnum), inputs.veto,
                        band=task.band, rnum=task.rnum, pnum=task.pnum)
        timings["starcat"] += time.perf_counter() - t0

        # --- difference imaging
        result = difference_ccd(search, templates, star_veto=inputs.veto, config=config,
                                rng=fake_rng(task), keep_intermediate=task.full_copy)
        for k, v in result.timings.items():
            timings[k if k != "total" else "difference"] = v
        rejected: list[dict[str, Any]] = inputs.missing + [{"expnum": r.expnum,
                                                            "ccdnum": r.ccdnum,
                               "reasons": list(r.reasons)} for r in result.templates_rejected]
        if result.empty:
            why = ", ".join(result.flags)
            detail = "; ".join(f"{r['expnum']}/{r['ccdnum']}: {', '.join(r['reasons'])}"
                               for r in rejected) or "no template CCD overlaps"
            kind = "nothing_to_do" if "no_template" in result.flags else "failed"
            raise DiffError(f"nothing subtracted ({why}): {detail}", kind=kind)

        # --- database: the candidates first (a crash before the marker redoes the CCD, and
        # its rows replace these)
        if task.settings.db_url is not None:
            t0 = time.perf_counter()
            _record_db(task, result, zp_source=zpres.search_source)
            timings["db"] = time.perf_counter() - t0

        # --- products
        t0 = time.perf_counter()
        cfg_hash = config_hash(config)
        header = _header(task, result, cfg_hash)
        flags = [*result.flags, *zpres.flags]
        if zpres.mode != "absolute":
            header["ZPMODE"] = (zpres.mode, "zeropoints: absolute/relative/instrumental")
            header["ZPSOURCE"] = (zpres.search_source[:40], "where the search MAGZERO comes from")
            if math.isfinite(zpres.search_zp_err):
                header["MAGZERR"] = (zpres.search_zp_err, "error of a nominal MAGZERO (mag)")
        products = write_diff_products(result, paths, header=header, wcs=search.wcs,
                                       full_copy=task.full_copy, search=search)
        timings["write"] = time.perf_counter() - t0
        if before_marker is not None:
            t0 = time.perf_counter()
            before_marker()
            timings["write_se"] = time.perf_counter() - t0

        # --- completion marker
        rb_thr = float(header["RBTHRESH"]) if "RBTHRESH" in header else None
        eff = result.efficiency
        n_rec = int(np.sum(result.fakes["recovered"])) if len(result.fakes) else 0
        timings["total"] = time.perf_counter() - t_start
        doc = {
            "format": _DONE_FORMAT, "ok": True, "expnum": int(task.search_expnum),
            "ccdnum": int(task.ccdnum), "band": task.band, "rnum": task.rnum,
            "pnum": task.pnum, "season": task.season, "version": task.version,
            "template_expnums": sorted({int(e) for e, _ in result.templates_used}),
            "templates_requested": sorted(int(e) for e in task.template_expnums),
            "templates_used": [list(t) for t in result.templates_used],
            "templates_rejected": rejected, "flags": flags, "zeropoints": zpres.as_dict(),
            "n_candidates": len(result.candidates), "n_fakes": len(result.fakes),
            "n_fakes_recovered": n_rec,
            "real_bogus_threshold": rb_thr,
            "n_candidates_above_threshold": None if rb_thr is None
            else n_above_threshold(result.candidates, rb_thr),
            # the fakes' efficiency is on the usable area; its fraction goes with it
            "efficiency": None if eff is None else {
                "m50": _finite(eff.m50), "m50_err": _finite(eff.m50_err),
                "usable_area_fraction": _finite(result.meta.get("usable_area_fraction",
                                                                math.nan)),
                "n_fakes_masked": result.meta.get("fakes_masked")},
            "ideal_limit_mag": None if result.ideal_limit is None
            else _finite(result.ideal_limit.mag),
            "registration": result.meta.get("registration", []),
            "masked_fraction": _finite(result.meta.get("masked_fraction", math.nan)),
            "bad_fraction": _finite(result.meta.get("bad_fraction", math.nan)),
            "zogy_kernel_size": result.meta.get("zogy_kernel_size"),
            "config_hash": cfg_hash, "desgw_version": __version__,
            # size and checksum of each product file: a resume redoes a CCD whose products
            # changed since (folders, e.g. the PNG stamps, by name only)
            "products": {k: file_record(v) if Path(v).is_file() else Path(v).name
                         for k, v in products.items()},
            "timings": timings,
        }
        atomic_write_text(paths.done, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        log.info("diff %d CCD %d: %d candidates, %d/%d fakes, %.1f s", task.search_expnum,
                 task.ccdnum, len(result.candidates), n_rec, len(result.fakes),
                 timings["total"])
        return DiffSummary(
            ccdnum=int(task.ccdnum), ok=True, n_candidates=len(result.candidates),
            n_fakes=len(result.fakes), n_fakes_recovered=n_rec, timings=dict(timings),
            flags=tuple(flags), templates_used=tuple(result.templates_used),
            m50=math.nan if eff is None else float(eff.m50),
            m50_err=math.nan if eff is None else float(eff.m50_err),
            ideal_limit_mag=math.nan if result.ideal_limit is None
            else float(result.ideal_limit.mag),
            outdir=str(paths.directory),
            rb_threshold=rb_thr,
            n_above_threshold=int(doc["n_candidates_above_threshold"] or 0))
    except Exception as exc:  # noqa: BLE001 - a failed CCD must not stop the others
        kind = exc.kind if isinstance(exc, DiffError) else "failed"
        log.error("difference imaging of exposure %d CCD %d: %s", task.search_expnum,
                  task.ccdnum, describe_error(exc))
        log.debug("%s", traceback.format_exc())
        timings["total"] = time.perf_counter() - t_start
        return DiffSummary(ccdnum=int(task.ccdnum), ok=False, error=exc, error_kind=kind,
                           timings=timings)

