"""`c20p5`: generate a synthetic landing zone, run the nightly job through Dagster, backfill a range
of months, show each site's status.

Exit codes a scheduler can act on: 0 published (or nothing new), 3 completed but one or more
site-periods were withheld, 1 the run failed (or the build database stayed busy), 2 bad settings
or arguments.
"""
from __future__ import annotations

import argparse
import sys
from datetime import date

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="c20p5", description=(
        "Core20PLUS5 evaluation pipeline. Settings come from the environment: C20P5_LANDING_DIR, "
        "C20P5_WAREHOUSE_URL, C20P5_WORK_DIR, C20P5_IMD_VINTAGE, C20P5_SITES_FILE."))
    sub = p.add_subparsers(dest="command")
    g = sub.add_parser("generate", help="write a synthetic landing zone (deterministic by seed)")
    _generate_args(g)
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("run", help="run the nightly job through Dagster: ingest, build, check, publish")
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="generate, then run, on the embedded DuckDB warehouse")
    _generate_args(d)
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("backfill", help="rebuild and republish a range of months for one site or every site "
                                         "(one run, in this process)")
    b.add_argument("--from", dest="first", required=True, help="first month, YYYY-MM")
    b.add_argument("--to", dest="last", required=True, help="last month, YYYY-MM (may equal --from)")
    b.add_argument("--site", help="one site_code (default: every site in the registry)")
    b.add_argument("--submit", action="store_true",
                   help="queue it as a Dagster backfill for dagster-daemon instead (as the UI does)")
    b.set_defaults(func=cmd_backfill)
    s = sub.add_parser("status", help="each site's last received, last published and quarantined periods")
    s.set_defaults(func=cmd_status)
    return p


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--people", type=int, default=5000, help="people per site (default 5000)")
    p.add_argument("--months", type=int, default=3, help="monthly periods per site (default 3)")
    p.add_argument("--last-period", type=date.fromisoformat, default=date(2026, 10, 31),
                   help="last period_end, a month end (default 2026-10-31)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")


def cmd_generate(args: argparse.Namespace) -> int:
    from assets.generator import generate_landing
    from orchestration.settings import load_settings
    settings = load_settings()
    print(f"generating {len(settings.sites)} sites x {args.months} months x {args.people} people "
          f"into {settings.landing_dir} ...", flush=True)
    result = generate_landing(settings, people_per_site=args.people, months=args.months,
                              last_period=args.last_period, seed=args.seed)
    print(f"wrote {len(result.periods) * len(result.people)} submissions "
          f"({', '.join(str(p) for p in result.periods)}); planted truth in {result.truth_dir}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from orchestration.runner import run_nightly
    return _report(run_nightly())


def cmd_backfill(args: argparse.Namespace) -> int:
    from orchestration.runner import run_backfill, submit_backfill
    if args.submit:
        backfill_id = submit_backfill(args.first, args.last, args.site)
        print(f"backfill {backfill_id} queued ({args.first}..{args.last}, {args.site or 'all sites'}); "
              "dagster-daemon runs it: follow it under Overview > Backfills in the UI")
        return EXIT_OK
    return _report(run_backfill(args.first, args.last, args.site))


def _report(outcome) -> int:
    print(outcome.describe())
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

