"""Fixes for problems the fault suite found (docs/reliability.md, "Fixed since first found"), pinned
fast: what `c20p5 run` says when a step fails (its cause; whether the publication was written), the
lock-timeout setting and the reference fingerprint of a replay elsewhere. (The same DSR bits whatever
order the age bands arrive in: tests/unit/test_statistics_sql.py, since the statistics are SQL.)"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from assets.reference import reference_fingerprint
from orchestration.resources import BuildDatabaseLocked
from orchestration.runner import _outcome
from orchestration.settings import SHIPPED_REFERENCE_DIR, SettingsError, load_settings


def failed_outcome(body) -> str:
    """`c20p5 run`'s error text for a one-op job whose op runs `body` (retried once, at once)."""
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
    def step() -> None:
        body()

    @dg.job
    def job() -> None:
        step()

    outcome = _outcome(job.execute_in_process(raise_on_error=False), SimpleNamespace(warehouse_label="w"))
    assert not outcome.success
    return outcome.error


def test_a_retried_step_says_why_it_failed_not_only_that_retries_ran_out() -> None:
    def locked() -> None:
        try:
            raise OSError("Could not set lock on file /w/build.duckdb: Conflicting lock is held")
        except OSError as exc:
            raise BuildDatabaseLocked("/w/build.duckdb", 2, exc) from exc

    error = failed_outcome(locked)
    assert error.startswith("step: Exceeded max_retries of 1 (caused by BuildDatabaseLocked: ")
    assert "/w/build.duckdb is in use by another process" in error and "stop the other process" in error


def test_an_unexpected_error_is_named_beside_dagsters_wrapper() -> None:
    def data_error() -> None:  # as orchestration.retries.data_errors_fail_fast raises it
        cause = ValueError("reference/census.csv, row 3, column usual_residents: value 'abc' is not a number")
        raise dg.Failure(description=f"reference data failed (not retried: not a transient error): {cause}",
                         allow_retries=False) from cause

    def plain() -> None:
        raise ValueError("no such column: practice_code")

    assert failed_outcome(plain).endswith("(caused by ValueError: no such column: practice_code)")
    # a Failure is our own message (file, row, column) and already says what is wrong: not said twice
    error = failed_outcome(data_error)
    assert "caused by" not in error and error.count("value 'abc' is not a number") == 1


def test_a_failure_after_the_publish_does_not_claim_the_publication_is_unchanged() -> None:
    """The reports asset runs after the publish: if it fails, `c20p5 run` says what was published."""
    @dg.op
    def publish() -> int:
        yield dg.AssetMaterialization("warehouse_publication", metadata={
            "publication_id": 2, "site_periods_published": 1, "withheld": dg.MetadataValue.json([])})
        yield dg.Output(2)

    @dg.op
    def reports(publication: int) -> None:
        raise ValueError("'xerr' must not contain negative values")

    @dg.job
    def job() -> None:
        reports(publish())

    outcome = _outcome(job.execute_in_process(raise_on_error=False), SimpleNamespace(warehouse_label="w"))
    assert not outcome.success and outcome.publication == "2"
    text = outcome.describe()
    assert "FAILED: reports: " in text and "publication 2 was written to w before the failure" in text
    assert "unchanged" not in text
    assert "is unchanged" in replace(outcome, publication="none").describe()


def test_lock_timeout_setting() -> None:
    assert load_settings({}).lock_timeout_seconds == 300
    assert load_settings({"C20P5_LOCK_TIMEOUT_SECONDS": "2.5"}).lock_timeout_seconds == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(SettingsError, match="C20P5_LOCK_TIMEOUT_SECONDS"):
            load_settings({"C20P5_LOCK_TIMEOUT_SECONDS": bad})


def test_reference_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    """A replay in another landing directory (with its own copy of a police.uk feed) records the same
    fingerprint; different bytes, or the same bytes under another file name, do not."""
    police = sorted((SHIPPED_REFERENCE_DIR / "police").glob("*.csv"))[0]

    def fingerprint(root: Path, name: str = police.name, extra: bytes = b"") -> str:
        target = root / "landing" / "reference" / "police" / name
        target.parent.mkdir(parents=True)
        shutil.copy(police, target)
        with target.open("ab") as f:
            f.write(extra)
        return reference_fingerprint(load_settings({"C20P5_LANDING_DIR": str(root / "landing")}))

    first = fingerprint(tmp_path / "a")
    assert fingerprint(tmp_path / "b") == first
    assert fingerprint(tmp_path / "c", extra=b"\n") != first
    assert fingerprint(tmp_path / "d", name="2022-11-lancashire-street.csv") != first
