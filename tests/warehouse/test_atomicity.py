"""Readers see the old or the new publication, never a mix; a publish that fails part-way changes nothing."""
from __future__ import annotations

import threading

import psycopg
import pytest

from assets import warehouse
from tests.warehouse.conftest import SIGNATURE, DuckTarget, PgDatabase, PgTarget, Target, snapshot
from tests.warehouse.factory import make_publication

SITES = ("aa", "bb", "cc", "dd")


def signature(con: psycopg.Connection) -> tuple:
    return tuple(con.execute(SIGNATURE).fetchone())


def test_a_failure_part_way_leaves_the_warehouse_unchanged(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    target.publish(make_publication(variant=0))
    before = snapshot(target)
    real = warehouse._refresh_site_schemas

    def fail_after_writing(*args: object) -> None:
        real(*args)
        raise OSError("disk full")
    monkeypatch.setattr(warehouse, "_refresh_site_schemas", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        target.publish(make_publication(variant=1))
    assert snapshot(target) == before
    if isinstance(target, DuckTarget):
        assert sorted(p.name for p in target.path.parent.iterdir()) == [".evaluation.duckdb.lock", "evaluation.duckdb"]


def test_concurrent_readers_see_one_whole_publication_at_a_time(pg_db: PgDatabase) -> None:
    target = PgTarget(pg_db)
    target.publish(make_publication(sites=SITES, variant=0))
    reader = psycopg.connect(pg_db.publisher_url, autocommit=True)
    states = [signature(reader)]
    seen: list[tuple] = []
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(pg_db.publisher_url, autocommit=True) as con:
            while not stop.is_set():
                seen.append(signature(con))
    thread = threading.Thread(target=read)
    thread.start()
    try:
        for variant in (1, 2, 3, 4):
            withheld = (("dd", "2026-10-31"),) if variant % 2 else ()
            target.publish(make_publication(sites=SITES, variant=variant, withheld=withheld))
            states.append(signature(reader))
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert len(set(states)) == 5 and len(seen) > 20
    mixed = [s for s in seen if s not in states]
    assert not mixed, f"a reader saw parts of two publications: {mixed[:3]}"
    order = [states.index(s) for s in seen]
    assert order == sorted(order)


def test_a_repeatable_read_reader_keeps_its_publication_until_it_commits(pg_db: PgDatabase) -> None:
    target = PgTarget(pg_db)
    target.publish(make_publication(sites=SITES, variant=0))
    with psycopg.connect(pg_db.publisher_url) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        old = signature(reader)  # opens the reader's transaction, holding its snapshot and table locks
        # The publish must not wait for the reader: it writes rows, it does not lock tables against it.
        impatient = PgTarget(PgDatabase(pg_db.admin_url, pg_db.publisher_url + "?options=-c%20lock_timeout%3D5000",
                                        pg_db.name))
        assert impatient.publish(make_publication(sites=SITES, variant=1)) == 2
        assert signature(reader) == old and old[0] == 1
        reader.commit()
        assert signature(reader)[0] == 2

