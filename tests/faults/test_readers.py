"""Readers during publish (issue 7, part 3): several reader processes query the warehouse in a loop
while 10 publications are written. No reader errors; no reader ever sees rows of two publications
mixed; each reader sees publications in order.

DuckDB readers attach the file read-only and reopen it for every query (docs/warehouse.md);
PostgreSQL readers run each query in its own transaction (autocommit). A query reads several tables
and schemas at once, so a mix of two publications would give a signature that no publication had.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from assets.warehouse import publish_duckdb, publish_postgres
from tests.faults.publisher import start_reader
from tests.warehouse.conftest import new_database
from tests.warehouse.factory import make_publication

pytestmark = pytest.mark.slow

READERS = 3
PUBLISHES = 10
SITES = ("aa", "bb", "cc", "dd")
# One statement over the latest tables, the history, data_quality and a site schema.
SIGNATURE = """select
    (select max(publication_id) from evaluation.publications),
    (select count(*) from evaluation.indicator_values),
    (select sum(coalesce(numerator, 0) + 3 * coalesce(denominator, 0) + 7 * publication_id)
       from evaluation.indicator_values),
    (select sum(publication_id) from evaluation.inequality_summary),
    (select count(*) from evaluation.indicator_values_history),
    (select count(*) from evaluation.data_quality),
    (select sum(coalesce(denominator, 0) + 7 * publication_id) from site_dd.indicator_values),
    (select max(publication_id) from site_dd.publications)"""


def variant(k: int):
    return make_publication(sites=SITES, variant=k, withheld=(("dd", "2026-10-31"),) if k % 2 else ())


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_readers_never_see_a_mix(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "duckdb":
        where = str(tmp_path / "wh" / "evaluation.duckdb")
        publish = lambda pub: publish_duckdb(Path(where), pub, retention=0)  # noqa: E731
        run_readers(kind, where, publish, tmp_path)
    else:
        with new_database(request.getfixturevalue("pg_server")) as db:
            run_readers(kind, db.publisher_url, lambda pub: publish_postgres(db.publisher_url, pub, retention=0),
                        tmp_path)


def signature_now(kind: str, where: str) -> list[str | None]:
    if kind == "duckdb":
        from assets.warehouse import connect_warehouse
        con = connect_warehouse(where)
        try:
            row = con.execute(SIGNATURE).fetchone()
        finally:
            con.close()
    else:
        with psycopg.connect(where, autocommit=True) as con:
            row = con.execute(SIGNATURE).fetchone()
    return [None if v is None else str(int(v)) for v in row]


def run_readers(kind: str, where: str, publish, tmp_path: Path) -> None:
    assert publish(variant(0)) == 1
    states = [signature_now(kind, where)]
    stop = tmp_path / "stop"
    outs = [tmp_path / f"reader-{i}.jsonl" for i in range(READERS)]
    readers = [start_reader(kind, where, out, stop, SIGNATURE, pause=0.1 if kind == "duckdb" else 0.002)
               for out in outs]
    try:
        deadline = time.monotonic() + 30
        while not all(o.exists() and o.stat().st_size for o in outs):  # every reader is reading
            assert time.monotonic() < deadline and all(r.poll() is None for r in readers)
            time.sleep(0.05)
        for k in range(1, PUBLISHES + 1):
            assert publish(variant(k)) == k + 1
            states.append(signature_now(kind, where))
            time.sleep(0.05)
    finally:
        stop.touch()
        for r in readers:
            try:
                r.wait(timeout=30)
            except Exception:
                r.kill()
                r.wait()
    assert len({json.dumps(s) for s in states}) == PUBLISHES + 1
    for i, out in enumerate(outs):
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        errors = [x["error"] for x in lines if "error" in x]
        assert not errors, f"reader {i}: {errors[:3]}"
        seen = [x["row"] for x in lines]
        mixed = [s for s in seen if s not in states]
        assert not mixed, f"reader {i} saw parts of two publications: {mixed[:3]}"
        order = [states.index(s) for s in seen]
        assert order == sorted(order), f"reader {i} went back to an older publication"
        assert len(set(order)) >= 3, f"reader {i} saw too few publications to tell: {sorted(set(order))}"
        print(f"{kind} reader {i}: {len(seen)} queries, saw publications {sorted(set(order))}")
