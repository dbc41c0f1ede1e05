"""The DAGMaker configuration: ``dagmaker.rc`` (as the original wrote it) or TOML.

``dagmaker.rc`` is a shell fragment the original ``DAGMaker.sh`` sourced: ``KEY=value`` lines
(optionally ``export KEY=value``), values bare or in single/double quotes, ``#`` comments and
blank lines. We parse it without a shell: shell expansions (``$VAR``, backticks) are refused.
The TOML form has the same keys (upper or lower case) in a ``[dagmaker]`` table, with native
TOML types (``SEARCH_OPTS`` may be a string or an array of strings).

Keys and defaults (the defaults of the original ``DAGMaker.sh``)::

    RNUM=2  PNUM=1  SEASON=11            processing version r{RNUM}p{PNUM}; season -> dp{SEASON}
    DIFFIMG_EUPS_VERSION=gwdevel13       recorded only (no EUPS here)
    WRITEDB=off  RM_MYTEMP=false         booleans: on/off, true/false, yes/no, 1/0
    DESTCACHE=persistent                 scratch | persistent
    SCHEMA=gw                            gw | wsdiff (output naming schema)
    SEARCH_OPTS=""  TEMP_OPTS=""         extra SEdiff options for search / template jobs
    TEFF_CUT_g=0.0 ... TEFF_CUT_u=0.0    minimum template t_eff per band (g r i z Y u)
    TWINDOW=30.0                         minimum |MJD(template) - MJD(search)| (days)
    MIN_NITE=20100101  MAX_NITE=99999999 template nights allowed (inclusive, YYYYMMDD)
    SKIP_INCOMPLETE_SE=false             drop templates whose SE outputs are incomplete
    DO_HEADER_CHECK=1                    check raw headers before processing
    ACCEPT_UNKNOWN_TEFF=true             desgw addition: keep templates whose t_eff is unknown

Keys the original used for the Fermilab grid (JOBSUB_OPTS, JOBSUB_OPTS_SE, RESOURCES,
IGNORECALIB, STASHVER, SE_OPTS, TEFF_CUT) are accepted and ignored (logged at INFO); any other
key is logged as a warning. A bad value raises :class:`DagmakerConfigError` naming the file,
the line and the key.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from desgw.errors import DesgwInputError
from desgw.instrument.bands import DECAM_BANDS

__all__ = [
    "BANDS",
    "DagmakerConfig",
    "DagmakerConfigError",
    "read_dagmaker_config",
    "parse_dagmaker_rc",
    "parse_dagmaker_toml",
    "format_dagmaker_rc",
]

log = logging.getLogger(__name__)

#: DECam bands with a t_eff cut.
BANDS: tuple[str, ...] = DECAM_BANDS

#: Original keys that only concerned the Fermilab grid submission: accepted and ignored.
IGNORED_KEYS: frozenset[str] = frozenset({"JOBSUB_OPTS", "JOBSUB_OPTS_SE", "RESOURCES",
                                          "IGNORECALIB", "STASHVER", "SE_OPTS", "TEFF_CUT"})

_KEY = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class DagmakerConfigError(DesgwInputError):
    """A bad DAGMaker configuration: ``str(err)`` is ``"{file}: line {n}: key {KEY}: problem"``.

    Attributes ``line`` (int or None) and ``key`` (str or None) hold the location.
    """

    line: int | None
    key: str | None

    def __init__(self, path: Any, hdu: Any, problem: str, *, line: int | None = None,
                 key: str | None = None, **extra: Any) -> None:
        super().__init__(path, hdu, problem, line=line, key=key, **extra)

    def __str__(self) -> str:
        where = self.path if self.path is not None else "<string>"
        parts = [where]
        if getattr(self, "line", None) is not None:
            parts.append(f"line {self.line}")
        if getattr(self, "key", None) is not None:
            parts.append(f"key {self.key}")
        return ": ".join(parts) + f": {self.problem}"


@dataclass(frozen=True)
class DagmakerConfig:
    """Validated DAGMaker settings (see the module docstring for the file keys).

    Attributes
    ----------
    rnum, pnum : int
        Single-epoch processing version (``r{rnum}p{pnum}``), >= 0.
    season : int
        Difference-imaging run number (``dp{season}``), >= 1; below 11 is reserved in the
        original and 20-100 were used for tests.
    diffimg_eups_version : str
        Recorded for provenance.
    write_db : bool
        Write detections to the database.
    rm_mytemp : bool
        Remove the job's temporary files afterwards.
    destcache : str
        ``"scratch"`` or ``"persistent"``.
    schema : str
        ``"gw"`` or ``"wsdiff"``.
    search_opts, temp_opts : tuple of str
        Extra SEdiff options of the search and template jobs (shell-split).
    teff_cut_g, teff_cut_r, teff_cut_i, teff_cut_z, teff_cut_Y, teff_cut_u : float
        Minimum template t_eff per band (>= 0).
    twindow : float
        Minimum time between template and search (days, >= 0).
    min_nite, max_nite : int
        Allowed template nights, inclusive (``YYYYMMDD``).
    skip_incomplete_se : bool
        Drop templates whose single-epoch outputs are incomplete instead of re-processing.
    do_header_check : bool
        Check raw headers before processing.
    accept_unknown_teff : bool
        Keep template candidates whose t_eff is not known yet (desgw addition).
    """

    rnum: int = 2
    pnum: int = 1
    season: int = 11
    diffimg_eups_version: str = "gwdevel13"
    write_db: bool = False
    rm_mytemp: bool = False
    destcache: str = "persistent"
    schema: str = "gw"
    search_opts: tuple[str, ...] = ()
    temp_opts: tuple[str, ...] = ()
    teff_cut_g: float = 0.0
    teff_cut_r: float = 0.0
    teff_cut_i: float = 0.0
    teff_cut_z: float = 0.0
    teff_cut_Y: float = 0.0
    teff_cut_u: float = 0.0
    twindow: float = 30.0
    min_nite: int = 20100101
    max_nite: int = 99999999
    skip_incomplete_se: bool = False
    do_header_check: bool = True
    accept_unknown_teff: bool = True

    def __post_init__(self) -> None:
        problem = _validate(self)
        if problem is not None:
            key, message = problem
            raise DagmakerConfigError(None, None, message, key=key)

    @property
    def rpnum(self) -> str:
        """``r{rnum}p{pnum}``, the single-epoch version tag of the product names."""
        return f"r{self.rnum}p{self.pnum}"

    @property
    def procnum(self) -> str:
        """``dp{season}``, the difference-imaging version tag."""
        return f"dp{self.season}"

    def teff_cut(self, band: str) -> float:
        """Minimum t_eff of a template in ``band`` (one of :data:`BANDS`)."""
        if band not in BANDS:
            raise ValueError(f"no t_eff cut for band {band!r}; bands are {BANDS}")
        return float(getattr(self, f"teff_cut_{band}"))


# ----------------------------------------------------------------------------- keys and types
def _field_for_key(key: str) -> str | None:
    upper = key.upper()
    if upper.startswith("TEFF_CUT_") and len(key) == len("TEFF_CUT_") + 1:
        band = key[-1]
        band = "Y" if band in "yY" else band.lower()
        return f"teff_cut_{band}" if band in BANDS else None
    names = {"WRITEDB": "write_db", "TWINDOW": "twindow"}
    name = names.get(upper, upper.lower())
    return name if name in _FIELDS else None


_FIELDS = {f.name: f for f in fields(DagmakerConfig)}
_BOOL_TRUE = {"1", "true", "yes", "on", "y", "t"}
_BOOL_FALSE = {"0", "false", "no", "off", "n", "f"}


def _key_for_field(name: str) -> str:
    if name.startswith("teff_cut_"):
        return "TEFF_CUT_" + name[-1]
    return {"write_db": "WRITEDB"}.get(name, name.upper())


def _convert(name: str, value: Any) -> Any:
    """Convert a file value (str from rc, native from TOML) to the field's type."""
    kind = _FIELDS[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _BOOL_TRUE:
            return True
        if text in _BOOL_FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (on/off, true/false, yes/no, 1/0)")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if name == "season" and text.lower().startswith("dp"):
            text = text[2:]
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"{value!r} is not an integer")
        return int(text)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
        return out
    if kind == "tuple[str, ...]":
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"{value!r} is not a list of strings")
            return tuple(value)
        try:
            return tuple(shlex.split(str(value)))
        except ValueError as exc:
            raise ValueError(f"{value!r} cannot be split into options: {exc}") from None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a string")
    return str(value)


def _valid_nite(n: int) -> bool:
    if n == 99999999:
        return True
    year, month, day = n // 10000, n // 100 % 100, n % 100
    return 1990 <= year <= 2200 and 1 <= month <= 12 and 1 <= day <= 31


def _validate(c: DagmakerConfig) -> tuple[str, str] | None:
    """First problem of a config as (KEY, message), or None."""
    for name in ("rnum", "pnum"):
        if getattr(c, name) < 0:
            return _key_for_field(name), f"must be >= 0, got {getattr(c, name)}"
    if c.season < 1:
        return "SEASON", f"must be >= 1, got {c.season}"
    if c.destcache not in ("scratch", "persistent"):
        return "DESTCACHE", f"must be scratch or persistent, got {c.destcache!r}"
    if c.schema not in ("gw", "wsdiff"):
        return "SCHEMA", f"must be gw or wsdiff, got {c.schema!r}"
    for band in BANDS:
        cut = getattr(c, f"teff_cut_{band}")
        if not math.isfinite(cut) or cut < 0:
            return f"TEFF_CUT_{band}", f"must be a finite number >= 0, got {cut}"
    if not math.isfinite(c.twindow) or c.twindow < 0:
        return "TWINDOW", f"must be a finite number of days >= 0, got {c.twindow}"
    for name in ("min_nite", "max_nite"):
        if not _valid_nite(getattr(c, name)):
            return _key_for_field(name), f"must be a night YYYYMMDD, got {getattr(c, name)}"
    if c.min_nite > c.max_nite:
        return "MAX_NITE", f"MIN_NITE {c.min_nite} is after MAX_NITE {c.max_nite}"
    return None


# ----------------------------------------------------------------------------- building
def _build(entries: list[tuple[str, Any, int | None]], source: str | None) -> DagmakerConfig:
    """Config from (key, value, line) entries; later entries win, as in a shell."""
    values: dict[str, Any] = {}
    lines: dict[str, tuple[str | None, int | None]] = {}
    for key, value, line in entries:
        if key.upper() in IGNORED_KEYS:
            log.info("%s: line %s: key %s is a grid-submission setting; ignored", source, line,
                     key)
            continue
        name = _field_for_key(key)
        if name is None:
            log.warning("%s: line %s: unknown key %s ignored", source, line, key)
            continue
        try:
            values[name] = _convert(name, value)
        except ValueError as exc:
            raise DagmakerConfigError(source, None, str(exc), line=line, key=key) from None
        lines[name] = (key, line)
    try:
        return DagmakerConfig(**values)
    except DagmakerConfigError as exc:
        name = _field_for_key(exc.key or "") or ""
        bad_key, bad_line = lines.get(name, (exc.key, None))
        raise DagmakerConfigError(source, None, exc.problem, line=bad_line, key=bad_key) from None


def _rc_value(raw: str, source: str | None, line: int, key: str) -> str:
    text = raw.strip()
    if re.search(r"(?<!\\)`", text) or ("$" in text and not (text.startswith("'")
                                                            and text.rstrip().endswith("'"))):
        raise DagmakerConfigError(source, None, f"shell expansion is not supported: {text!r}",
                                  line=line, key=key)
    try:
        tokens = shlex.split(text, comments=True, posix=True)
    except ValueError as exc:
        raise DagmakerConfigError(source, None, f"cannot parse value {text!r}: {exc}",
                                  line=line, key=key) from None
    if len(tokens) > 1:
        raise DagmakerConfigError(source, None, f"value {text!r} has unquoted spaces "
                                  "(quote it)", line=line, key=key)
    return tokens[0] if tokens else ""


def parse_dagmaker_rc(text: str, source: str | os.PathLike[str] | None = None) -> DagmakerConfig:
    """Parse the text of a ``dagmaker.rc`` (shell ``KEY=value`` lines).

    Parameters
    ----------
    text : str
        File contents.
    source : path or None
        File name used in messages.

    Raises
    ------
    DagmakerConfigError
        A line that is not ``KEY=value``, a shell expansion, or a bad value.
    """
    where = None if source is None else os.fspath(source)
    entries: list[tuple[str, Any, int | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY.match(stripped)
        if match is None:
            raise DagmakerConfigError(where, None, f"expected KEY=value, got {stripped!r}",
                                      line=number)
        key = match.group(1)
        entries.append((key, _rc_value(match.group(2), where, number, key), number))
    return _build(entries, where)


def _toml_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def parse_dagmaker_toml(text: str, source: str | os.PathLike[str] | None = None
                        ) -> DagmakerConfig:
    """Parse TOML with the DAGMaker keys in a ``[dagmaker]`` table.

    Raises
    ------
    DagmakerConfigError
        Invalid TOML, no ``[dagmaker]`` table, or a bad value.
    """
    where = None if source is None else os.fspath(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DagmakerConfigError(where, None, f"invalid TOML: {exc}") from None
    table = data.get("dagmaker")
    if not isinstance(table, Mapping):
        raise DagmakerConfigError(where, None, "no [dagmaker] table")
    for other in sorted(set(data) - {"dagmaker"}):
        log.debug("%s: table/key %s outside [dagmaker] ignored", where, other)
    entries = [(str(k), v, _toml_line(text, str(k))) for k, v in table.items()]
    return _build(entries, where)


def read_dagmaker_config(path: str | os.PathLike[str]) -> DagmakerConfig:
    """Read a DAGMaker configuration: TOML when the name ends in ``.toml``, else rc format.

    Raises
    ------
    desgw.errors.MissingFileError
        If the file does not exist.
    DagmakerConfigError
        For a malformed file or a bad value (names the file, line and key).
    """
    from desgw.errors import MissingFileError

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "DAGMaker configuration file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DagmakerConfigError(p, None, f"not UTF-8 text (byte {exc.start}): not a DAGMaker "
                                  "configuration") from None
    if p.suffix.lower() == ".toml":
        return parse_dagmaker_toml(text, p)
    return parse_dagmaker_rc(text, p)


def format_dagmaker_rc(config: DagmakerConfig) -> str:
    """The ``dagmaker.rc`` text of ``config`` (reads back to an equal config)."""
    lines = ["# DAGMaker settings written by desgw"]
    for name in _FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = shlex.quote(shlex.join(value))
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = shlex.quote(str(value))
        lines.append(f"{_key_for_field(name)}={text}")
    return "\n".join(lines) + "\n"
