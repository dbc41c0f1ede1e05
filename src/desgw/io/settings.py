"""Where inputs and outputs live: a small frozen :class:`Settings` and the file look-ups.

Nothing in desgw hard-codes a site path. Each setting comes from, in this order (the first
that gives a value wins):

1. an explicit argument of :func:`load_settings` (the command-line options ``--raw-dir``,
   ``--calib-dir``, ``--refcat``, ``--out``);
2. an environment variable: ``DESGW_RAW_DIR``, ``DESGW_CALIB_DIR``, ``DESGW_REFCAT``,
   ``DESGW_OUT``, ``DESGW_DB_URL``;
3. a TOML file: ``$DESGW_CONFIG`` if set, else ``desgw.toml`` in the working directory if it
   exists. Keys (top level or in a ``[desgw]`` table)::

       raw_dir = "/data/decam/raw"
       calib_dir = "/data/decam/calib"
       refcat_dir = "/data/gaia_dr3"     # "refcat" is accepted too
       out_root = "/data/desgw"           # "out" is accepted too
       db_url = "sqlite:////data/desgw/desgw.sqlite"

   Relative paths in the file are relative to the file's directory;
4. defaults relative to the working directory: ``raw/``, ``calib/``, ``refcat/``, ``out/``
   and no database.

All paths are made absolute when the settings are loaded, so worker processes with another
working directory see the same files.

File look-ups
-------------
* raw exposure (:meth:`Settings.raw_path`): ``raw_dir/DECam_{expnum:08d}.fits.fz`` or
  ``.fits``, else a NOIRLab archive name ``raw_dir/c4d_*.fits.fz`` (or ``.fits``) whose primary
  header has ``EXPNUM == expnum``: a raw file or a Community Pipeline InstCal image
  (``_ooi_``), never its mask or weight (``_ood_``, ``_oow_``, which carry the same EXPNUM);
* calibrations (:meth:`Settings.calib_paths`): ``calib_dir/bias.fits(.fz)``,
  ``calib_dir/flat_{band}.fits(.fz)`` and, optional, ``calib_dir/bpm.fits(.fz)`` and
  ``calib_dir/linearity.fits(.fz)`` (linearity lookup tables, DECam's ``linearity_table``
  layout; the runner warns and skips the correction without it).
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.io import fits

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.naming import raw_name

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_VARS",
    "CalibPaths",
    "is_instcal_companion",
    "Settings",
    "load_settings",
]

log = logging.getLogger(__name__)

#: Environment variable of each setting.
ENV_VARS: dict[str, str] = {
    "raw_dir": "DESGW_RAW_DIR",
    "calib_dir": "DESGW_CALIB_DIR",
    "refcat_dir": "DESGW_REFCAT",
    "out_root": "DESGW_OUT",
    "db_url": "DESGW_DB_URL",
}
#: Environment variable naming the TOML settings file.
CONFIG_ENV_VAR = "DESGW_CONFIG"
#: Settings file looked for in the working directory.
CONFIG_FILE_NAME = "desgw.toml"

_DEFAULT_DIRS = {"raw_dir": "raw", "calib_dir": "calib", "refcat_dir": "refcat", "out_root": "out"}
_TOML_ALIASES = {"refcat": "refcat_dir", "out": "out_root"}
_FITS_SUFFIXES = (".fits.fz", ".fits")


@dataclass(frozen=True)
class CalibPaths:
    """The calibration files of one band.

    Attributes
    ----------
    bias : Path
        Bias (electrons) for every CCD.
    flat : Path
        Dome flat of the band (mean 1).
    bpm : Path or None
        Bad-pixel mask; None when the calibration folder has none.
    linearity : Path or None
        Linearity lookup tables; None when the calibration folder has none.
    """

    bias: Path
    flat: Path
    bpm: Path | None
    linearity: Path | None = None


@dataclass(frozen=True)
class Settings:
    """Where desgw reads its inputs and writes its products (absolute paths).

    Attributes
    ----------
    raw_dir : Path
        Folder of raw DECam exposures.
    calib_dir : Path
        Folder of calibration files (bias, flats, bad-pixel mask).
    refcat_dir : Path
        Gaia reference-catalog store (:class:`desgw.refcat.RefCatStore`).
    out_root : Path
        Root of the products: ``out_root/{scratch|persistent}/{gw|wsdiff}/exp/NITE/EXPNUM/``.
    db_url : str or None
        Processing database URL (see :func:`desgw.db.connect`); None: no database writes.
    db_timeout_s : float
        How long a task waits for the database (a locked SQLite file, a PostgreSQL server that
        is down) before its database write fails: the ``--db-timeout`` of the commands (s).
    """

    raw_dir: Path
    calib_dir: Path
    refcat_dir: Path
    out_root: Path
    db_url: str | None = None
    db_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("raw_dir", "calib_dir", "refcat_dir", "out_root"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        if self.db_url is not None and not str(self.db_url).strip():
            object.__setattr__(self, "db_url", None)

    @property
    def calib_cache_dir(self) -> Path:
        """Decoded calibration planes, made once per CCD and calibration-file version and read
        by every later task (:mod:`desgw.io.calib_cache`): ``out_root/cache/calib``."""
        return self.out_root / "cache" / "calib"

    @property
    def raw_cache_dir(self) -> Path:
        """Decoded raw CCDs that other CCDs' crosstalk correction needs, kept by the first task
        to decode them for the others (:class:`desgw.io.raw.RawExposure`; the planes of the
        two most recently used raw files, ~1.1 GB each at most): ``out_root/cache/raw``."""
        return self.out_root / "cache" / "raw"

    def raw_path(self, expnum: int) -> Path:
        """The raw file of exposure ``expnum``.

        Looks for ``DECam_{expnum:08d}.fits.fz`` / ``.fits``, then for ``c4d_*.fits.fz`` /
        ``c4d_*.fits`` files whose primary header has ``EXPNUM == expnum``.

        Raises
        ------
        MissingFileError
            No such file in :attr:`raw_dir` (the message lists the names tried).
        """
        expnum = int(expnum)
        stem = raw_name(expnum)[: -len(".fits.fz")]
        for suffix in _FITS_SUFFIXES:
            path = self.raw_dir / f"{stem}{suffix}"
            if path.is_file():
                return path
        if self.raw_dir.is_dir():
            candidates = sorted(p for suffix in _FITS_SUFFIXES
                                for p in self.raw_dir.glob(f"c4d_*{suffix}")
                                if not is_instcal_companion(p))
            for path in candidates:
                if _primary_expnum(path) == expnum:
                    return path
        raise MissingFileError(self.raw_dir, None, f"no raw file of exposure {expnum}: tried "
                               f"{stem}.fits.fz, {stem}.fits and c4d_*.fits(.fz) with EXPNUM "
                               f"{expnum}")

    def calib_paths(self, band: str) -> CalibPaths:
        """Bias, flat, bad-pixel-mask and linearity files for ``band``.

        Raises
        ------
        MissingFileError
            No bias or no flat for the band in :attr:`calib_dir`.
        """
        bias = _first_existing(self.calib_dir, "bias")
        flat = _first_existing(self.calib_dir, f"flat_{band}")
        if bias is None:
            raise MissingFileError(self.calib_dir, None, "no bias.fits.fz or bias.fits")
        if flat is None:
            raise MissingFileError(self.calib_dir, None,
                                   f"no flat_{band}.fits.fz or flat_{band}.fits for band {band}")
        bpm = _first_existing(self.calib_dir, "bpm")
        if bpm is None:
            log.warning("no bpm.fits(.fz) in %s: processing without a bad-pixel mask",
                        self.calib_dir)
        linearity = _first_existing(self.calib_dir, "linearity")
        if linearity is None:
            log.debug("no linearity.fits(.fz) in %s", self.calib_dir)
        return CalibPaths(bias=bias, flat=flat, bpm=bpm, linearity=linearity)


def is_instcal_companion(path: str | os.PathLike[str]) -> bool:
    """True for a CP InstCal mask or weight file (``*_ood_*``, ``*_oow_*`` by name): read with
    its image, never an exposure's own file."""
    name = Path(path).name
    return "_ood_" in name or "_oow_" in name


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in _FITS_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _primary_expnum(path: Path) -> int | None:
    """EXPNUM of a FITS file's primary header (None when unreadable or absent)."""
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            value = hdul[0].header.get("EXPNUM")
            if value is None and len(hdul) > 1:
                value = hdul[1].header.get("EXPNUM")
    except (OSError, ValueError) as exc:
        log.debug("skipping %s while looking for an exposure: %s", path, exc)
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(path, None, "settings file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DesgwInputError(path, None, f"not valid TOML: {exc}") from None
    table = data.get("desgw", data)
    if not isinstance(table, Mapping):
        raise DesgwInputError(path, None, "[desgw] must be a table")
    out: dict[str, Any] = {}
    known = set(ENV_VARS)
    for key, value in table.items():
        name = _TOML_ALIASES.get(key, key)
        if name not in known:
            if key != "desgw" and not isinstance(value, Mapping):
                log.warning("%s: unknown setting %r ignored", path, key)
            continue
        if not isinstance(value, str):
            raise DesgwInputError(path, None, f"setting {key!r} must be a string, got "
                                  f"{type(value).__name__}")
        if name != "db_url":
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else path.parent / p)
        out[name] = value
    return out


def load_settings(*, raw_dir: str | os.PathLike[str] | None = None,
                  calib_dir: str | os.PathLike[str] | None = None,
                  refcat_dir: str | os.PathLike[str] | None = None,
                  out_root: str | os.PathLike[str] | None = None,
                  db_url: str | None = None,
                  config_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None,
                  cwd: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from arguments, environment, a TOML file and defaults (module docstring).

    Parameters
    ----------
    raw_dir, calib_dir, refcat_dir, out_root : path, optional
        Explicit values (command-line options); they win over everything else.
    db_url : str, optional
        Explicit database URL.
    config_file : path, optional
        TOML file to read (default: ``$DESGW_CONFIG``, else ``desgw.toml`` in ``cwd`` if it
        exists). A file named explicitly or by ``$DESGW_CONFIG`` must exist.
    environ : mapping, optional
        Environment to read (default ``os.environ``).
    cwd : path, optional
        Working directory for defaults and ``desgw.toml`` (default the process's).

    Returns
    -------
    Settings

    Raises
    ------
    MissingFileError
        A named settings file does not exist.
    DesgwInputError
        The settings file is not valid TOML or has a non-string value.
    """
    env = os.environ if environ is None else environ
    base = Path(os.getcwd() if cwd is None else cwd).absolute()
    if config_file is None and env.get(CONFIG_ENV_VAR):
        config_file = env[CONFIG_ENV_VAR]
    from_file: dict[str, Any] = {}
    if config_file is not None:
        p = Path(config_file).expanduser()
        from_file = _read_toml(p if p.is_absolute() else base / p)
    elif (base / CONFIG_FILE_NAME).is_file():
        from_file = _read_toml(base / CONFIG_FILE_NAME)

    explicit = {"raw_dir": raw_dir, "calib_dir": calib_dir, "refcat_dir": refcat_dir,
                "out_root": out_root, "db_url": db_url}
    values: dict[str, Any] = {}
    for name, env_var in ENV_VARS.items():
        if explicit[name] is not None:
            value: Any = explicit[name]
        elif env.get(env_var):
            value = env[env_var]
        elif name in from_file:
            value = from_file[name]
        elif name == "db_url":
            value = None
        else:
            value = _DEFAULT_DIRS[name]
        if name != "db_url":
            p = Path(value).expanduser()
            value = p if p.is_absolute() else base / p
        values[name] = value
    return Settings(**values)
