"""The ``desgw`` command line: one command, one subcommand per stage.

Heavy modules are imported inside each subcommand so ``desgw --help`` stays instant.
Exit codes: 0 success, 1 processing failure, 2 usage error (click), 3 bad input (a file, HDU or
keyword is wrong: the message names it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__

EXIT_BAD_INPUT = 3


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _parse_ccds(text: str | None) -> list[int] | str | None:
    """``"28,35"`` -> [28, 35]; ``"1-5,9"`` -> [1..5, 9]; ``"all"`` -> "all"; None -> None."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() == "all":
        return "all"
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    from .instrument import SCIENCE_CCDNUMS

    bad = [c for c in out if c not in SCIENCE_CCDNUMS]
    if bad:
        raise click.BadParameter(f"not DECam science CCDNUMs (1..62): {bad}", param_hint="--ccds")
    return out


class _InputErrorsAsExitCode(click.Group):
    """Turn desgw input errors into a one-line message and exit code 3 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        from .io.errors import DesgwInputError

        try:
            return super().invoke(ctx)
        except DesgwInputError as exc:
            click.echo(f"desgw: error: {exc}", err=True)
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
def sim(outdir: Path, seed: int, band: str, ccds_text: str | None, n_templates: int, n_search: int,
        no_compress: bool) -> None:
    """Simulate a small DECam night: raw exposures, calibrations, a Gaia-format catalog and truth.

    Writes OUTDIR/raw/, OUTDIR/calib/, OUTDIR/gaia/ and OUTDIR/truth/ and prints a summary.
    """
    ccds = _parse_ccds(ccds_text)
    from .sim.night import simulate_night

    summary = simulate_night(
        outdir, seed=seed, band=band, ccds=ccds, n_templates=n_templates,
        n_search=n_search, compress=not no_compress,
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
    """Ingest Gaia catalogs (CSV, FITS or Parquet files with Gaia archive column names, or folders of them)."""
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
def refcat_query(store: Path, ra: float, dec: float, radius: float, epoch: float | None, out: Path | None) -> None:
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
    from .workflow.settings import load_settings

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
@click.option("-r", "--rnum", type=click.IntRange(0), required=True, help="Processing r number (r{R}p{P}).")
@click.option("-p", "--pnum", type=click.IntRange(0), required=True, help="Processing p number (r{R}p{P}).")
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
              help="CCDNUMs, e.g. 28,35 or 1-62 (default: 1-62 without the dead 2 and 61, those in the file).")
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
@_settings_options
def se(expnum: int, rnum: int, pnum: int, band: str | None, nite: int | None, destcache: str,
       schema: str, season: int | None, ccds_text: str | None, run_calibration: bool,
       jump_to_calib: bool, single_process: bool, special_y: bool, overwrite: bool,
       template_mode: bool, workers: int | None, raw_dir: Path | None, calib_dir: Path | None,
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
        schema=schema, ccds=None if ccds in (None, "all") else ccds,
        run_calibration=run_calibration, jump_to_calib=jump_to_calib,
        single_process=single_process, overwrite=overwrite, template_mode=template_mode,
        special_y=special_y, workers=workers)
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
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the fullcats (default: the working directory if it holds "
                                 "them, else the exposure's folder under the product root).")
@_settings_options
def expcalib(expnum: int, reqnum: int, attnum: int, ccds_text: str | None, mags_type: str,
             sex_mag_zeropoint: float, verbosity: int, debug: bool, directory: Path | None,
             raw_dir: Path | None, calib_dir: Path | None, refcat_dir: Path | None,
             out_root: Path | None, db_url: str | None, config_file: Path | None) -> None:
    """Photometric calibration of a processed exposure's fullcats (BLISS-expCalib_Y3apass.py).

    Writes Zero_D{EXPNUM}_{CCD}_r{R}p{P}.csv, allZP_D{EXPNUM}_r{R}p{P}.csv and
    D{EXPNUM}_{CCD}_r{R}p{P}_ZP.csv next to the fullcats. Exit code 1 when too few stars calibrate.
    """
    ccds = _parse_ccds(ccds_text)
    settings = _settings_from_options(raw_dir, calib_dir, refcat_dir, out_root, db_url, config_file)
    from .se.photocal import PhotometricCalibrationError
    from .workflow.se_exposure import calibrate_exposure, find_exposure_dir

    if directory is None:
        cwd = Path.cwd()
        if any(cwd.glob(f"D{expnum:08d}_*_r{reqnum}p{attnum}_fullcat.fits")):
            directory = cwd
        else:
            directory = find_exposure_dir(settings.out_root, expnum, reqnum, attnum)
    try:
        result = calibrate_exposure(
            expnum, reqnum, attnum, directory=directory, refcat_dir=settings.refcat_dir,
            ccds=None if ccds in (None, "all") else ccds, mags_type=mags_type,
            sex_mag_zeropoint=sex_mag_zeropoint, verbose=verbosity, debug=debug)
    except PhotometricCalibrationError as exc:
        click.echo(f"desgw: calibration failed: {exc}", err=True)
        sys.exit(EXIT_PROCESSING_FAILED)
    click.echo(f"exposure {expnum} r{reqnum}p{attnum}: ZP {result.zp:.4f} +- {result.zp_err:.4f} "
               f"mag from {result.exposure.n_used} stars ({mags_type}); CSV files in {directory}")
    for ccd, z in sorted(result.ccds.items()):
        flags = ",".join(n for n, f in (("replaced", z.replaced), ("outlier", z.outlier)) if f)
        click.echo(f"  CCD {ccd:02d}: {z.zp:.4f} +- {z.zp_err:.4f} ({z.measured.n_used} stars)"
                   + (f" [{flags}]" if flags else ""))
    if result.exposure_flagged:
        click.echo("  exposure FLAGGED: too many CCD zeropoints are outliers")


if __name__ == "__main__":  # pragma: no cover
    main()
