"""Issue 10 case 6: only real URLs are database URLs. A libpq ``host=... password=...`` string
made (and printed) a SQLite file named after the password with exit 0; an unescaped ``@`` in a
password sent its tail to DNS and into the message. Both are now refused with exit 4 and a
message without any part of the password, and no file is created."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.db import DatabaseURLError, connect, normalize_url

SECRET_HEAD, SECRET_TAIL = "Kx7Head", "Tail9876zz"


@pytest.mark.parametrize("url", [
    f"host=db.example.org user=gw password={SECRET_HEAD}{SECRET_TAIL} dbname=desgw",
    f"postgresql://gw:{SECRET_HEAD}@{SECRET_TAIL}@127.0.0.1:1/desgw",
    f"postgres://gw:{SECRET_HEAD}@x@{SECRET_TAIL}@db.example.org/desgw",
    f"desgw_{SECRET_HEAD}{SECRET_TAIL}.sqlite",
])
def test_not_a_url_is_refused_without_the_password(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESGW_DB_URL", raising=False)
    with pytest.raises(DatabaseURLError) as info:
        connect(url)
    for part in (SECRET_HEAD, SECRET_TAIL):
        assert part not in str(info.value)
    raw = tmp_path / "raw"
    raw.mkdir()
    res = CliRunner().invoke(main, ["dagmaker", "1", "--raw-dir", str(raw), "--db-url", url])
    assert res.exit_code == 4, (res.output, res.exception)
    assert "not a URL" in res.output or "unescaped '@'" in res.output
    for part in (SECRET_HEAD, SECRET_TAIL):
        assert part not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no file was made


def test_real_urls_still_work(tmp_path, monkeypatch):
    assert normalize_url("postgresql://gw:p%40ss@h/db") == "postgresql+psycopg://gw:p%40ss@h/db"
    assert normalize_url(tmp_path / "a.sqlite") == f"sqlite:///{tmp_path / 'a.sqlite'}"
    url = f"sqlite:///{tmp_path / 'b.sqlite'}"
    with connect(url) as db:
        assert db.dialect == "sqlite"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESGW_DB_URL", raising=False)
    assert normalize_url(None) == f"sqlite:///{tmp_path / 'desgw.sqlite'}"
