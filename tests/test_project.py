"""The project's own promises: README set-up commands, CI script, command-line help."""

import re
from pathlib import Path

from click.testing import CliRunner

from desgw.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "desgw" in demo and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci


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
