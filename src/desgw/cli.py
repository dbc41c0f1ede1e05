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


if __name__ == "__main__":  # pragma: no cover
    main()
