"""Access on the PostgreSQL target, proven by logging in: login users made members of the group roles
the publish creates, each trying to read what it should not and to write anything at all."""
from __future__ import annotations

import psycopg
import pytest

from assets.warehouse import BI_ROLE, EVALUATOR_ROLE, SITE_KEYED_TABLES, publish_postgres
from tests.warehouse.conftest import PgDatabase, pg_frame, with_login
from tests.warehouse.factory import make_publication

WRITES = ["insert into evaluation.indicator_values (site_code) values ('aa')",
          "update evaluation.indicator_values set value = 0",
          "delete from evaluation.indicator_values_history",
          "truncate evaluation.publications",
          "insert into evaluation.sites (site_code) values ('zz')",
          "create table evaluation.mine (x int)",
          "insert into site_aa.indicator_values (site_code) values ('aa')",
          "delete from site_aa.publications",
          "create table site_aa.mine (x int)"]


def sites_seen(url: str, table: str) -> set[str]:
    return set(pg_frame(url, f"select distinct site_code from {table}").site_code)


def denied(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(statement)


@pytest.fixture
def published(pg_db: PgDatabase) -> PgDatabase:
    assert publish_postgres(pg_db.publisher_url, make_publication(), retention=0) == 1
    return pg_db


def test_group_roles_exist_and_cannot_log_in(published: PgDatabase) -> None:
    roles = pg_frame(published.admin_url, "select rolname, rolcanlogin from pg_roles where rolname like 'c20p5%'")
    expected = {EVALUATOR_ROLE, BI_ROLE, "c20p5_site_aa", "c20p5_site_bb"}
    assert expected <= set(roles.rolname)
    assert not roles[roles.rolname.isin(expected)].rolcanlogin.any()
    # trust auth says so; password auth refuses earlier, as the role has no password
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in|password authentication failed"):
        psycopg.connect(with_login(published.admin_url, EVALUATOR_ROLE)).close()


def test_evaluator_reads_every_site_and_writes_nothing(published: PgDatabase) -> None:
    url = published.login_as(EVALUATOR_ROLE)
    for table in (*(f"evaluation.{t}" for t in SITE_KEYED_TABLES), "site_aa.indicator_values"):
        assert sites_seen(url, table) == ({"aa"} if table.startswith("site_aa") else {"aa", "bb"}), table
    assert sites_seen(url, "site_bb.indicator_values") == {"bb"}
    assert len(pg_frame(url, "select * from evaluation.publications")) == 1
    for statement in WRITES:
        denied(url, statement)


def test_bi_reads_schema_evaluation_only(published: PgDatabase) -> None:
    url = published.login_as(BI_ROLE)
    for table in SITE_KEYED_TABLES:
        assert sites_seen(url, f"evaluation.{table}") == {"aa", "bb"}, table
    assert len(pg_frame(url, "select * from evaluation.indicators")) == 2
    for statement in ["select * from site_aa.indicator_values", "select * from site_bb.sites", *WRITES]:
        denied(url, statement)


def test_a_site_role_sees_only_its_own_site(published: PgDatabase) -> None:
    url = published.login_as("c20p5_site_aa")
    for table in SITE_KEYED_TABLES:
        assert sites_seen(url, f"evaluation.{table}") == {"aa"}, table
        assert pg_frame(url, f"select count(*) as n from evaluation.{table} where site_code = 'bb'").n[0] == 0
    assert sites_seen(url, "site_aa.indicator_values") == {"aa"}
    assert len(pg_frame(url, "select * from evaluation.indicators")) == 2
    for statement in ["select * from site_bb.indicator_values", "select * from evaluation.publications", *WRITES]:
        denied(url, statement)


def test_roles_and_grants_follow_new_sites_and_stray_write_grants_are_removed(published: PgDatabase) -> None:
    evaluator, site_aa = published.login_as(EVALUATOR_ROLE), published.login_as("c20p5_site_aa")
    stray, stray_user = published.login_as(BI_ROLE), published.users[-1]
    with psycopg.connect(published.admin_url, autocommit=True) as con:  # a DBA's hand-made write grants
        con.execute(f"grant insert, update on evaluation.indicator_values to {BI_ROLE}")
        con.execute(f"grant delete on evaluation.sites to {stray_user}")
    publish_postgres(published.publisher_url, make_publication(sites=("aa", "bb", "cc"), variant=1), retention=0)
    site_cc = published.login_as("c20p5_site_cc")
    assert sites_seen(site_cc, "evaluation.indicator_values") == {"cc"}
    assert sites_seen(site_cc, "site_cc.indicator_values") == {"cc"}
    assert sites_seen(evaluator, "site_cc.indicator_values") == {"cc"}
    assert sites_seen(site_aa, "evaluation.indicator_values") == {"aa"}
    denied(site_aa, "select * from site_cc.indicator_values")
    denied(stray, "insert into evaluation.indicator_values (site_code) values ('aa')")
    denied(stray, "delete from evaluation.sites")
    writers = pg_frame(published.admin_url, """select distinct n.nspname, c.relname, a.privilege_type
        from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
        where (n.nspname = 'evaluation' or n.nspname like 'site\\_%') and a.grantee <> c.relowner
          and a.privilege_type <> 'SELECT'""")
    assert writers.empty, writers
