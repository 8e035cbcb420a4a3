"""Publication history on both targets: latest rows, withheld sites, reproducible earlier publications,
retention that prunes only on purpose, and the same tables on DuckDB and PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from assets.warehouse import RETENTION_ENV, WarehouseContractError, retention_from_env
from orchestration.settings import SettingsError
from tests.warehouse.conftest import DuckTarget, PgDatabase, PgTarget, Target, canonical, snapshot
from tests.warehouse.factory import make_publication

BB_OCT = ("bb", "2026-10-31")
ORDER = "order by site_code, period_end, indicator_id, breakdown, breakdown_value"


def as_of(publication_id: int) -> str:
    """The evaluator's query for an earlier publication: every site-period as that publication left it."""
    return f"""select h.* from evaluation.indicator_values_history h
        join (select site_code, period_end, max(publication_id) as publication_id
              from evaluation.indicator_values_history where publication_id <= {publication_id}
              group by site_code, period_end) v
          on h.site_code = v.site_code and h.period_end = v.period_end and h.publication_id = v.publication_id
        where h.breakdown not in ('practice', 'pcn')
        order by h.site_code, h.period_end, h.indicator_id, h.breakdown, h.breakdown_value"""


KEPT = ("publications", "indicator_values_history", "inequality_summary_history", "data_quality")
LATEST = ("evaluation.indicator_values", "evaluation.inequality_summary", "site_bb.indicator_values")


def kept_ids(t: Target) -> dict[str, list[int]]:
    """The publication ids each append-only table still holds."""
    frames = t.query_many([f"select distinct publication_id from evaluation.{table} order by 1" for table in KEPT])
    return {table: [int(i) for i in f.publication_id] for table, f in zip(KEPT, frames)}


def latest(t: Target) -> list[list[tuple[str, ...]]]:
    return [canonical(f) for f in t.query_many([f"select * from {table}" for table in LATEST])]


def test_latest_is_newest_per_site_period_and_withheld_sites_keep_their_last_good_rows(target: Target) -> None:
    assert target.publish(make_publication(variant=0)) == 1
    first = target.query(f"select * from evaluation.indicator_values {ORDER}")
    assert target.publish(make_publication(variant=1, withheld=(BB_OCT,))) == 2
    latest = target.query(f"select * from evaluation.indicator_values {ORDER}")
    source = latest.groupby([latest.site_code, latest.period_end.astype(str).str[:10]]).publication_id.unique()
    assert {k: list(v) for k, v in source.items()} == {
        ("aa", "2026-09-30"): [2], ("aa", "2026-10-31"): [2], ("bb", "2026-09-30"): [2], ("bb", "2026-10-31"): [1]}
    kept = latest[(latest.site_code == "bb") & (latest.publication_id == 1)].reset_index(drop=True)
    before = first[(first.site_code == "bb") & (first.period_end.astype(str).str.startswith(BB_OCT[1]))]
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))
    withheld = target.query("select sites_withheld from evaluation.publications where publication_id = 2")
    assert '"site_code": "bb"' in withheld.sites_withheld[0] and "row 6, column sex" in withheld.sites_withheld[0]
    assert not set(latest.breakdown) & {"practice", "pcn"}


def test_queries_against_an_earlier_publication_are_byte_identical(target: Target) -> None:
    target.publish(make_publication(variant=0))
    target.publish(make_publication(variant=1, withheld=(BB_OCT,)))
    queries = [as_of(1), as_of(2), "select * from evaluation.inequality_summary_history where publication_id = 1 "
               "order by site_code, period_end, indicator_id"]
    before = [target.query(q).to_csv(index=False).encode() for q in queries]
    target.publish(make_publication(variant=2))
    target.publish(make_publication(variant=3, sites=("aa", "bb", "cc")), retention=3)
    after = [target.query(q).to_csv(index=False).encode() for q in queries]
    assert before == after
    assert before[0] != before[1] and b'bb,2026-10-31' in before[1]


def test_retention_keeps_the_newest_n_and_every_publication_still_in_use(target: Target, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    twin = DuckTarget(tmp_path / "twin" / "evaluation.duckdb")  # the same publications, nothing pruned
    plan = [(0, ()), (1, (BB_OCT,)), (2, (BB_OCT,)), (3, (BB_OCT,)), (4, ()), (5, ())]
    kept_after = {4: [1, 3, 4], 5: [1, 4, 5], 6: [5, 6]}  # bb's October rows live in publication 1 until 5
    for number, (variant, withheld) in enumerate(plan, start=1):
        pub = make_publication(variant=variant, withheld=withheld)
        if number < 4:
            target.publish(pub, retention=0)
        else:
            monkeypatch.setenv(RETENTION_ENV, "2")
            target.publish(pub, retention=None)  # read from the environment, as the pipeline does
        twin.publish(pub, retention=0)
        expected = kept_after.get(number, list(range(1, number + 1)))
        assert kept_ids(target) == {table: expected for table in KEPT}, number
        if number in kept_after:  # pruning never changes what readers see now
            assert latest(target) == latest(twin), number


def test_retention_setting_is_explicit() -> None:
    assert retention_from_env({}) == 0
    assert retention_from_env({RETENTION_ENV: " 12 "}) == 12
    for bad in ("-1", "all", "2.5"):
        with pytest.raises(SettingsError, match=RETENTION_ENV):
            retention_from_env({RETENTION_ENV: bad})


def test_unchanged_content_is_not_published_again(target: Target) -> None:
    assert target.publish(make_publication()) == 1
    before = snapshot(target)
    assert target.publish(make_publication(), retention=1) is None
    assert snapshot(target) == before


def test_site_schemas_hold_their_own_site_only(target: Target) -> None:
    target.publish(make_publication(withheld=(BB_OCT,)))
    site = target.query("select * from site_aa.indicator_values")
    assert set(site.site_code) == {"aa"} and {"practice"} <= set(site.breakdown)
    for table in ("inequality_summary", "data_quality", "sites"):
        assert set(target.query(f"select site_code from site_aa.{table}").site_code) == {"aa"}, table
    [row] = target.query("select * from site_aa.publications").to_dict("records")
    assert row["sites_withheld"] == "[]" and "bb" not in row["sites_published"] + row["input_checksums"]
    assert "row 6" in target.query("select sites_withheld from site_bb.publications").sites_withheld[0]


def test_a_warehouse_of_another_contract_version_is_refused(target: Target) -> None:
    target.publish(make_publication(variant=0))
    target.execute("alter table evaluation.indicator_values_history rename column lower_ci to lower_limit")
    before = snapshot(target)
    with pytest.raises(WarehouseContractError, match="indicator_values_history"):
        target.publish(make_publication(variant=1))
    assert snapshot(target) == before


def test_both_targets_publish_the_same_tables_columns_and_rows(tmp_path: Path, pg_db: PgDatabase) -> None:
    duck, pg = DuckTarget(tmp_path / "evaluation.duckdb"), PgTarget(pg_db)
    for pub in (make_publication(variant=0), make_publication(variant=1, withheld=(BB_OCT,))):
        assert duck.publish(pub) == pg.publish(pub)
    assert duck.tables() == pg.tables()
    duck_snap, pg_snap = snapshot(duck), snapshot(pg)
    for table in duck.tables():
        columns = f"""select column_name, data_type from information_schema.columns
                      where table_schema || '.' || table_name = '{table}' order by ordinal_position"""
        assert list(duck.query(columns).column_name) == list(pg.query(columns).column_name), table
        if table.endswith(".publications"):  # published_at is the time of each write
            duck_snap[table] = [r[:1] + r[2:] for r in duck_snap[table]]
            pg_snap[table] = [r[:1] + r[2:] for r in pg_snap[table]]
        assert duck_snap[table] == pg_snap[table], table
