"""The ``desgw`` command line: one command, one subcommand per stage.

Heavy modules are imported inside each subcommand so ``desgw --help`` stays instant.
Exit codes: 0 success, 1 processing failure, 2 usage error (click), 3 bad input (a file, HDU or
keyword is wrong, or a file or folder cannot be read or written: the message names it), 4 database
unreachable or locked, or not a database URL (the password is never shown).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .io.settings import Settings
    from .se.photocal import ExposureZP

EXIT_BAD_INPUT = 3


class _ProcessingNumber(click.ParamType):
    """``-r R`` / ``-p P`` of se and sediff: the numbers of ``r{R}p{P}`` (``4`` or ``r4``).

    The same letters mean something else in ``diffimg`` (``-r r4p7 -p dp91``, as in the
    original); a value in that form gets an error that shows this command's form.
    """

    name = "integer"

    def __init__(self, letter: str, command: str) -> None:
        self.letter = letter
        self.command = command

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        body = text[1:] if text[:1].lower() == self.letter else text
        if body.isdigit():
            return int(body)
        form = (f"`desgw {self.command}` takes the processing version as two numbers, "
                f"-r R -p P (e.g. -r 4 -p 7 for r4p7)")
        import re

        if re.fullmatch(r"r\d+p\d+", text.lower()):
            hint = f"{text!r} is diffimg's -r form"
        elif text.lower().startswith("dp") or (self.letter == "p" and text[:1].lower() == "d"):
            hint = f"{text!r} looks like a season (diffimg's -p dp{{SEASON}}); season is -S here"
        else:
            hint = f"got {text!r}"
        self.fail(f"{form}; {hint}", param, ctx)


def _ccd_list(ccds: list[int] | str | None) -> list[int] | None:
    """The CCDs of a parsed ``--ccds`` value; None for all (``"all"`` or not given)."""
    return ccds if isinstance(ccds, list) else None


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _parse_ccds(text: str | None) -> list[int] | str | None:
    """``"28,35"`` -> [28, 35]; ``"1-5,9"`` -> [1..5, 9]; ``"all"`` -> "all"; None -> None.

    A malformed list, or a CCD outside 1..62, is a usage error (exit code 2)
    (:func:`desgw.instrument.parse_ccd_list`)."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return "all"
    from .instrument import parse_ccd_list

    try:
        return parse_ccd_list(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ccds") from None


class _InputErrorsAsExitCode(click.Group):
    """Turn desgw input errors into a one-line message and exit code 3 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        from .errors import DesgwInputError

        try:
            return super().invoke(ctx)
        except DesgwInputError as exc:
            click.echo(f"desgw: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except OSError as exc:
            # a file or folder that cannot be written or read (permissions, a file where a
            # folder should be, a read-only file system): one line naming it, not a traceback
            if exc.filename is None:
                raise
            where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
            click.echo(f"desgw: error: {where}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_InputErrorsAsExitCode)
@click.version_option(__version__, prog_name="desgw")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """desgw: DES-GW image processing of DECam exposures, raw to candidates."""
    _setup_logging(verbose)


@main.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--band", type=click.Choice(["g", "r", "i", "z", "Y"]), default="r", show_default=True)
@click.option("--ccds", "ccds_text", default=None,
              help="CCDNUMs to render, e.g. 28,35 or 1-62 or 'all' (default: a small central subset).")
@click.option("--n-templates", type=click.IntRange(0, 50), default=2, show_default=True,
              help="Template exposures at earlier epochs.")
@click.option("--n-search", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Search exposures on the night of the event.")
@click.option("--no-compress", is_flag=True, help="Write plain .fits instead of fpacked .fits.fz raw files.")
@click.option("--psf-profile", type=click.Choice(["moffat", "kolmogorov"]), default="moffat",
              show_default=True, help="Radial profile of the PSF (Kolmogorov drawn with galsim, slower).")
@click.option("--psf-beta", type=click.FloatRange(1.5, 10.0), default=None,
              help="Moffat index of every exposure (default: drawn from 2.5-3.5).")
@click.option("--psf-fwhm-tilt", type=click.FloatRange(0.0, 1.0), default=0.02, show_default=True,
              help="Largest fractional FWHM change per degree (0.2: up to ~6 % across a CCD).")
@click.option("--psf-e-astig", type=click.FloatRange(0.0, 0.3), default=None,
              help="Ellipticity of the astigmatism pattern at 1 deg (default: drawn from 0.02-0.04).")
def sim(outdir: Path, seed: int, band: str, ccds_text: str | None, n_templates: int, n_search: int,
        no_compress: bool, psf_profile: str, psf_beta: float | None, psf_fwhm_tilt: float,
        psf_e_astig: float | None) -> None:
    """Simulate a small DECam night: raw exposures, calibrations, a Gaia-format catalog and truth.

    Writes OUTDIR/raw/, OUTDIR/calib/, OUTDIR/gaia/ and OUTDIR/truth/ and prints a summary.
    """
    ccds = _parse_ccds(ccds_text)
    from .sim.night import simulate_night
    from .sim.survey import SurveyConfig

    base = SurveyConfig()
    survey = SurveyConfig(
        psf_profile=psf_profile,
        psf_beta=(psf_beta, psf_beta) if psf_beta is not None else base.psf_beta,
        psf_fwhm_tilt=psf_fwhm_tilt,
        psf_e_astig=(psf_e_astig, psf_e_astig) if psf_e_astig is not None else base.psf_e_astig,
    )
    summary = simulate_night(
        outdir, seed=seed, band=band, ccds=ccds, n_templates=n_templates,
        n_search=n_search, compress=not no_compress, survey_config=survey,
    )
    click.echo(str(summary))


@main.group()
def refcat() -> None:
    """Reference catalogs: ingest Gaia into a HEALPix Parquet store and query it."""


@refcat.command("ingest")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Store directory to create or update.")
@click.option("--order", type=click.IntRange(0, 12), default=7, show_default=True,
              help="HEALPix order (nested) of the partitions.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def refcat_ingest(sources: tuple[Path, ...], store: Path, order: int, overwrite: bool) -> None:
    """Ingest Gaia catalogs (CSV, FITS or Parquet files with Gaia archive column names, or folders
    of them)."""
    from .refcat import refcat_ingest_main

    index = refcat_ingest_main(list(sources), store, order=order, overwrite=overwrite)
    click.echo(f"ingested {index.total} stars into {store} (HEALPix order {index.order}, "
               f"{len(index.pixel_counts)} partitions)")


@refcat.command("query")
@click.option("--store", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--ra", type=float, required=True, help="Centre RA (deg).")
@click.option("--dec", type=float, required=True, help="Centre Dec (deg).")
@click.option("--radius", type=float, default=0.1, show_default=True, help="Cone radius (deg).")
@click.option("--epoch", type=float, default=None, help="Decimal year to propagate proper motions to.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the stars to this CSV/Parquet/FITS file instead of printing a count.")
def refcat_query(store: Path, ra: float, dec: float, radius: float, epoch: float | None,
                 out: Path | None) -> None:
    """Stars within a cone, at an epoch."""
    from .refcat import RefCatStore

    table = RefCatStore(store).query_cone(ra, dec, radius, epoch=epoch)
    if out is None:
        click.echo(f"{len(table)} stars within {radius} deg of ({ra}, {dec})")
        return
    from .io import products

    suffix = "".join(out.suffixes).lower()
    if suffix.endswith(".parquet"):
        products.write_parquet(out, table)
    elif suffix.endswith((".fits", ".fit")):
        products.write_fits_table(out, table)
    else:
        products.write_csv(out, table)
    click.echo(f"wrote {len(table)} stars to {out}")


EXIT_PROCESSING_FAILED = 1


def _settings_from_options(raw_dir: Path | None, calib_dir: Path | None, refcat_dir: Path | None,
                           out_root: Path | None, db_url: str | None, config_file: Path | None):
    """Settings: command-line options, then DESGW_* variables, then the TOML file, then defaults."""
    from .io.settings import load_settings

    return load_settings(raw_dir=raw_dir, calib_dir=calib_dir, refcat_dir=refcat_dir,
                         out_root=out_root, db_url=db_url, config_file=config_file)


def _settings_options(func):
    """The --raw-dir/--calib-dir/--refcat/--out/--db-url/--config options of the SE commands."""
    path = click.Path(path_type=Path)
    for decorator in reversed((
        click.option("--raw-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Raw exposures (default: $DESGW_RAW_DIR, desgw.toml, ./raw)."),
        click.option("--calib-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Calibrations bias/flat_BAND/bpm.fits(.fz) (default: $DESGW_CALIB_DIR, "
                          "desgw.toml, ./calib)."),
        click.option("--refcat", "refcat_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Gaia store (default: $DESGW_REFCAT, desgw.toml, ./refcat)."),
        click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Product root (default: $DESGW_OUT, desgw.toml, ./out)."),
        click.option("--db-url", default=None,
                     help="Record results in this database (default: $DESGW_DB_URL, desgw.toml, none)."),
        click.option("--config", "config_file", type=path, default=None,
                     help="TOML settings file (default: $DESGW_CONFIG, else ./desgw.toml if present)."),
    )):
        func = decorator(func)
    return func


@main.command("se")
@click.option("-E", "--expnum", type=click.IntRange(0, 99_999_999), required=True, help="Exposure number.")
@click.option("-r", "--rnum", type=_ProcessingNumber("r", "se"), required=True,
              help="Processing r number R of r{R}p{P} (e.g. -r 4; diffimg's -r takes r4p7).")
@click.option("-p", "--pnum", type=_ProcessingNumber("p", "se"), required=True,
              help="Processing p number P of r{R}p{P} (e.g. -p 7; diffimg's -p is the season).")
@click.option("-b", "--band", type=click.Choice(["g", "r", "i", "z", "Y", "u"]), default=None,
              help="Band (default: the raw header's; must agree with it).")
@click.option("-n", "--nite", type=click.IntRange(19000101, 99991231), default=None,
              help="Night YYYYMMDD of the product directory (default: the raw header's).")
@click.option("-d", "--destcache", type=click.Choice(["scratch", "persistent"]), default="scratch",
              show_default=True, help="Product cache: OUT/DESTCACHE/SCHEMA/exp/NITE/EXPNUM.")
@click.option("-m", "--schema", type=click.Choice(["gw", "wsdiff"]), default="gw", show_default=True)
@click.option("-S", "--season", type=int, default=None,
              help="Season (run) number; recorded in the log (the SE products do not depend on it).")
@click.option("-c", "--ccds", "ccds_text", default=None,
              help="CCDNUMs, e.g. 28,35 or 1-62 (default: 1-62 without the dead 2 and 61, those in "
                   "the file).")
@click.option("-C", "--calib", "run_calibration", is_flag=True,
              help="Photometric calibration against Gaia after SE (Zero_*, allZP_*, *_ZP.csv).")
@click.option("-j", "--jump-to-calib", is_flag=True,
              help="Skip SE; calibrate the existing fullcats (implies -C).")
@click.option("-s", "--single", "single_process", is_flag=True,
              help="Process the CCDs one after the other in this process.")
@click.option("-Y", "--special-y", is_flag=True,
              help="Accepted for compatibility, no effect: the original forced the Y4E1 calibrations; "
                   "choose calibrations with --calib-dir.")
@click.option("-O", "--overwrite", is_flag=True, help="Redo CCDs whose products exist.")
@click.option("-t", "--template", "template_mode", is_flag=True,
              help="Template exposure: measure the exposure quality but skip the verification.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes (default: one per core).")
@click.option("--instcal", is_flag=True,
              help="The exposure is a NOIRLab Community Pipeline InstCal triplet (c4d_*_ooi_*, "
                   "_ood_, _oow_ .fits[.fz], found under --raw-dir by EXPNUM): no calibrations; "
                   "desgw's PSF, catalog, Gaia-refined WCS, zeropoint and QC, same products.")
@_settings_options
def se(expnum: int, rnum: int, pnum: int, band: str | None, nite: int | None, destcache: str,
       schema: str, season: int | None, ccds_text: str | None, run_calibration: bool,
       jump_to_calib: bool, single_process: bool, special_y: bool, overwrite: bool,
       template_mode: bool, workers: int | None, instcal: bool, raw_dir: Path | None,
       calib_dir: Path | None,
       refcat_dir: Path | None, out_root: Path | None, db_url: str | None,
       config_file: Path | None) -> None:
    """Single-epoch processing of one raw exposure (the original SE_job_mod.sh).

    Writes per CCD D{EXPNUM}_{BAND}_{CCD}_r{R}p{P}_immask.fits.fz, _fullcat.fits, _psfmodel.fits
    and _qc.json, then {EXPNUM}.out, the exposure QC json and with -C the ZP CSV files. CCDs whose
    products exist are skipped unless -O. Exit code 0: all CCDs done; 1: some CCD or stage failed
    (listed); 3: bad input.
    """
    ccds = _parse_ccds(ccds_text)
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .workflow.se_exposure import run_se_exposure

    if season is not None:
        logging.getLogger("desgw.cli").info("season %d", season)
    report = run_se_exposure(
        expnum, settings=settings, rnum=rnum, pnum=pnum, nite=nite, band=band, cache=destcache,
        schema=schema, ccds=_ccd_list(ccds),
        run_calibration=run_calibration, jump_to_calib=jump_to_calib,
        single_process=single_process, overwrite=overwrite, template_mode=template_mode,
        special_y=special_y, workers=workers, instcal=instcal)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(EXIT_PROCESSING_FAILED)


@main.command("expcalib")
@click.option("--expnum", type=click.IntRange(0, 99_999_999), required=True, help="Exposure number.")
@click.option("--reqnum", type=click.IntRange(0), required=True, help="Processing r number.")
@click.option("--attnum", type=click.IntRange(0), required=True, help="Processing p number.")
@click.option("--ccd", "ccds_text", default=None, help="CCDNUMs, e.g. 1,3,4 (default: every fullcat found).")
@click.option("--magsType", "mags_type", type=click.Choice(["mag_psf", "mag_auto", "mag_aper_8"]),
              default="mag_psf", show_default=True, help="Photometry to calibrate.")
@click.option("--sex_mag_zeropoint", type=float, default=25.0, show_default=True,
              help="Zeropoint of the catalogs' MAG_* columns.")
@click.option("--verbose", "verbosity", type=int, default=0, show_default=True,
              help="> 0: a per-CCD summary in the log.")
@click.option("--debug", is_flag=True, help="Also write the matched stars of each CCD (_match.csv).")
@click.option("--zp-method", "zp_method", type=click.Choice(["weighted", "mean", "median"]),
              default="weighted", show_default=True,
              help="Estimator of each CCD's zeropoint (the original: mean).")
@click.option("--ccd-zp", "ccd_zp", type=click.Choice(["shrinkage", "own"]), default="shrinkage",
              show_default=True,
              help="Final CCD zeropoints: empirical-Bayes estimates over the exposure's CCDs "
                   "(from 5 CCDs on) or each CCD's own (the original).")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the fullcats (default: the working directory if it holds "
                                 "them, else the exposure's folder under the product root).")
@_settings_options
def expcalib(expnum: int, reqnum: int, attnum: int, ccds_text: str | None, mags_type: str,
             sex_mag_zeropoint: float, verbosity: int, debug: bool, zp_method: str, ccd_zp: str,
             directory: Path | None,
             raw_dir: Path | None, calib_dir: Path | None, refcat_dir: Path | None,
             out_root: Path | None, db_url: str | None, config_file: Path | None) -> None:
    """Photometric calibration of a processed exposure's fullcats (BLISS-expCalib_Y3apass.py).

    Writes Zero_D{EXPNUM}_{CCD}_r{R}p{P}.csv, allZP_D{EXPNUM}_r{R}p{P}.csv and
    D{EXPNUM}_{CCD}_r{R}p{P}_ZP.csv next to the fullcats. Exit code 1 when too few stars calibrate.
    """
    ccds = _parse_ccds(ccds_text)
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .io.product_paths import find_exposure_dir
    from .se.photocal import PhotometricCalibrationError
    from .workflow.se_calib import calibrate_exposure

    if directory is None:
        cwd = Path.cwd()
        if any(cwd.glob(f"D{expnum:08d}_*_r{reqnum}p{attnum}_fullcat.fits")):
            directory = cwd
        else:
            directory = find_exposure_dir(settings.out_root, expnum, reqnum, attnum)
    try:
        result = calibrate_exposure(
            expnum, reqnum, attnum, directory=directory, refcat_dir=settings.refcat_dir,
            ccds=_ccd_list(ccds), mags_type=mags_type,
            sex_mag_zeropoint=sex_mag_zeropoint, verbose=verbosity, debug=debug,
            zp_method=zp_method, ccd_zp=ccd_zp)
    except PhotometricCalibrationError as exc:
        click.echo(f"desgw: calibration failed: {exc}", err=True)
        sys.exit(EXIT_PROCESSING_FAILED)
    click.echo(f"exposure {expnum} r{reqnum}p{attnum}: ZP {result.zp:.4f} +- {result.zp_err:.4f} "
               f"mag from {result.exposure.n_used} stars ({mags_type}); CSV files in {directory}")
    for ccd, z in sorted(result.ccds.items()):
        flags = ",".join(n for n, f in (("replaced", z.replaced), ("outlier", z.outlier)) if f)
        click.echo(f"  CCD {ccd:02d}: {z.zp:.4f} +- {z.zp_err:.4f} ({z.measured.n_used} stars, "
                   f"{z.source})" + (f" [{flags}]" if flags else ""))
    if result.shrinkage is not None:
        click.echo(f"  CCD zeropoints shrunk over {result.shrinkage.n_ccds} CCDs: real "
                   f"CCD-to-CCD scatter tau {1000 * result.shrinkage.tau:.1f} mmag")
    if result.exposure_flagged:
        click.echo("  exposure FLAGGED: too many CCD zeropoints are outliers")
    if settings.db_url is not None:
        _record_calibration(settings, expnum, reqnum, attnum, result)


def _record_calibration(settings: Settings, expnum: int, rnum: int, pnum: int,
                        result: ExposureZP) -> None:
    """``desgw expcalib`` with a database: its zeropoints recorded and the exposure's
    detections' magnitudes put on them (:func:`desgw.workflow.se_db.record_calibration`);
    an exposure the database does not know is reported, not an error."""
    from .db import connect, get_exposure
    from .workflow.se_db import record_calibration

    with _DatabaseErrorsAsExitCode(), connect(settings.db_url) as db:
        if get_exposure(db, expnum) is None:
            click.echo(f"  database: exposure {expnum} is not registered; zeropoints not "
                       "recorded", err=True)
            return
        n = record_calibration(db, expnum, rnum, pnum, result)
    click.echo(f"  database: zeropoints recorded; {n} detections' magnitudes put on them")


EXIT_DATABASE_ERROR = 4


class _DatabaseErrorsAsExitCode:
    """``with _DatabaseErrorsAsExitCode():`` a database that cannot be opened, is locked or is
    unreachable gives a one-line message (the URL's password masked) and exit code 4."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        from .db import DatabaseError

        if exc is not None and isinstance(exc, DatabaseError):
            click.echo(f"desgw: database error: {exc}", err=True)
            sys.exit(EXIT_DATABASE_ERROR)


def _quiet_dask_logs() -> None:
    """Dask's own INFO lines only with -vv (distributed sets its loggers up when imported)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        import distributed  # noqa: F401

        for name in ("distributed", "dask_jobqueue"):
            logging.getLogger(name).setLevel(logging.ERROR)


@main.group()
def calib() -> None:
    """Calibration files: import real DECam calibrations into desgw's layout."""


@calib.command("import")
@click.argument("kind", type=click.Choice(["bias", "flat", "bpm"]))
@click.argument("sources", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--band", type=click.Choice(["g", "r", "i", "z", "Y", "u"]), default=None,
              help="Band of a flat (default: the FILTER of its header).")
@click.option("--bias-unit", type=click.Choice(["adu", "electron"]), default=None,
              help="Unit of a bias whose header has no BUNIT.")
@click.option("--overwrite", is_flag=True, help="Replace an existing calibration file.")
@_settings_options
def calib_import(kind: str, sources: tuple[Path, ...], band: str | None, bias_unit: str | None,
                 overwrite: bool, raw_dir: Path | None, calib_dir: Path | None,
                 refcat_dir: Path | None, out_root: Path | None, db_url: str | None,
                 config_file: Path | None) -> None:
    """Convert a CP master bias or dome flat (one MEF, one HDU per CCD, as the NOIRLab archive
    serves them) or DECam bad-pixel masks (one file per CCD, or one MEF) into desgw's
    calibration folder: bias.fits.fz (electrons: ADU times GAINA/GAINB per amplifier),
    flat_BAND.fits.fz (mean 1 per CCD) or bpm.fits.fz. Exit code 3: bad input (named)."""
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .io.calib_import import import_calibration

    path = import_calibration(kind, list(sources), settings.calib_dir, band=band,
                              bias_unit=bias_unit, overwrite=overwrite)
    with __import__("astropy.io.fits", fromlist=["fits"]).open(path) as h:
        n = sum(1 for hdu in h[1:] if hdu.header.get("NAXIS", 0) == 2 or hdu.is_image)
    click.echo(f"{kind}: {n} CCDs from {len(sources)} file(s) written to {path}")


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--reject-propid", "reject_propids", multiple=True,
              help="Also reject exposures of this proposal id (repeatable).")
@click.option("--db-timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a locked SQLite database.")
@_settings_options
def ingest(paths: tuple[Path, ...], reject_propids: tuple[str, ...], db_timeout: float,
           raw_dir: Path | None, calib_dir: Path | None, refcat_dir: Path | None,
           out_root: Path | None, db_url: str | None, config_file: Path | None) -> None:
    """Register raw exposures (files, or folders of DECam_*/c4d_*.fits(.fz)) in the database.

    Each file is recognised by its primary header (PROCTYPE, PRODTYPE, OBSTYPE) and the output
    says what it is: a raw exposure, a Community Pipeline InstCal image (registered; process it
    with `desgw se --instcal`), its mask or weight (not registered: the image's companions), a
    CP master calibration or a raw calibration exposure (not registered). Science exposures are
    registered; calibration, test and unusable files are listed with the reason. The
    database comes from --db-url, $DESGW_DB_URL or desgw.toml (default ./desgw.sqlite).
    Exit code 0: done; 3: no raw file found; 4: database error.
    """
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .db import connect, ingest_raw
    from .errors import MissingFileError
    from .workflow.dagmaker import find_raw_files

    files: list[Path] = []
    for p in paths:
        files.extend(find_raw_files(p) if p.is_dir() else [p])
    if not files:
        raise MissingFileError(paths[0], None, "no raw exposure files (DECam_*.fits(.fz), "
                               "c4d_*.fits(.fz)) found")
    kinds = _classify_files(files)
    not_exposures = {p: k for p, k in kinds.items()
                     if k in ("CP InstCal mask", "CP InstCal weight", "CP master calibration")}
    for p, k in kinds.items():
        note = {"CP InstCal image": " (process it with desgw se --instcal)",
                "CP InstCal mask": ", not registered (read with its image)",
                "CP InstCal weight": ", not registered (read with its image)",
                "CP master calibration": ", not registered: not an exposure"}.get(k, "")
        click.echo(f"  {p.name}: {k}{note}")
    files = [p for p in files if p not in not_exposures]
    with _DatabaseErrorsAsExitCode(), connect(settings.db_url, busy_timeout_s=db_timeout) as db:
        report = ingest_raw(db, files, reject_propids=reject_propids)
        click.echo(f"{db.url}: {len(report.registered)} exposures registered, "
                   f"{len(report.rejected)} files rejected")
    for expnum in report.registered:
        click.echo(f"  registered {expnum}")
    for path, why in report.rejected:
        click.echo(f"  rejected {path}: {why}")


def _classify_files(files: list[Path]) -> dict[Path, str]:
    """What each DECam file is, from its primary header (desgw.io.instcal.decam_file_kind):
    raw exposure, raw calibration exposure, CP InstCal image / mask / weight, CP master
    calibration, other. Unreadable files are left to ingest_raw, which reports them."""
    from astropy.io import fits

    from .io.instcal import decam_file_kind, instcal_plane

    out: dict[Path, str] = {}
    for p in files:
        try:
            hdr = fits.getheader(p, 0)
        except (OSError, ValueError):
            continue
        kind = decam_file_kind(hdr)
        if kind == "instcal":
            # the name (_ooi_/_ood_/_oow_) first: cut-outs copy the image's primary header
            plane = ("image" if "_ooi_" in p.name else "mask" if "_ood_" in p.name
                     else "weight" if "_oow_" in p.name else instcal_plane(hdr))
            out[p] = f"CP InstCal {plane}"
        else:
            out[p] = {"raw": "raw exposure", "calibration": "raw calibration exposure",
                      "cp_calibration": "CP master calibration"}.get(kind, "other product")
    return out


@main.command("dagmaker")
@click.argument("expnum", type=click.IntRange(0, 99_999_999))
@click.option("--rc", "rc_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DAGMaker settings (dagmaker.rc shell format, or .toml); default ./dagmaker.rc "
                   "if present, else the original defaults.")
@click.option("-o", "--output", "graph_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Task graph JSON to write (default desgw_graph_EXPNUM.json; "
                                 "--out is the product root, as in every command).")
@click.option("--condor", "condor_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Also write the HTCondor DAG (desgw_pipeline_EXPNUM.dag) and "
                                 "submit files into this folder.")
@click.option("-c", "--ccds", "ccds_text", default=None,
              help="Search CCDNUMs (default: those in the raw file, without 2 and 61).")
@click.option("--blacklist", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="File of exposure numbers never to use as templates.")
@click.option("--db-timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a locked SQLite database.")
@_settings_options
def dagmaker(expnum: int, rc_file: Path | None, graph_out: Path | None, condor_dir: Path | None,
             ccds_text: str | None, blacklist: Path | None, db_timeout: float,
             raw_dir: Path | None, calib_dir: Path | None, refcat_dir: Path | None,
             out_root: Path | None, db_url: str | None, config_file: Path | None) -> None:
    """Plan the processing of a search exposure (the original DAGMaker.sh).

    Selects template exposures (database, else the raw files' headers) by the dagmaker.rc
    rules, finds the template CCDs that overlap each search CCD and writes the task graph
    (SE per CCD, calibration per exposure, difference imaging per search CCD) for
    `desgw run`; with --condor also an HTCondor DAG. Exit code 3: bad input; 4: database error.
    """
    ccds = _parse_ccds(ccds_text)
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .workflow.dagmaker import make_dag
    from .workflow.dagmaker_rc import DagmakerConfig, read_dagmaker_config
    from .workflow.templates import read_blacklist

    if rc_file is None and Path("dagmaker.rc").is_file():
        rc_file = Path("dagmaker.rc")
    config = read_dagmaker_config(rc_file) if rc_file is not None else DagmakerConfig()
    banned = read_blacklist(blacklist) if blacklist is not None else frozenset()
    with _DatabaseErrorsAsExitCode():
        db = None
        if settings.db_url is not None:
            from .db import connect

            db = connect(settings.db_url, busy_timeout_s=db_timeout)
        try:
            graph = make_dag(expnum, settings=settings, config=config, db=db, blacklist=banned,
                             ccds=_ccd_list(ccds))
        finally:
            if db is not None:
                db.close()
    path = graph.write(graph_out or Path(f"desgw_graph_{expnum}.json"))
    meta = graph.meta
    counts = graph.counts()
    click.echo(f"search exposure {expnum} ({meta['search']['band']}, nite "
               f"{meta['search']['product_nite']}): {len(meta['templates'])} templates, "
               f"{counts['se']} SE, {counts['expcalib']} expcalib, {counts['diff']} diff tasks")
    for t in meta["templates"]:
        kept = f", {len(t['existing_ccds'])} already processed" if t["existing_ccds"] else ""
        click.echo(f"  template {t['expnum']} (nite {t['nite']}): CCDs "
                   f"{','.join(map(str, t['ccds']))}{kept}")
    for r in meta["rejected"]:
        click.echo(f"  rejected {r['expnum']}: {'; '.join(r['reasons'])}")
    for d in meta["dropped"]:
        click.echo(f"  dropped {d['expnum']}: {d['reason']}")
    if meta["no_template_ccds"]:
        click.echo(f"  no template overlaps CCDs {meta['no_template_ccds']}")
    click.echo(f"wrote {path}")
    if condor_dir is not None:
        from .engine.condor import write_condor_dag

        export = write_condor_dag(graph, condor_dir, settings=settings, search_expnum=expnum)
        click.echo(f"wrote {export.dag} ({export.n_nodes} nodes) and "
                   f"{', '.join(p.name for p in export.submit_files.values())}")


@main.command("run")
@click.argument("graph_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://host:8786); 'local' (default): a local cluster "
                   "of worker processes; 'single': one task after the other in this process.")
@click.option("--cluster", type=click.Choice(["htcondor", "slurm"]), default=None,
              help="Start the Dask workers as batch jobs (dask-jobqueue; 1 core, 3.5 GB each).")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes, or batch jobs with --cluster (default: one per core).")
@click.option("-O", "--overwrite", is_flag=True, help="Run every task, even those whose products exist.")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True,
              help="Extra attempts for transient errors and for tasks whose worker died.")
@click.option("--db-timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a locked SQLite database.")
@_settings_options
def run(graph_file: Path, scheduler: str | None, cluster: str | None, workers: int | None,
        overwrite: bool, retries: int, db_timeout: float, raw_dir: Path | None,
        calib_dir: Path | None, refcat_dir: Path | None, out_root: Path | None,
        db_url: str | None, config_file: Path | None) -> None:
    """Execute a task graph written by `desgw dagmaker` (on Dask).

    Tasks whose products exist are skipped unless -O; a failed task is reported and the others
    go on. Task logs and a run summary go to OUT/logs/. Exit code 0: every task done or skipped,
    or degraded only (an exposure calibration short of Gaia stars whose dependent tasks all
    finished: listed as DEGRADED, zeropoints from relative or nominal scales, flagged in the
    products); 1: some task failed or was blocked (listed); 3: bad input; 4: database error.
    """
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .engine.graph import TaskGraph
    from .workflow.tasks import check_task_args, run_pipeline

    graph = TaskGraph.read(graph_file)
    check_task_args(graph, source=str(graph_file))
    _quiet_dask_logs()
    with _DatabaseErrorsAsExitCode():
        report = run_pipeline(graph, settings=settings, scheduler=scheduler, cluster=cluster,
                              workers=workers, overwrite=overwrite, retries=retries,
                              db_timeout_s=db_timeout)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(EXIT_PROCESSING_FAILED)


@main.command("sediff", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-E", "--expnum", type=click.IntRange(0, 99_999_999), required=True,
              help="Search exposure number.")
@click.option("-r", "--rnum", type=_ProcessingNumber("r", "sediff"), required=True,
              help="SE processing r number R of r{R}p{P} (e.g. -r 4; diffimg's -r takes r4p7).")
@click.option("-p", "--pnum", type=_ProcessingNumber("p", "sediff"), required=True,
              help="SE processing p number P of r{R}p{P} (e.g. -p 7; the season is -S).")
@click.option("-n", "--nite", type=click.IntRange(19000101, 99991231), default=None,
              help="Night YYYYMMDD of the product directory (default: the raw header's).")
@click.option("-b", "--band", type=click.Choice(["g", "r", "i", "z", "Y", "u"]), default=None,
              help="Band (default: the raw header's; must agree with it).")
@click.option("-S", "--season", required=True,
              help="Season, e.g. 67 or dp67 (difference-imaging version dp{S}).")
@click.option("-c", "--ccds", "ccds_text", default=None,
              help="CCDNUMs, e.g. 28,35 or 1-62 (default: those in the raw file, without 2 and 61).")
@click.option("-d", "--destcache", type=click.Choice(["scratch", "persistent"]), default="scratch",
              show_default=True)
@click.option("-m", "--schema", type=click.Choice(["gw", "wsdiff"]), default="gw", show_default=True)
@click.option("-v", "--version", "diff_version", default=None,
              help="DiffImg version tag (default: DIFFIMG_EUPS_VERSION of the rc file).")
@click.option("-V", "--snveto", default=None, help="Also write the veto list (makestarcat) under this name.")
@click.option("-T", "--starcat", default=None, help="Also write the star list (makestarcat) under this name.")
@click.option("-C", "--calib", "run_calibration", is_flag=True,
              help="Photometric calibration of the search and template exposures.")
@click.option("-j", "--jump-to-calib", is_flag=True,
              help="No SE of the search exposure: calibrate its existing fullcats and go on.")
@click.option("-s", "--single", "single_process", is_flag=True,
              help="Run the tasks one after the other in this process.")
@click.option("-Y", "--special-y", is_flag=True, help="Accepted for compatibility, no effect.")
@click.option("-F", "--fullcopy", is_flag=True,
              help="FULLCOPY: keep every intermediate image of the difference imaging.")
@click.option("-O", "--overwrite", is_flag=True, help="Redo the tasks whose products exist.")
@click.option("-t", "--template", "template_mode", is_flag=True,
              help="Template exposure: SE (and calibration with -C) only; no difference imaging.")
@click.option("--templates", "templates_text", default=None,
              help="Use these template exposures, e.g. 664075,664080 (default: the DAGMaker rules).")
@click.option("--rc", "rc_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="DAGMaker rules for choosing templates (dagmaker.rc or .toml).")
@click.option("--blacklist", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File of exposure numbers never to use as templates.")
@click.option("--no-fakes", is_flag=True, help="Do not inject fake sources in the difference imaging.")
@click.option("--scheduler", default=None, help="Dask scheduler address, 'local' (default) or 'single'.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes (default: one per core).")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True,
              help="Extra attempts for transient errors and for tasks whose worker died.")
@click.option("--db-timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a locked SQLite database.")
@_settings_options
def sediff(expnum: int, rnum: int, pnum: int, nite: int | None, band: str | None, season: str,
           ccds_text: str | None, destcache: str, schema: str, diff_version: str | None,
           snveto: str | None, starcat: str | None, run_calibration: bool, jump_to_calib: bool,
           single_process: bool, special_y: bool, fullcopy: bool, overwrite: bool,
           template_mode: bool, templates_text: str | None, rc_file: Path | None,
           blacklist: Path | None, no_fakes: bool, scheduler: str | None, workers: int | None,
           retries: int, db_timeout: float, raw_dir: Path | None, calib_dir: Path | None,
           refcat_dir: Path | None, out_root: Path | None, db_url: str | None,
           config_file: Path | None) -> None:
    """SE + verification + difference imaging of a search exposure's CCDs (the original SEdiff.sh).

    Templates (chosen by the DAGMaker rules, or --templates) whose overlapping CCDs lack SE
    products are processed first. Exit code 0: all done, or degraded only: a photometric
    calibration (-C) that failed for lack of stars while everything depending on it succeeded
    is listed as DEGRADED with a warning (the zeropoints used are named in each diffdone JSON);
    1: some task failed or was blocked (listed); 3: bad input; 4: database error.
    """
    ccds = _parse_ccds(ccds_text)
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .workflow.dagmaker_rc import read_dagmaker_config
    from .workflow.sediff import parse_season, run_sediff
    from .workflow.templates import read_blacklist

    try:
        season_n = parse_season(season)
        templates = None if templates_text is None else \
            [int(t) for t in templates_text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    config = read_dagmaker_config(rc_file) if rc_file is not None else None
    banned = read_blacklist(blacklist) if blacklist is not None else frozenset()
    _quiet_dask_logs()
    with _DatabaseErrorsAsExitCode():
        report = run_sediff(
            expnum, settings=settings, rnum=rnum, pnum=pnum, season=season_n, nite=nite,
            band=band, ccds=_ccd_list(ccds), cache=destcache,
            schema=schema, version=diff_version, snveto=snveto, starcat=starcat,
            run_calibration=run_calibration, jump_to_calib=jump_to_calib,
            single_process=single_process, special_y=special_y, fullcopy=fullcopy,
            overwrite=overwrite, template_mode=template_mode, templates=templates,
            config=config, blacklist=banned, fakes=not no_fakes, scheduler=scheduler,
            workers=workers, retries=retries, db_timeout_s=db_timeout)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(EXIT_PROCESSING_FAILED)


def _parse_rp(text: str) -> tuple[int, int]:
    """``"r4p7"`` -> (4, 7)."""
    import re

    m = re.fullmatch(r"\s*r(\d+)p(\d+)\s*", text or "")
    if not m:
        raise click.BadParameter(f"`desgw diffimg` takes the SE version as one word, -r r{{R}}p{{P}} "
                                 f"(e.g. -r r4p7), and the season as -p (e.g. -p dp91); got "
                                 f"{text!r} (se and sediff take -r R -p P)", param_hint="-r")
    return int(m.group(1)), int(m.group(2))


def _parse_dp(text: str) -> int:
    """``"dp91"`` or ``"91"`` -> 91."""
    t = (text or "").strip()
    t = t[2:] if t.lower().startswith("dp") else t
    if not t.isdigit():
        hint = (" (that is an SE version: diffimg takes it as -r)"
                if t.lower().startswith("r") else "")
        raise click.BadParameter(f"`desgw diffimg` takes the season as -p, e.g. -p 91 or -p dp91 "
                                 f"(the SE version r{{R}}p{{P}} goes to -r); got {text!r}{hint}",
                                 param_hint="-p")
    return int(t)


@main.command("diffimg", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-E", "--expnum", type=click.IntRange(0, 99_999_999), required=True,
              help="Search exposure number.")
@click.option("-r", "--rp", "rp_text", required=True,
              help="SE processing version of the inputs, r{R}p{P} (e.g. r1p1).")
@click.option("-p", "--season", "season_text", required=True,
              help="Season (difference-imaging version), e.g. 91 or dp91.")
@click.option("-n", "--nite", type=click.IntRange(19000101, 99991231), default=None,
              help="Night YYYYMMDD of the search exposure's product directory (default: found "
                   "from the products; an error when it contradicts them).")
@click.option("-b", "--band", type=click.Choice(["g", "r", "i", "z", "Y", "u"]), required=True)
@click.option("-c", "--ccd", type=click.IntRange(1, 62), required=True, help="Search CCD number.")
@click.option("-d", "--destcache", type=click.Choice(["scratch", "persistent"]), default="scratch",
              show_default=True, help="Product cache: OUT/DESTCACHE/SCHEMA/exp/NITE/EXPNUM.")
@click.option("-m", "--schema", type=click.Choice(["gw", "wsdiff"]), default="gw", show_default=True)
@click.option("-v", "--version", "diff_version", default="desgw", show_default=True,
              help="DiffImg version tag recorded in the products.")
@click.option("-F", "--fullcopy", is_flag=True,
              help="Keep every intermediate image (search with fakes, each resampled template), as the "
                   "original's FULLCOPY; default: the difference and the template coadd.")
@click.option("--templates", "templates_text", default=None,
              help="Template exposures, e.g. 664075,664080 (default: every processed exposure of the band).")
@click.option("--no-fakes", is_flag=True, help="Do not inject fake sources (no efficiency).")
@click.option("-O", "--overwrite", is_flag=True, help="Redo the CCD if its products exist.")
@_settings_options
def diffimg(expnum: int, rp_text: str, season_text: str, nite: int | None, band: str, ccd: int,
            destcache: str, schema: str, diff_version: str, fullcopy: bool,
            templates_text: str | None, no_fakes: bool, overwrite: bool, raw_dir: Path | None,
            calib_dir: Path | None, refcat_dir: Path | None, out_root: Path | None,
            db_url: str | None, config_file: Path | None) -> None:
    """Difference imaging of one search CCD (the original RUN_DIFFIMG_PIPELINE.sh).

    Reads the SE products of the search CCD and of the overlapping template CCDs, writes under
    EXPOSURE_DIR/dp{SEASON}/{BAND}_{CCD}/ the difference (SCI/MSK/WGT/SCORE), the template coadd,
    candidates (FITS, Parquet), fakes, stamps (FITS, PNG), efficiency JSON and SNSTAR/SNVETO lists.
    The summary counts the candidates whose real/bogus score reaches the shipped model's
    threshold (also in the candidate table header RBTHRESH and the JSON files).
    Exit code 0: done (or already done); 1: failed or nothing to do (listed); 3: bad input
    (e.g. -n contradicting the night of the exposure's products).
    """
    rnum, pnum = _parse_rp(rp_text)
    season = _parse_dp(season_text)
    try:
        templates = () if templates_text is None else \
            tuple(int(t) for t in templates_text.replace(" ", "").split(",") if t)
    except ValueError:
        raise click.BadParameter(f"not exposure numbers: {templates_text!r}",
                                 param_hint="--templates") from None
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .workflow.diff_ccd import DiffTask, run_diff_ccd
    from .workflow.nite import resolve_product_nite

    given = nite
    nite = resolve_product_nite(settings.out_root, expnum, band, ccd, rnum, pnum,
                                cache=destcache, schema=schema, nite=nite)
    if given is None:
        click.echo(f"diffimg {expnum}: night {nite} (from the exposure's products)")

    task = DiffTask(search_expnum=expnum, ccdnum=ccd, template_expnums=templates,
                    settings=settings, rnum=rnum, pnum=pnum, season=season, cache=destcache,
                    schema=schema, version=diff_version, band=band, nite=nite,
                    fakes=not no_fakes, overwrite=overwrite, full_copy=fullcopy)
    s = run_diff_ccd(task)
    if not s.ok:
        what = "nothing to do" if s.error_kind == "nothing_to_do" else "FAILED"
        click.echo(f"diffimg {expnum} CCD {ccd:02d} dp{season}: {what}: {s.reason}", err=True)
        sys.exit(EXIT_PROCESSING_FAILED)
    state = "already done (use -O to redo)" if s.skipped else "done"
    eff = "" if s.m50 != s.m50 else f", fakes m50 {s.m50:.2f} +- {s.m50_err:.2f}"
    lim = "" if s.ideal_limit_mag != s.ideal_limit_mag else f" (ideal {s.ideal_limit_mag:.2f})"
    rb = ("" if s.rb_threshold is None else
          f" ({s.n_above_threshold} with real/bogus >= {s.rb_threshold:.3f})")
    click.echo(f"diffimg {expnum} CCD {ccd:02d} dp{season}: {state}: {s.n_candidates} candidates"
               f"{rb}, {s.n_fakes_recovered}/{s.n_fakes} fakes recovered{eff}{lim}; "
               f"{len(s.templates_used)} template CCDs; {s.timings.get('total', 0.0):.1f} s")
    if s.outdir:
        click.echo(f"  products: {s.outdir}")
    if s.flags:
        click.echo(f"  flags: {', '.join(s.flags)}")


@main.command("makestarcat", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-e", "expnum", type=click.IntRange(0, 99_999_999), required=True,
              help="Search exposure number.")
@click.option("-n", "nite", type=int, required=True, help="Night of the search exposure (logged).")
@click.option("-r", "rnum", type=click.IntRange(0), required=True, help="Processing r number.")
@click.option("-p", "pnum", type=click.IntRange(0), required=True, help="Processing p number.")
@click.option("-b", "band", type=click.Choice(["g", "r", "i", "z", "Y", "u"]), required=True)
@click.option("-s", "season", type=int, required=True, help="Season (logged).")
@click.option("--ccd", type=click.IntRange(1, 62), default=1, show_default=True, help="Search CCD.")
@click.option("-outdir", "outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder of the outputs.")
@click.option("-rootdir", "rootdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where the D*_r{R}p{P}_ZP.csv tables and {EXPNUM}.out are looked for.")
@click.option("-snstar", "snstar", default=None,
              help="Star list name (default SNSTAR_{EXPNUM}_{CCD}_r{R}p{P}.LIST).")
@click.option("-snveto", "snveto", default=None,
              help="Veto list name (default SNVETO_{EXPNUM}_{CCD}_r{R}p{P}.LIST).")
def makestarcat(expnum: int, nite: int, rnum: int, pnum: int, band: str, season: int, ccd: int,
                outdir: Path, rootdir: Path, snstar: str | None, snveto: str | None) -> None:
    """Star and veto lists of one search CCD from the template exposures' SE tables (makestarcat.py)."""
    from .workflow.makestarcat import makestarcat_main

    res = makestarcat_main(expnum=expnum, nite=nite, rnum=rnum, pnum=pnum, band=band,
                           season=season, ccd=ccd, outdir=outdir, rootdir=rootdir,
                           snstar=snstar, snveto=snveto)
    click.echo(f"{len(res.stars)} stars from {len(res.catalog_paths)} SE tables: {res.snstar_path}, "
               f"{res.snveto_path}")


@main.command("watch")
@click.argument("rawdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rc", "rc_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="DAGMaker rules and processing version (dagmaker.rc or .toml); "
                                 "default ./dagmaker.rc if present, else the original defaults.")
@click.option("--search-nite", type=click.IntRange(19000101, 99991231), default=None,
              help="Exposures of this night (YYYYMMDD) or later are search exposures, earlier "
                   "ones templates (default: tonight).")
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://host:8786); 'local' (default): a local cluster "
                   "of worker processes; 'single': one task after the other in this process.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes of the local cluster (default: one per core).")
@click.option("--poll", "poll_s", type=click.FloatRange(0.05), default=2.0, show_default=True,
              help="Seconds between looks at RAWDIR.")
@click.option("--settle", "settle_s", type=click.FloatRange(0), default=2.0, show_default=True,
              help="A file is read once its size and time have not changed for this long (s).")
@click.option("--max-exposures", type=click.IntRange(1), default=None,
              help="Stop after this many exposures are processed.")
@click.option("--idle", "idle_s", type=click.FloatRange(0), default=None,
              help="Stop after this many seconds with nothing landing or running.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Latency page folder (default OUT/watch_report).")
@click.option("--blacklist", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="File of exposure numbers never to use as templates.")
@click.option("--no-fakes", is_flag=True, help="Do not inject fake sources in the difference imaging.")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True,
              help="Extra attempts for transient errors and for tasks whose worker died.")
@_settings_options
def watch(rawdir: Path, rc_file: Path | None, search_nite: int | None, scheduler: str | None,
          workers: int | None, poll_s: float, settle_s: float, max_exposures: int | None,
          idle_s: float | None, report_dir: Path | None, blacklist: Path | None,
          no_fakes: bool, retries: int, raw_dir: Path | None, calib_dir: Path | None,
          refcat_dir: Path | None, out_root: Path | None, db_url: str | None,
          config_file: Path | None) -> None:
    """Process a night live: each raw exposure landing in RAWDIR, search exposures first.

    A file is read once complete (final name: copy under a temporary name such as
    .DECam_00123456.fits.fz.part and rename; whole FITS structure; size unchanged for
    --settle s). It is ingested and classified (rejected ones are listed with the reason),
    then planned by the DAGMaker rules: templates get SE and calibration, search exposures SE,
    calibration and difference imaging against their templates, ahead of queued template work.
    One line per exposure gives file landed -> ingested -> SE done -> candidates in the
    database; the latencies go to the database (table watch_latency) and to
    OUT/watch_report/index.html, rewritten after each exposure. Restarting resumes; Ctrl-C or
    SIGTERM stops after the running tasks. Exit code 0: stopped with every exposure processed
    without failure; 1: some task failed; 3: bad input; 4: database error.
    """
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from rich.console import Console

    from .workflow.dagmaker_rc import DagmakerConfig, read_dagmaker_config
    from .workflow.templates import read_blacklist
    from .workflow.watch import run_watch

    if rc_file is None and Path("dagmaker.rc").is_file():
        rc_file = Path("dagmaker.rc")
    config = read_dagmaker_config(rc_file) if rc_file is not None else DagmakerConfig()
    banned = read_blacklist(blacklist) if blacklist is not None else frozenset()
    console = Console(highlight=False)
    styles = {" done:": "green", " failed": "red", "rejected": "yellow", "FAILED": "red",
              "BLOCKED": "red"}

    def echo(line: str) -> None:
        style = next((v for k, v in styles.items() if k in line), None)
        console.print(line, style=style, markup=False)

    _quiet_dask_logs()
    with _DatabaseErrorsAsExitCode():
        summary = run_watch(rawdir, settings=settings, config=config, search_nite=search_nite,
                            scheduler=scheduler, workers=workers, poll_s=poll_s,
                            settle_s=settle_s, max_exposures=max_exposures, idle_s=idle_s,
                            report_dir=report_dir, echo=echo, fakes=not no_fakes,
                            retries=retries, blacklist=banned)
    if summary.report_path is not None:
        click.echo(f"report: {summary.report_path}")
    if any(r.status == "failed" for r in summary.latencies):
        sys.exit(EXIT_PROCESSING_FAILED)


@main.command("demo")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("desgw-demo"))
@click.option("--full", is_flag=True,
              help="All 60 working CCDs instead of a 2x2 block at the centre (much longer).")
@click.option("--ccds", "ccds_text", default=None,
              help="Search CCDs to simulate and process, e.g. 28,29 (overrides --full).")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulation seed.")
@click.option("--n-templates", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Template exposures.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Dask worker processes (default: one per core).")
@click.option("--top", "top_n", type=click.IntRange(0), default=12, show_default=True,
              help="Candidates shown in the report.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo(outdir: Path, full: bool, ccds_text: str | None, seed: int, n_templates: int,
         workers: int | None, top_n: int, no_progress: bool) -> None:
    """Simulate a small night, process it end to end on a local Dask cluster, write an HTML report.

    Two templates and one search exposure (OUTDIR/sim), the Gaia catalog ingested (OUTDIR/refcat),
    the exposures registered in OUTDIR/desgw.sqlite, SE + calibration + difference imaging with
    fakes (OUTDIR/out), then OUTDIR/report/index.html. Running it again resumes: finished work is
    skipped. Exit code 0: all done; 1: some task failed (the report lists it).
    """
    ccds = _parse_ccds(ccds_text)
    from .workflow.demo import run_demo

    _quiet_dask_logs()
    click.echo(f"desgw demo in {outdir.absolute()}")
    try:
        res = run_demo(outdir, full=full, ccds=_ccd_list(ccds), seed=seed,
                       n_templates=n_templates, workers=workers, top_n=top_n,
                       progress=not no_progress, echo=click.echo)
    except ValueError as exc:  # another night in OUTDIR
        click.echo(f"desgw: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"done in {res.wall_seconds:.0f} s")
    click.echo(f"report: {res.report_path}")
    if not res.ok:
        sys.exit(EXIT_PROCESSING_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
