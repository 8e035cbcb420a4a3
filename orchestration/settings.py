"""The C20P5_* environment, read in one place (SPEC §12)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
SHIPPED_REFERENCE_DIR = PROJECT_ROOT / "assets" / "reference_files"
SHIPPED_SITES_FILE = PROJECT_ROOT / "sites.yaml"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# How long a run's step waits for the build database while another process holds it, before the step
# fails as transient I/O and its retry policy takes over (C20P5_LOCK_TIMEOUT_SECONDS).
LOCK_TIMEOUT_SECONDS = 300.0
SITE_CODE_RE = re.compile(r"^[a-z0-9_]{2,32}$")
PROGRAMMES = {"core20plus_connectors", "complete_care_communities"}
PLUS_GROUPS = {
    "homeless", "learning_disability", "autism", "gypsy_roma_traveller", "justice_contact",
    "carer", "asylum_refugee", "looked_after_child", "coastal", "ethnic_minority",
}


class SettingsError(ValueError):
    """A setting or the site registry is invalid."""


@dataclass(frozen=True)
class Site:
    site_code: str
    site_name: str
    programme: str
    geography_kind: str  # icb | pcns | practices
    geography_codes: tuple[str, ...]
    plus_groups: tuple[str, ...]
    local_priorities: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    landing_dir: Path
    warehouse_url: str
    work_dir: Path
    imd_vintage: str
    sites_file: Path
    alert_webhook: str | None = None
    sites: tuple[Site, ...] = field(default=())
    # Console log level of a run started by c20p5 (the run history keeps every level regardless).
    log_level: str = "WARNING"
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS

    @property
    def build_db_path(self) -> Path:
        """The private build database: nothing outside the pipeline opens it."""
        return self.work_dir / "build.duckdb"

    @property
    def staging_dir(self) -> Path:
        """The staged submissions' rows, one Parquet file per submission and file kind (assets/staging.py):
        part of the build database's state, kept beside it."""
        return self.work_dir / "staged"

    @property
    def quarantine_dir(self) -> Path:
        return self.work_dir / "quarantine"

    @property
    def warehouse_label(self) -> str:
        """The warehouse URL safe to print or log: any password is masked."""
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.warehouse_url)

    @property
    def warehouse_is_postgres(self) -> bool:
        return is_postgres_url(self.warehouse_url)

    def site(self, site_code: str) -> Site | None:
        return next((s for s in self.sites if s.site_code == site_code), None)


def is_postgres_url(url: str) -> bool:
    """A warehouse URL naming a PostgreSQL server; anything else is a DuckDB file path."""
    return url.startswith(("postgresql://", "postgres://"))


def _abs(path: str) -> Path:
    return Path(path).expanduser().resolve()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read every C20P5_* variable; relative paths resolve against the current directory."""
    env = dict(os.environ if env is None else env)
    vintage = env.get("C20P5_IMD_VINTAGE", "2025")
    if vintage not in {"2025", "2019"}:
        raise SettingsError(f"C20P5_IMD_VINTAGE must be 2025 or 2019, not {vintage!r}")
    warehouse = env.get("C20P5_WAREHOUSE_URL", "data/warehouse/evaluation.duckdb")
    if not is_postgres_url(warehouse):
        warehouse = str(_abs(warehouse))
    sites_file = _abs(env.get("C20P5_SITES_FILE", str(SHIPPED_SITES_FILE)))
    log_level = env.get("C20P5_LOG_LEVEL", "WARNING").upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"C20P5_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    return Settings(
        landing_dir=_abs(env.get("C20P5_LANDING_DIR", "data/landing")),
        warehouse_url=warehouse,
        work_dir=_abs(env.get("C20P5_WORK_DIR", "data/work")),
        imd_vintage=vintage,
        sites_file=sites_file,
        alert_webhook=env.get("C20P5_ALERT_WEBHOOK") or None,
        sites=load_sites(sites_file),
        log_level=log_level,
        lock_timeout_seconds=_lock_timeout(env.get("C20P5_LOCK_TIMEOUT_SECONDS", "").strip()),
    )


def _lock_timeout(raw: str) -> float:
    if not raw:
        return LOCK_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise SettingsError(f"C20P5_LOCK_TIMEOUT_SECONDS must be a number of seconds > 0, not {raw!r}")
    return seconds


def load_registry(env: dict[str, str] | None = None) -> tuple[Site, ...]:
    """Only the site registry (C20P5_SITES_FILE): what the Dagster partitions need at load time."""
    env = dict(os.environ if env is None else env)
    return load_sites(_abs(env.get("C20P5_SITES_FILE", str(SHIPPED_SITES_FILE))))


def load_sites(path: Path) -> tuple[Site, ...]:
    """Parse and validate the site registry (SPEC §2); errors name the site and field."""
    if not path.exists():
        raise SettingsError(f"site registry {path} not found")
    doc = yaml.safe_load(path.read_text()) or {}
    sites = tuple(_parse_site(i, raw, path) for i, raw in enumerate(doc.get("sites") or []))
    codes = [s.site_code for s in sites]
    if len(set(codes)) != len(codes):
        raise SettingsError(f"{path}: duplicate site_code in {codes}")
    return sites


def _refuse_repeats(where: str, field: str, values: list) -> None:
    """A value listed twice would count its people or indicator twice (one row per listing downstream)."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise SettingsError(f"{where}: {field} lists {', '.join(repeated)} more than once")


def _parse_site(index: int, raw: dict, path: Path) -> Site:
    where = f"{path}: sites[{index}]"
    code = str(raw.get("site_code", ""))
    if not SITE_CODE_RE.match(code):
        raise SettingsError(f"{where}: site_code {code!r} must match ^[a-z0-9_]{{2,32}}$")
    if raw.get("programme") not in PROGRAMMES:
        raise SettingsError(f"{where} ({code}): programme must be one of {sorted(PROGRAMMES)}")
    geography = raw.get("geography") or {}
    if len(geography) != 1 or next(iter(geography)) not in {"icb", "pcns", "practices"}:
        raise SettingsError(f"{where} ({code}): geography must be one of icb, pcns, practices")
    kind, codes = next(iter(geography.items()))
    codes = (codes,) if isinstance(codes, str) else tuple(codes)
    unknown = set(raw.get("plus_groups") or []) - PLUS_GROUPS
    if unknown:
        raise SettingsError(f"{where} ({code}): unknown plus_groups {sorted(unknown)}")
    for field, values in (("plus_groups", raw.get("plus_groups")), ("local_priorities", raw.get("local_priorities")),
                          (f"geography {kind}", codes)):
        _refuse_repeats(f"{where} ({code})", field, list(values or []))
    return Site(
        site_code=code,
        site_name=str(raw.get("site_name", code)),
        programme=raw["programme"],
        geography_kind=kind,
        geography_codes=tuple(str(c) for c in codes),
        plus_groups=tuple(raw.get("plus_groups") or []),
        local_priorities=tuple(raw.get("local_priorities") or []),
    )
