from pathlib import Path

import pytest

from orchestration.settings import SettingsError, load_settings, load_sites


def test_defaults_follow_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.landing_dir == tmp_path / "data" / "landing"
    assert s.work_dir == tmp_path / "data" / "work"
    assert s.warehouse_url == str(tmp_path / "data" / "warehouse" / "evaluation.duckdb")
    assert s.imd_vintage == "2025"
    assert {x.site_code for x in s.sites} >= {"lsc", "blackpool_central"}


def test_postgres_url_is_kept_and_vintage_validated() -> None:
    s = load_settings({"C20P5_WAREHOUSE_URL": "postgresql://u@localhost/db", "C20P5_IMD_VINTAGE": "2019"})
    assert s.warehouse_is_postgres and s.imd_vintage == "2019"
    with pytest.raises(SettingsError, match="C20P5_IMD_VINTAGE"):
        load_settings({"C20P5_IMD_VINTAGE": "2015"})


@pytest.mark.parametrize("bad, message", [
    ("site_code: Bad-Code", "site_code"),
    ("site_code: ok_site\n    programme: other", "programme"),
    ("site_code: ok_site\n    programme: core20plus_connectors\n    geography: {region: X}", "geography"),
    ("site_code: ok_site\n    programme: core20plus_connectors\n    geography: {icb: QE1}\n    plus_groups: [pirates]", "plus_groups"),
    # a value listed twice would count its people or its indicator twice
    ("site_code: ok_site\n    programme: core20plus_connectors\n    geography: {icb: QE1}\n    plus_groups: [carer, homeless, carer]",
     r"\(ok_site\): plus_groups lists carer more than once"),
    ("site_code: ok_site\n    programme: complete_care_communities\n    geography: {pcns: [U1, U1]}",
     r"\(ok_site\): geography pcns lists U1 more than once"),
    ("site_code: ok_site\n    programme: complete_care_communities\n    geography: {pcns: U1}\n"
     "    local_priorities: [KNIFE_CRIME_RATE, KNIFE_CRIME_RATE]", "local_priorities lists KNIFE_CRIME_RATE more than once"),
])
def test_registry_errors_name_the_site_and_field(tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(f"sites:\n  - {bad}\n")
    with pytest.raises(SettingsError, match=message):
        load_sites(path)


def test_warehouse_password_is_masked_for_logs() -> None:
    s = load_settings({"C20P5_WAREHOUSE_URL": "postgresql://publisher:s3cret@db.local:5432/evaluation"})
    assert s.warehouse_label == "postgresql://publisher:***@db.local:5432/evaluation"
    assert "s3cret" not in s.warehouse_label
