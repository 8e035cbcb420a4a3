"""National reference data (SPEC §4) loaded into the private build database, schema `ref`.

A newer file of the same name under `<landing>/reference/` replaces the shipped one; police.uk
street-level files are read from `reference_files/police/` and `<landing>/reference/police/`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from orchestration.settings import SHIPPED_REFERENCE_DIR, Settings

REFERENCE_FILES = {
    "imd2025": "imd2025_england_lsoa21.csv",
    "iod2019": "iod2019_file2_domains_lsoa11.csv",
    "lsoa11_21": "lookup_lsoa11_lsoa21_ltla22.csv",
    "lsoa21_icb": "lookup_lsoa21_icb24.csv",
    "practice_map": "gp_practice_map_2026-04_selected.csv",
    "epcn_partners": "ePCN_2023-01_PCN_Core_Partner_Details.csv",
    "epcn_details": "ePCN_2023-01_PCNDetails.csv",
    "esp2013": "esp2013_19_age_bands.csv",
    "census_pop": "census2021_lsoa21_age6_usual_residents.csv",
}


def reference_path(settings: Settings, name: str) -> Path:
    """The landing zone's newer copy if there is one, else the shipped file."""
    newer = settings.landing_dir / "reference" / name
    return newer if newer.exists() else SHIPPED_REFERENCE_DIR / name


def police_files(settings: Settings) -> list[Path]:
    """Every police.uk street-level CSV; a landing copy of the same name replaces the shipped one."""
    by_name = {p.name: p for p in sorted((SHIPPED_REFERENCE_DIR / "police").glob("*.csv"))}
    landing = settings.landing_dir / "reference" / "police"
    if landing.is_dir():
        by_name.update({p.name: p for p in sorted(landing.glob("*.csv"))})
    return [by_name[k] for k in sorted(by_name)]


def reference_fingerprint(settings: Settings) -> str:
    """Checksum of every reference input (files, vintage, site registry) to skip unchanged reloads, and
    the `reference` entry of a publication's input checksums. Each file counts by its name relative to
    its root (shipped or landing copy: `police/<file>.csv` either way) and its bytes, never by where it
    lives, so the same inputs replayed from another landing directory give the same fingerprint."""
    h = hashlib.sha256(settings.imd_vintage.encode())
    named = [(f, reference_path(settings, f)) for f in REFERENCE_FILES.values()]
    named += [(f"police/{p.name}", p) for p in police_files(settings)] + [("sites", settings.sites_file)]
    for name, path in named:
        data = path.read_bytes()
        h.update(f"\0{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _csv(path: Path, **opts: str) -> str:
    extra = "".join(f", {k}={v}" for k, v in opts.items())
    return f"read_csv('{path}', header=true{extra})"


def load_reference(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, int]:
    """(Re)build schema `ref`; returns row counts per table."""
    con.execute("create schema if not exists ref")
    _load_deprivation(con, settings)
    _load_practices(con, settings)
    _load_sites(con, settings)
    _load_populations(con, settings)
    _load_police(con, settings)
    tables = [r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema='ref' order by 1"
    ).fetchall()]
    return {t: con.execute(f"select count(*) from ref.{t}").fetchone()[0] for t in tables}


def _load_deprivation(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """`ref.lsoa_deprivation`: IMD rank/decile/quintile for every LSOA 2021 under the chosen vintage,
    and `ref.lsoa_to_lsoa21`: any LSOA code (2011 or 2021) to the LSOA 2021 it counts as.

    Vintage 2019 is published on LSOA 2011: a 2021 LSOA takes the most deprived (lowest rank) of
    its 2011 parents. A 2011 LSOA that split into several 2021 LSOAs maps to its most deprived
    child. Both rules are deterministic and err towards counting people as Core20.
    """
    look = reference_path(settings, REFERENCE_FILES["lsoa11_21"])
    con.execute(f"create or replace table ref.lsoa11_lsoa21 as select * from {_csv(look, all_varchar='true')}")
    if settings.imd_vintage == "2025":
        src = reference_path(settings, REFERENCE_FILES["imd2025"])
        con.execute(f"""create or replace temp view imd_native as
            select lsoa21_code, cast(IMD_rank as integer) as imd_rank from {_csv(src)}""")
        con.execute("create or replace temp view imd21 as select * from imd_native")
    else:
        src = reference_path(settings, REFERENCE_FILES["iod2019"])
        con.execute(f"""create or replace temp view imd_native as
            select "LSOA code (2011)" as lsoa11_code,
                   cast("Index of Multiple Deprivation (IMD) Rank (where 1 is most deprived)" as integer) as imd_rank
            from {_csv(src)}""")
        con.execute("""create or replace temp view imd21 as
            select l.lsoa21_code, min(i.imd_rank) as imd_rank
            from ref.lsoa11_lsoa21 l join imd_native i on i.lsoa11_code = l.lsoa11_code
            group by 1""")
    # Deciles and quintiles are recomputed from the national rank so both vintages use one rule.
    con.execute("""create or replace table ref.lsoa_deprivation as
        with n as (select count(*) as total from imd_native)
        select lsoa21_code, imd_rank,
               least(10, cast(ceil(imd_rank * 10.0 / n.total) as integer)) as imd_decile,
               least(5, cast(ceil(imd_rank * 5.0 / n.total) as integer)) as imd_quintile
        from imd21, n""")
    con.execute("""create or replace table ref.lsoa_to_lsoa21 as
        select lsoa21_code as lsoa_code, lsoa21_code from ref.lsoa_deprivation
        union all
        select lsoa11_code, arg_min(l.lsoa21_code, coalesce(d.imd_rank, 1e9)) from ref.lsoa11_lsoa21 l
        left join ref.lsoa_deprivation d using (lsoa21_code)
        where lsoa11_code not in (select lsoa21_code from ref.lsoa_deprivation)
        group by lsoa11_code""")
    icb = reference_path(settings, REFERENCE_FILES["lsoa21_icb"])
    con.execute(f"""create or replace table ref.lsoa21_geography as
        select g.lsoa21_code, g.lsoa21_name, g.sicbl24_code_nhs as sub_icb_code, g.icb24_code_nhs as icb_code,
               l.ltla22_code, l.ltla22_name
        from {_csv(icb, all_varchar='true')} g
        left join (select distinct lsoa21_code, ltla22_code, ltla22_name from ref.lsoa11_lsoa21) l using (lsoa21_code)""")


def _load_practices(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """`ref.practices`: practice -> PCN -> sub-ICB -> ICB. The April 2026 NHS England mapping wins;
    the national ePCN (Jan 2023) current memberships fill in practices it does not list."""
    gp = reference_path(settings, REFERENCE_FILES["practice_map"])
    partners = reference_path(settings, REFERENCE_FILES["epcn_partners"])
    con.execute(f"""create or replace table ref.practices as
        with map26 as (
            select PRACTICE_CODE as practice_code, PRACTICE_NAME as practice_name, PCN_CODE as pcn_code,
                   PCN_NAME as pcn_name, SUB_ICB_LOCATION_CODE as sub_icb_code, ICB_CODE as icb_code
            from {_csv(gp, all_varchar='true')}),
        epcn as (
            select "Partner Organisation Code" as practice_code, "Partner Name" as practice_name,
                   "PCN Code" as pcn_code, "PCN Name" as pcn_name,
                   "Practice Parent Sub ICB Loc Code" as sub_icb_code, cast(null as varchar) as icb_code
            from {_csv(partners, all_varchar='true')}
            where "Practice to PCN Relationship End Date" is null
            qualify row_number() over (partition by "Partner Organisation Code"
                                       order by "Practice to PCN Relationship Start Date" desc) = 1)
        select * from map26
        union all
        select * from epcn where practice_code not in (select practice_code from map26)""")


def _load_sites(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """`ref.sites`, `ref.site_practices` (a site's population = patients at these practices),
    `ref.site_plus_groups` and `ref.site_local_priorities` from the site registry."""
    con.execute("""create or replace table ref.sites (site_code varchar primary key, site_name varchar,
        programme varchar, geography_kind varchar, geography_codes varchar)""")
    con.execute("create or replace table ref.site_geography (site_code varchar, kind varchar, code varchar)")
    con.execute("create or replace table ref.site_plus_groups (site_code varchar, plus_group varchar)")
    con.execute("create or replace table ref.site_local_priorities (site_code varchar, indicator_id varchar)")
    for s in settings.sites:
        con.execute("insert into ref.sites values (?, ?, ?, ?, ?)",
                    [s.site_code, s.site_name, s.programme, s.geography_kind, ",".join(s.geography_codes)])
        for table, values in (("site_geography", [(s.geography_kind, c) for c in s.geography_codes]),
                              ("site_plus_groups", [(g,) for g in s.plus_groups]),
                              ("site_local_priorities", [(i,) for i in s.local_priorities])):
            for v in values:
                con.execute(f"insert into ref.{table} values (?{', ?' * len(v)})", [s.site_code, *v])
    con.execute("""create or replace table ref.site_practices as
        select distinct g.site_code, p.practice_code, p.pcn_code
        from ref.site_geography g join ref.practices p
          on (g.kind = 'icb' and p.icb_code = g.code)
          or (g.kind = 'pcns' and p.pcn_code = g.code)
          or (g.kind = 'practices' and p.practice_code = g.code)""")


def _load_populations(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    esp = reference_path(settings, REFERENCE_FILES["esp2013"])
    pop = reference_path(settings, REFERENCE_FILES["census_pop"])
    con.execute(f"create or replace table ref.esp2013 as select * from {_csv(esp)}")
    con.execute(f"""create or replace table ref.lsoa_population as
        select lsoa21_code, age_group, cast(usual_residents as integer) as usual_residents from {_csv(pop)}""")


def _load_police(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """`ref.police_crimes`: street-level crimes with their LSOA mapped to 2021 (police.uk uses 2011)."""
    files = police_files(settings)
    if not files:
        con.execute("""create or replace table ref.police_crimes (crime_id varchar, month varchar,
            lsoa21_code varchar, crime_type varchar)""")
        return
    paths = "[" + ", ".join(f"'{p}'" for p in files) + "]"
    con.execute(f"""create or replace table ref.police_crimes as
        select c."Crime ID" as crime_id, c."Month" as month, m.lsoa21_code, c."Crime type" as crime_type
        from read_csv({paths}, header=true, all_varchar=true, union_by_name=true) c
        left join ref.lsoa_to_lsoa21 m on m.lsoa_code = c."LSOA code" """)
