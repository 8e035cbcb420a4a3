"""`c20p5 bench`: the nightly job at several scales, against the raw-DuckDB floor.

Per scale (total people shared by 26 sites, 13 monthly periods, the generator's event mix):
  1. a landing zone from the generator (CSV, as sites send them);
  2. the full refresh: `c20p5 run` as a child process on a fresh work dir and warehouse;
  3. the floor: `benchmarks/floor.sql` on the same files, as a child process, checked against
     what the pipeline published;
  4. an incremental night: one new month for one site, `c20p5 run` again.
Each child is measured the same way: wall time, peak resident memory of its whole process tree
(sampled), bytes it read. The full refresh is split into stages from the run's own event log
and dbt's run_results. Fixed costs (Dagster start-up, dbt parse, Great Expectations import) are
measured once in children of their own. Medians of `repeats` runs; every figure also goes to
`<dir>/results-<time>.json`. Nothing here is a test: it prints figures (docs/performance.md).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import yaml

from orchestration.settings import DBT_PROJECT_DIR, PROJECT_ROOT, SHIPPED_REFERENCE_DIR

Say = Callable[[str], None]
PYTHON = sys.executable
LAST_PERIOD = date(2026, 10, 31)
NEXT_PERIOD = date(2026, 11, 30)  # the incremental night's new month
BYTES_PER_PERSON_PERIOD = 1_300  # landing CSV measured at 30k people x 13 months, plus margin
SPACE_FACTOR = 3.2  # landing + generator truth + build database + warehouse, relative to the landing
PLUS_ROTATION = (("homeless", "gypsy_roma_traveller", "coastal"), ("homeless", "justice_contact"),
                 ("ethnic_minority", "learning_disability", "carer"), ("autism", "asylum_refugee"),
                 ("looked_after_child", "homeless", "ethnic_minority"))
LOCAL_PRIORITIES = (("KNIFE_CRIME_RATE", "SHARP_OBJECT_ASSAULT_ADMISSIONS"), ("KNIFE_CRIME_RATE",), ())


@dataclass(frozen=True)
class Scale:
    label: str
    people: int


def parse_scales(text: str) -> list[Scale]:
    """'100k,1m,5m' -> scales; a bare number is people."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", part)
        if not m:
            raise ValueError(f"cannot read scale {part!r}: use people such as 100k, 1m, 5m or 250000")
        out.append(Scale(part, int(float(m[1]) * {"": 1, "k": 1_000, "m": 1_000_000}[m[2]])))
    if not out:
        raise ValueError("no scales given")
    return out


# ---------------------------------------------------------------------------------------------
# Measuring a child process
# ---------------------------------------------------------------------------------------------

@dataclass
class Measured:
    wall_s: float
    peak_rss_bytes: int
    read_bytes: int       # read() and pread() calls, page cache included (/proc rchar)
    disk_read_bytes: int  # what reached the block device (/proc read_bytes)
    returncode: int
    started_at: float     # epoch seconds at launch
    tail: str = ""


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _own_io() -> dict[str, int]:
    """This process's I/O counters, which include every reaped descendant's."""
    rows = (line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {k: int(v) for k, v in rows}


def measure(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = PROJECT_ROOT) -> Measured:
    """Run `cmd` to completion, sampling its process tree's resident memory every 0.2 s."""
    peak, done = [0], threading.Event()
    before = _own_io()
    started, started_at = time.monotonic(), time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], sum(_rss(p) for p in _tree(proc.pid)))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    wall = time.monotonic() - started
    after = _own_io()
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return Measured(wall, peak[0], after["rchar"] - before["rchar"], after["read_bytes"] - before["read_bytes"],
                    code, started_at, tail)


def _env(root: Path, sites_file: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "C20P5_LANDING_DIR": str(root / "landing"), "C20P5_WORK_DIR": str(root / "work"),
            "C20P5_WAREHOUSE_URL": str(root / "warehouse" / "evaluation.duckdb"),
            "C20P5_SITES_FILE": str(sites_file), "C20P5_LOG_LEVEL": "WARNING", **extra}


# ---------------------------------------------------------------------------------------------
# The scale's inputs: a registry of 26 real PCN-based sites, and a landing zone
# ---------------------------------------------------------------------------------------------

def bench_registry(n_sites: int) -> dict:
    """`n_sites` sites on real PCNs of the shipped practice map: the first 11 (Core20PLUS
    Connectors) take two PCNs each, the rest (Complete Care Communities) one."""
    import duckdb
    pcns = [r[0] for r in duckdb.sql(
        f"""select PCN_CODE, count(*) from read_csv('{SHIPPED_REFERENCE_DIR / "gp_practice_map_2026-04_selected.csv"}')
            group by 1 having count(*) >= 2 order by 2 desc, 1""").fetchall()]
    connectors = min(11, n_sites)
    if connectors * 2 + (n_sites - connectors) > len(pcns):
        raise ValueError(f"{n_sites} sites need more PCNs than the {len(pcns)} in the shipped practice map")
    sites, i = [], 0
    for k in range(n_sites):
        take = 2 if k < connectors else 1
        ics = k < connectors
        sites.append({
            "site_code": f"{'ics' if ics else 'ccc'}_{k + 1:02d}",
            "site_name": f"Benchmark {'ICS' if ics else 'PCN'} {k + 1}",
            "programme": "core20plus_connectors" if ics else "complete_care_communities",
            "geography": {"pcns": pcns[i:i + take]},
            "plus_groups": list(PLUS_ROTATION[k % len(PLUS_ROTATION)]),
            "local_priorities": [] if ics else list(LOCAL_PRIORITIES[k % len(LOCAL_PRIORITIES)]),
        })
        i += take
    return {"sites": sites}


def _generate(root: Path, sites_file: Path, people_per_site: int, months: int, last: date,
              say: Say, site_code: str | None = None) -> float:
    from assets.generator import generate_landing
    from orchestration.settings import load_settings
    settings = load_settings(_env(root, sites_file))
    sites = tuple(s for s in settings.sites if site_code in (None, s.site_code))
    started = time.monotonic()
    generate_landing(settings, people_per_site=people_per_site, months=months, last_period=last, sites=sites,
                     progress=lambda t: say(f"    {t}"))
    return time.monotonic() - started


def _space_needed(people: int, months: int) -> int:
    return int(people * months * BYTES_PER_PERSON_PERIOD * SPACE_FACTOR)


# ---------------------------------------------------------------------------------------------
# Stages of a finished run, from its event log and dbt's run_results
# ---------------------------------------------------------------------------------------------

# The floor as a child of its own, writing its table to a file the comparison opens afterwards.
FLOOR_CHILD = ("import sys; from pathlib import Path; from benchmarks.floor import run_floor; "
               "import os; r = run_floor(Path(sys.argv[1]), Path(sys.argv[2]), os.environ.get('C20P5_IMD_VINTAGE', '2025'), "
               "out=sys.argv[3]); r.con.close(); "
               "print(f'{r.rows} rows in {r.seconds:.1f} s')")
STATISTICS_MODELS = ("int_indicator_statistics", "int_inequality_statistics")


def _stage_of(step: str) -> str:
    if step == "dbt_models":
        return "dbt build"
    if step.endswith("great_expectations_marts"):
        return "checks (GX)"
    return {"warehouse_publication": "publish", "evaluation_reports": "reports"}.get(step, "ingest + validation")


def stages(work_dir: Path, m: Measured) -> dict[str, float]:
    """Seconds per stage of the newest run in `work_dir`: ingest + validation (manifests, pandera,
    SQL rules, freshness), dbt build less its statistics models, statistics (the Python models),
    checks (GX), publish, reports, start-up (process start to first step) and dbt overhead (the
    dbt step less the sum of its nodes: parse, adapter, seeds' and tests' bookkeeping)."""
    import dagster as dg

    from orchestration.progress import step_timings
    with dg.DagsterInstance.local_temp(tempdir=str(work_dir / "dagster")) as instance:
        run = instance.get_runs(limit=1)[0]
        timings = step_timings(instance, run.run_id)
    out: dict[str, float] = {}
    for t in timings:
        out[_stage_of(t.step_key)] = out.get(_stage_of(t.step_key), 0.0) + t.seconds
    nodes = _dbt_nodes(work_dir)
    stats = sum(s for name, s in nodes.items() if name in STATISTICS_MODELS)
    out["statistics"] = stats
    out["dbt build"] = out.get("dbt build", 0.0) - stats
    out["dbt overhead"] = out["dbt build"] + stats - sum(nodes.values())
    out["start-up"] = max(0.0, timings[0].started - m.started_at) if timings else 0.0
    out["unaccounted"] = m.wall_s - sum(v for k, v in out.items() if k != "dbt overhead")
    for name in STATISTICS_MODELS:  # a split of "statistics", not a stage of its own
        out[f"{PART_OF}{name}"] = nodes.get(name, 0.0)
    return out


PART_OF = "of which "


def slowest(nodes: dict[str, float], n: int = 12) -> dict[str, float]:
    """The n slowest dbt nodes (models, tests, seeds), slowest first."""
    return dict(sorted(nodes.items(), key=lambda kv: -kv[1])[:n])


def _dbt_nodes(work_dir: Path) -> dict[str, float]:
    results = sorted((work_dir / "dbt").glob("vars-*/run_results.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        return {}
    doc = json.loads(results[-1].read_text())
    return {r["unique_id"].split(".")[-1]: float(r["execution_time"]) for r in doc["results"]}


# ---------------------------------------------------------------------------------------------
# Fixed costs
# ---------------------------------------------------------------------------------------------

def fixed_costs(root: Path, sites_file: Path) -> dict[str, float]:
    """Start-up costs every run pays, each in a child of its own (median of 3)."""
    env = _env(root, sites_file)
    target = root / "dbt-parse"
    dbt = str(Path(PYTHON).with_name("dbt"))
    probes = {
        "python + Dagster definitions": [PYTHON, "-c", "import orchestration.definitions"],
        "Great Expectations import": [PYTHON, "-c", "import great_expectations"],
        "dbt parse, full": [dbt, "parse", "--no-partial-parse", "--quiet", "--target-path", str(target)],
        "dbt parse, partial (prepared)": [dbt, "parse", "--quiet", "--target-path", str(target)],
    }
    out = {}
    for name, cmd in probes.items():
        walls = [measure(cmd, env, root / "fixed.log", cwd=DBT_PROJECT_DIR).wall_s for _ in range(3)]
        out[name] = statistics.median(walls)
    shutil.rmtree(target, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# One scale
# ---------------------------------------------------------------------------------------------

@dataclass
class ScaleResult:
    scale: str
    people: int
    sites: int
    months: int
    generate_s: float = 0.0
    landing_bytes: int = 0
    event_rows: int = 0
    full: list[dict] = field(default_factory=list)
    floor: list[dict] = field(default_factory=list)
    incremental: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    incremental_stages: list[dict] = field(default_factory=list)
    slowest_dbt_nodes: list[dict] = field(default_factory=list)  # per full refresh: where the dbt step goes
    floor_matches: list[str] = field(default_factory=list)
    skipped: str | None = None


def _landing_stats(landing: Path) -> tuple[int, int]:
    size = sum(f.stat().st_size for f in landing.rglob("*") if f.is_file())
    rows = sum(json.loads(m.read_text())["files"]["events.csv"]["rows"] for m in landing.glob("sites/*/*/manifest.json"))
    return size, rows


RUN_OUTPUTS = ("work", "warehouse", "floor.duckdb")  # what each measured run starts without
INPUTS = ("landing", "generator_truth")


def _remove(root: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _drop_caches() -> bool:
    """Start each measured child from a cold page cache where the machine allows it."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_scale(scale: Scale, repeats: int, months: int, n_sites: int, root: Path, say: Say) -> ScaleResult:
    sites_file = root / "sites.yaml"
    result = ScaleResult(scale.label, scale.people, n_sites, months)
    free = shutil.disk_usage(root).free
    if _space_needed(scale.people, months) > free:
        result.skipped = (f"needs about {_space_needed(scale.people, months) / 1e9:.0f} GB of disk, "
                          f"{free / 1e9:.0f} GB free under {root}")
        say(f"  skipped: {result.skipped}")
        return result
    per_site = max(1, scale.people // n_sites)
    say(f"  generating {n_sites} sites x {months} months x {per_site:,} people ...")
    _remove(root, INPUTS)
    result.generate_s = _generate(root, sites_file, per_site, months, LAST_PERIOD, say)
    result.landing_bytes, result.event_rows = _landing_stats(root / "landing")
    say(f"  landing zone: {result.landing_bytes / 1e9:.2f} GB, {result.event_rows:,} event rows "
        f"({result.generate_s:.0f} s)")
    for i in range(repeats):
        _once(result, root, sites_file, per_site, i, repeats, say)
    return result


def _once(result: ScaleResult, root: Path, sites_file: Path, per_site: int, i: int, repeats: int, say: Say) -> None:
    tag = f"  [{i + 1}/{repeats}]"
    _remove(root, RUN_OUTPUTS)
    _remove_new_month(root)
    env = _env(root, sites_file)
    cold = _drop_caches()
    say(f"{tag} full refresh (c20p5 run{', cold cache' if cold else ''}) ...")
    full = measure([PYTHON, "-m", "orchestration.cli", "run"], env, root / f"run-full-{i}.log")
    _check(full, "full refresh")
    result.full.append(asdict(full))
    result.stages.append(stages(root / "work", full))
    result.slowest_dbt_nodes.append(slowest(_dbt_nodes(root / "work")))
    say(f"{tag}   {_figures(full)}")
    _drop_caches()
    say(f"{tag} floor (benchmarks/floor.sql) ...")
    floor = measure([PYTHON, "-c", FLOOR_CHILD, str(root / "landing"), str(sites_file), str(root / "floor.duckdb")],
                    env, root / f"floor-{i}.log")
    _check(floor, "floor")
    result.floor.append(asdict(floor))
    result.floor_matches.append(compare_floor(root / "floor.duckdb", root / "warehouse" / "evaluation.duckdb"))
    say(f"{tag}   {_figures(floor)}; ratio {full.wall_s / floor.wall_s:.1f}; {result.floor_matches[-1]}")
    say(f"{tag} incremental night (one new month for one site) ...")
    site = yaml.safe_load(sites_file.read_text())["sites"][0]["site_code"]
    _add_new_month(root, sites_file, per_site, site, say)
    _drop_caches()
    inc = measure([PYTHON, "-m", "orchestration.cli", "run"], env, root / f"run-incremental-{i}.log")
    _check(inc, "incremental night")
    result.incremental.append(asdict(inc))
    result.incremental_stages.append(stages(root / "work", inc))
    say(f"{tag}   {_figures(inc)}; {inc.wall_s / full.wall_s:.0%} of the full refresh")


def _check(m: Measured, what: str) -> None:
    if m.returncode not in (0, 3):
        raise RuntimeError(f"{what} exited {m.returncode}:\n{m.tail}")


def _figures(m: Measured) -> str:
    return (f"{m.wall_s:.1f} s, peak {m.peak_rss_bytes / 2**30:.2f} GiB, read {m.read_bytes / 1e9:.2f} GB "
            f"({m.disk_read_bytes / 1e9:.2f} GB from disk)")


def _add_new_month(root: Path, sites_file: Path, per_site: int, site_code: str, say: Say) -> None:
    """The next month's submission for one site, generated aside and moved into the landing zone
    (the manifest last, as a site's transfer does)."""
    aside = root / "next-month"
    shutil.rmtree(aside, ignore_errors=True)
    _generate(aside, sites_file, per_site, 1, NEXT_PERIOD, say, site_code=site_code)
    src = aside / "landing" / "sites" / site_code / NEXT_PERIOD.strftime("%Y-%m")
    dst = root / "landing" / "sites" / site_code / NEXT_PERIOD.strftime("%Y-%m")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir(), key=lambda p: p.name == "manifest.json"):
        shutil.move(str(f), dst / f.name)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_new_month(root: Path) -> None:
    for folder in (root / "landing" / "sites").glob(f"*/{NEXT_PERIOD.strftime('%Y-%m')}"):
        shutil.rmtree(folder)


def compare_floor(floor_db: Path, warehouse: Path) -> str:
    """'floor = published' or how many rows differ (floats compared to 9 significant digits)."""
    import duckdb
    con = duckdb.connect()
    con.execute(f"attach '{floor_db}' as f (read_only)")
    con.execute(f"attach '{warehouse}' as w (read_only)")
    cols = ("site_code, period_end, indicator_id, breakdown, breakdown_value, numerator, denominator, "
            "round_sig(value), round_sig(lower_ci), round_sig(upper_ci), unit, suppressed, target, "
            "round_sig(comparator_value)")
    con.execute("create macro round_sig(x) as case when x is null or x = 0 then x "
                "else round(x, 8 - cast(floor(log10(abs(x))) as int)) end")
    floor_only = con.execute(f"select count(*) from (select {cols} from f.floor_indicator_values except all "
                             f"select {cols} from w.evaluation.indicator_values)").fetchone()[0]
    published_only = con.execute(f"select count(*) from (select {cols} from w.evaluation.indicator_values "
                                 f"except all select {cols} from f.floor_indicator_values)").fetchone()[0]
    total = con.execute("select count(*) from w.evaluation.indicator_values").fetchone()[0]
    con.close()
    if floor_only == published_only == 0:
        return f"floor = published ({total:,} rows)"
    return f"floor differs: {floor_only:,} floor-only and {published_only:,} published-only rows of {total:,}"


# ---------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------

def run_benchmark(scales: list[Scale], repeats: int, months: int, n_sites: int, root: Path, keep: bool,
                  say: Say) -> bool:
    root.mkdir(parents=True, exist_ok=True)
    sites_file = root / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(bench_registry(n_sites), sort_keys=False))
    say(f"benchmark: {', '.join(s.label for s in scales)} people; {n_sites} sites; {months} months; "
        f"{repeats} run(s) each; {os.cpu_count()} cores; in {root}")
    say("fixed costs ...")
    fixed = fixed_costs(root, sites_file)
    for name, seconds in fixed.items():
        say(f"  {name}: {seconds:.1f} s")
    results = []
    for scale in scales:
        say(f"scale {scale.label} ({scale.people:,} people):")
        results.append(run_scale(scale, repeats, months, n_sites, root, say))
        if not keep:
            _remove(root, INPUTS + RUN_OUTPUTS)
    out = root / f"results-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"machine": _machine(), "fixed_costs_s": fixed,
                               "scales": [asdict(r) for r in results]}, indent=2))
    for line in summary(results, fixed):
        say(line)
    say(f"figures: {out}")
    return all(r.skipped is None for r in results)


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows) if rows else float("nan")


def summary(results: list[ScaleResult], fixed: dict[str, float]) -> list[str]:
    """The table of medians the docs carry."""
    gx = fixed.get("Great Expectations import", 0.0)
    head = (f"{'scale':>6} {'people':>10} {'events':>12} {'pipeline s':>10} {'floor s':>8} {'ratio':>6} "
            f"{'ratio-fixed':>11} {'incr s':>7} {'incr %':>6} {'peak GiB':>8} {'read GB':>8}")
    lines = ["", "medians:", head]
    for r in results:
        if r.skipped:
            lines.append(f"{r.scale:>6} {r.people:>10,} skipped: {r.skipped}")
            continue
        full, floor, inc = (_median(r.full, "wall_s"), _median(r.floor, "wall_s"), _median(r.incremental, "wall_s"))
        fixed_in_run = statistics.median(s["start-up"] + s["dbt overhead"] for s in r.stages) + gx
        lines.append(f"{r.scale:>6} {r.people:>10,} {r.event_rows:>12,} {full:>10.1f} {floor:>8.1f} "
                     f"{full / floor:>6.1f} {(full - fixed_in_run) / floor:>11.1f} {inc:>7.1f} {inc / full:>6.0%} "
                     f"{_median(r.full, 'peak_rss_bytes') / 2**30:>8.2f} {_median(r.full, 'read_bytes') / 1e9:>8.2f}")
    for r in results:
        for what, rows in (("stages", r.stages), ("incremental night's stages", r.incremental_stages)):
            if rows:
                lines.append(f"{what} at {r.scale} (s): " + ", ".join(
                    f"{k} {statistics.median(s[k] for s in rows):.1f}" for k in rows[0]))
        if r.slowest_dbt_nodes:
            lines.append(f"slowest dbt nodes at {r.scale}, last full refresh (s): " + ", ".join(
                f"{k} {v:.1f}" for k, v in r.slowest_dbt_nodes[-1].items()))
        if r.floor_matches:
            lines.append(f"floor check at {r.scale}: {r.floor_matches[-1]}")
    return lines


def _machine() -> dict:
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {"cores": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1), "cpu": cpu,
            "python": sys.version.split()[0]}
