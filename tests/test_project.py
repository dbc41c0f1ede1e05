"""The project's own promises: README set-up commands, CI script, command-line help."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from click.testing import CliRunner

from desgw.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]


FAST_LANE = '.venv/bin/python -m pytest -m "not slow"'


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "desgw" in demo and "pytest" in tests
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    # the fast lane first, then the README's test command (the full suite) as it stands
    assert tests in ci_lines and FAST_LANE in ci_lines
    assert ci_lines.index(FAST_LANE) < ci_lines.index(tests)
    assert f"`{FAST_LANE}`" in (ROOT / "README.md").read_text()


def _tool(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m TOOL ARGS`` from the repository root (ruff and mypy come with the
    ``test`` extra: a missing one fails here)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def test_ruff_is_clean():
    """The ruff configuration of pyproject.toml holds on src, tests, bench and scripts."""
    res = _tool("ruff", "check", "--no-cache", "src", "tests", "bench", "scripts")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_mypy_is_clean():
    """mypy (configured in pyproject.toml: src, tests, bench, scripts) reports no error."""
    res = _tool("mypy")
    assert res.returncode == 0, res.stdout[-20000:] + res.stderr


def test_help_of_every_command():
    runner = CliRunner()
    for args in (["--help"], ["sim", "--help"], ["refcat", "--help"], ["refcat", "ingest", "--help"],
                 ["refcat", "query", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_bad_ccd_list_is_a_usage_error():
    result = CliRunner().invoke(main, ["sim", "/tmp/unused-desgw-out", "--ccds", "28,99"])
    assert result.exit_code == 2
    assert "99" in result.output
