"""`c20p5 --help` explains every command and the exit codes; bad settings and arguments exit 2."""
from __future__ import annotations

import pytest

from orchestration import cli

COMMANDS = ("generate", "run", "demo", "backfill", "status", "bench")


def test_help_lists_every_command_the_exit_codes_and_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    for command in COMMANDS:
        assert f"\n    {command} " in text, command
    for code in ("0 published", "3 completed", "1 the run failed", "2 bad settings"):
        assert code in text
    assert "C20P5_WAREHOUSE_URL" in text and "C20P5_LOG_LEVEL" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_own_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: c20p5 {command}") and "exit codes" in text


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().out


def test_bad_settings_exit_2_and_say_which(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("C20P5_LOG_LEVEL", "LOUD")
    assert cli.main(["run"]) == cli.EXIT_USAGE
    assert "C20P5_LOG_LEVEL" in capsys.readouterr().err


def test_bench_rejects_a_scale_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--scales", "lots"]) == cli.EXIT_USAGE
    assert "lots" in capsys.readouterr().err


def test_run_offers_a_full_refresh(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--full-refresh rebuild every period of every dbt model" in text
    assert "only the periods from the earliest that changed since the last good build" in text


@pytest.mark.slow
def test_the_readmes_demo_runs_and_publishes(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`c20p5 demo` (the README's first command), small: generate, then the nightly job, then a warehouse."""
    from tests.conftest import env_for
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert cli.main(["demo", "--people", "300", "--months", "1"]) in (cli.EXIT_OK, cli.EXIT_WITHHELD)
    out = capsys.readouterr().out
    assert "publication: 1;" in out and (tmp_path / "warehouse" / "evaluation.duckdb").exists()
