"""`c20p5`: generate a synthetic landing zone, run the nightly job through Dagster, backfill a range
of months, show each site's status.

Exit codes a scheduler can act on: 0 published (or nothing new), 3 completed but one or more
site-periods were withheld, 1 the run failed (or the build database stayed busy), 2 bad settings
or arguments.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WITHHELD = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from orchestration.settings import SettingsError
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"c20p5: {exc}", file=sys.stderr)
        return EXIT_USAGE


EPILOG = """\
exit codes (for a scheduler): 0 published, or nothing new to publish; 3 completed, but one or more
site-periods were withheld (see the lines starting "withheld"); 1 the run failed (it says whether a
publication was written before the failure, e.g. when only the reports failed, or the last one is
unchanged); 2 bad settings or arguments.

settings (environment): C20P5_LANDING_DIR (default data/landing), C20P5_WAREHOUSE_URL (a DuckDB
file, default data/warehouse/evaluation.duckdb, or postgresql://...), C20P5_WORK_DIR (default
data/work), C20P5_IMD_VINTAGE (2025 or 2019), C20P5_SITES_FILE (default: the shipped sites.yaml),
C20P5_LOG_LEVEL (console log of a run, default WARNING; the Dagster run history keeps every level),
C20P5_LOCK_TIMEOUT_SECONDS (how long a step waits for a build database another process holds, 300),
C20P5_RETENTION_PUBLICATIONS (0 keeps every publication), C20P5_ALERT_WEBHOOK (failure notices).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="c20p5", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Core20PLUS5 evaluation pipeline: ingest site extracts, build and "
                                            "check the marts, publish disclosure-controlled indicators.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, details: str, func) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=summary, description=f"{summary}.\n\n{textwrap.fill(details, 100)}", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func)
        return c

    _generate_args(command("generate", "write a synthetic landing zone (deterministic by seed)",
                           "One monthly submission per site of the registry and period, real geography, planted "
                           "gradients by IMD quintile; the person-level truth goes beside the landing zone "
                           "(<landing>/../generator_truth). Prints a line per site as it goes.", cmd_generate))
    r = command("run", "run the nightly job through Dagster: ingest, build, check, publish",
                "Ingests every complete submission not loaded yet (manifest and checksums first, then pandera and "
                "SQL rules; a bad submission is quarantined and its site-period withheld), builds the dbt marts "
                "(only the periods from the earliest that changed since the last good build, unless the dbt "
                "project or reference data changed), runs the Great Expectations checks and publishes what "
                "passed. Prints a line as each step starts and ends, then a summary.", cmd_run)
    r.add_argument("--full-refresh", action="store_true",
                   help="rebuild every period of every dbt model (as after a change to the dbt project)")
    demo = command("demo", "generate, then run, on the embedded DuckDB warehouse",
                   "`c20p5 generate` then `c20p5 run` with the same settings.", cmd_demo)
    _generate_args(demo)
    demo.set_defaults(full_refresh=False)  # what cmd_run reads: a demo's first run builds everything anyway
    b = command("backfill", "rebuild and republish a range of months for one site or every site",
                "One run, in this process (or queued for dagster-daemon with --submit).", cmd_backfill)
    b.add_argument("--from", dest="first", required=True, help="first month, YYYY-MM")
    b.add_argument("--to", dest="last", required=True, help="last month, YYYY-MM (may equal --from)")
    b.add_argument("--site", help="one site_code (default: every site in the registry)")
    b.add_argument("--submit", action="store_true",
                   help="queue it as a Dagster backfill for dagster-daemon instead (as the UI does)")
    command("status", "each site's last received, last published and quarantined periods",
            "Reads the build database (waiting up to 30 s if a run holds it) and the warehouse.", cmd_status)
    _bench_args(command("bench", "benchmark the nightly job against a hand-written DuckDB floor",
                        "Per scale: generates a landing zone (26 sites, 13 months), runs the nightly job as "
                        "`c20p5 run` would, then the floor (benchmarks/floor.sql) on the same files, and prints "
                        "wall time per stage, peak memory, bytes read and the pipeline / floor ratio. "
                        "See docs/performance.md.", cmd_bench))
    return p


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--people", type=int, default=5000, help="people per site (default 5000)")
    p.add_argument("--months", type=int, default=3, help="monthly periods per site (default 3)")
    p.add_argument("--last-period", type=date.fromisoformat, default=date(2026, 10, 31),
                   help="last period_end, a month end (default 2026-10-31)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", default="100k,1m,5m",
                   help="comma-separated total people, e.g. 100k,1m,5m (default); 26 sites share them")
    p.add_argument("--repeats", type=int, default=3, help="runs per scale; medians are reported (default 3)")
    p.add_argument("--months", type=int, default=13, help="monthly periods per site (default 13)")
    p.add_argument("--sites", type=int, default=26, help="sites (default 26: 11 ICS-wide, 15 PCN-based)")
    p.add_argument("--dir", type=Path, default=Path("data/bench"),
                   help="where the landing zones and results go (default data/bench)")
    p.add_argument("--keep", action="store_true", help="keep each scale's landing zone afterwards")


def _say(text: str) -> None:
    print(text, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    from assets.generator import generate_landing
    from orchestration.settings import load_settings
    settings = load_settings()
    started = time.monotonic()
    _say(f"generating {len(settings.sites)} sites x {args.months} months x {args.people:,} people "
         f"into {settings.landing_dir} ...")
    result = generate_landing(settings, people_per_site=args.people, months=args.months,
                              last_period=args.last_period, seed=args.seed, progress=lambda t: _say(f"  {t}"))
    _say(f"wrote {len(result.periods) * len(result.people)} submissions "
         f"({result.periods[0]} .. {result.periods[-1]}) in {time.monotonic() - started:.0f} s; "
         f"planted truth in {result.truth_dir}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from orchestration.runner import run_nightly
    return _report(run_nightly(progress=sys.stdout, full_refresh=args.full_refresh))


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.bench import parse_scales, run_benchmark
    try:
        scales = parse_scales(args.scales)
    except ValueError as exc:
        print(f"c20p5 bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ok = run_benchmark(scales, repeats=args.repeats, months=args.months, n_sites=args.sites,
                       root=args.dir.resolve(), keep=args.keep, say=_say)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_backfill(args: argparse.Namespace) -> int:
    from orchestration.runner import run_backfill, submit_backfill
    if args.submit:
        backfill_id = submit_backfill(args.first, args.last, args.site)
        print(f"backfill {backfill_id} queued ({args.first}..{args.last}, {args.site or 'all sites'}); "
              "dagster-daemon runs it: follow it under Overview > Backfills in the UI")
        return EXIT_OK
    return _report(run_backfill(args.first, args.last, args.site, progress=sys.stdout))


def _report(outcome) -> int:
    print(outcome.describe(), flush=True)
    if not outcome.success:
        return EXIT_FAILED
    return EXIT_WITHHELD if outcome.withheld else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    cmd_generate(args)
    return cmd_run(args)


def cmd_status(args: argparse.Namespace) -> int:
    from orchestration.resources import BuildDatabaseLocked
    from orchestration.runner import site_status
    try:
        lines = site_status()
    except BuildDatabaseLocked as exc:
        print(f"c20p5: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

