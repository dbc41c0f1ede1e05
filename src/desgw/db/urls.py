"""Database URLs: the default SQLite location and password redaction.

A password must never reach a log line or an exception message. Every message in
:mod:`desgw.db` that names a database uses :func:`redact_url`, and text coming back from a
driver is passed through :func:`scrub_secret` before it is shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

from .errors import DatabaseURLError

__all__ = ["DEFAULT_DB_ENV", "DEFAULT_DB_FILENAME", "normalize_url", "redact_url",
           "scrub_secret", "url_password"]

#: Environment variable holding the default database URL (used when ``connect(None)``).
DEFAULT_DB_ENV = "DESGW_DB_URL"
#: SQLite file name used when neither a URL nor ``$DESGW_DB_URL`` is given (in the cwd).
DEFAULT_DB_FILENAME = "desgw.sqlite"

_MASK = "***"
# scheme://user:password@host  (the password runs to the last '@' before the host part)
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):(?P<pw>[^/?#]*)@")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|sslpassword)=)([^&#]*)")


def normalize_url(url: str | os.PathLike[str] | None) -> str:
    """The SQLAlchemy URL for ``url``.

    Parameters
    ----------
    url : str, os.PathLike or None
        A URL (``sqlite:///path/desgw.sqlite``, ``postgresql+psycopg://user:pw@host/db``), a
        path object (``pathlib.Path``: a SQLite file), or None: ``$DESGW_DB_URL`` if set, else
        ``sqlite:///desgw.sqlite`` in the current directory. A string must be a URL: a plain
        path or a libpq ``host=... password=...`` string is refused, never taken for a file.

    Returns
    -------
    str
        The URL. ``postgresql://`` and ``postgres://`` are given the psycopg 3 driver.

    Raises
    ------
    DatabaseURLError
        A string that is not ``scheme://...``, or whose ``user:password@`` part holds an
        unescaped ``@`` (write it as ``%40``). The message does not repeat the string.
    """
    if url is None:
        env = os.environ.get(DEFAULT_DB_ENV)
        if not env:
            return "sqlite:///" + str(Path(DEFAULT_DB_FILENAME).resolve())
        url = env
    if isinstance(url, os.PathLike):
        return "sqlite:///" + str(Path(url).resolve())
    text = str(url).strip()
    if not _SCHEME.match(text):
        raise DatabaseURLError(
            "the database URL is not a URL (expected sqlite:///path/desgw.sqlite or "
            "postgresql://user:password@host/db; key=value connection strings and plain paths "
            "are not accepted)")
    netloc = text.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if netloc.count("@") > 1:
        raise DatabaseURLError(
            f"the database URL {text.split('://', 1)[0]}://... holds an unescaped '@' in its "
            "user or password: write it as %40 (percent-encode the password)")
    for plain in ("postgresql://", "postgres://"):
        if text.startswith(plain):
            return "postgresql+psycopg://" + text[len(plain):]
    return text


def url_password(url: str) -> str | None:
    """The (URL-decoded) password in ``url``, or None when it has none."""
    match = _USERINFO.match(str(url))
    if match is not None and match.group("pw"):
        return unquote(match.group("pw"))
    query = _QUERY_SECRET.search(str(url))
    if query is not None and query.group(2):
        return unquote(query.group(2))
    return None


def redact_url(url: str | os.PathLike[str] | None) -> str:
    """``url`` with any password replaced by ``***`` (safe to log or show).

    Both ``scheme://user:password@host/...`` and query parameters such as ``?password=...``
    are masked. Works on text that SQLAlchemy cannot parse, too.

    Examples
    --------
    >>> redact_url("postgresql+psycopg://gw:s3cret@db.example.org:5432/desgw")
    'postgresql+psycopg://gw:***@db.example.org:5432/desgw'
    """
    if url is None:
        return "<default database>"
    text = os.fspath(url) if isinstance(url, os.PathLike) else str(url)
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{_MASK}@" if m.group("pw") else m.group(0),
                         text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + (_MASK if m.group(2) else ""), text)


def scrub_secret(text: str, url: str | None) -> str:
    """``text`` with the password of ``url`` (raw, URL-encoded and decoded) and ``url`` masked."""
    out = str(text)
    if url is None:
        return out
    out = out.replace(str(url), redact_url(url))
    password = url_password(str(url))
    if password:
        for form in {password, quote(password, safe=""), quote_plus(password)}:
            if form:
                out = out.replace(form, _MASK)
    return out
