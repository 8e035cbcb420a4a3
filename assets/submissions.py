"""Site submissions in the landing zone (SPEC §3): discover, verify the manifest, stage, quarantine.

A submission goes landing -> staged (`Staging`: a Parquet file of text per file kind) -> validated ->
loaded, when the view `raw.<kind>` shows its rows (ingest.py). Its rows are written once and never
copied: a submission is loaded by its status in `audit.submissions`. Nothing here touches the shared warehouse.
"""
from __future__ import annotations

import calendar
import csv
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pandera.polars as pa
import polars as pl

from checks.issues import ERROR, WARNING, Issue
from checks.schemas import (FILE_COLUMNS, FILE_KINDS, IDENTIFIER_PATTERNS, NOT_ECHOED_COLUMNS,
                            looks_like_identifier, schema_for)
from assets.staging import Staging, sql_text
from orchestration.settings import SITE_CODE_RE, Settings

SPEC_VERSIONS = {"1.0"}
MAX_FAILURES_REPORTED = 200  # per file; the count of all failures is reported as well


@dataclass(frozen=True)
class Submission:
    """One monthly submission folder `<landing>/sites/<site_code>/<YYYY-MM>/` with its manifest."""
    site_code: str
    period: str
    folder: Path
    manifest_sha: str

    @property
    def submission_id(self) -> str:
        return f"{self.site_code}/{self.period}/{self.manifest_sha[:12]}"

    @property
    def period_end(self) -> str:
        y, m = (int(x) for x in self.period.split("-"))
        return date(y, m, calendar.monthrange(y, m)[1]).isoformat()

    def manifest(self) -> dict:
        return json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))

    def data_file(self, kind: str) -> Path | None:
        for suffix in (".csv", ".parquet"):
            if (p := self.folder / f"{kind}{suffix}").exists():
                return p
        return None


def sha256_file(path: Path) -> str:
    return _read_once(path)[0]


def _read_once(path: Path) -> tuple[str, int]:
    """The file's sha256 and its newline-terminated line count (a last line without one counts too),
    in one read: the checksum and the row count each read every byte of every file."""
    h, lines, last = hashlib.sha256(), 0, b"\n"
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return h.hexdigest(), lines + (last != b"\n")


def discover(landing_dir: Path) -> list[Submission]:
    """Every complete submission (manifest present), in site and period order."""
    root = landing_dir / "sites"
    if not root.is_dir():
        return []
    return [Submission(m.parent.parent.name, m.parent.name, m.parent, sha256_file(m))
            for m in sorted(root.glob("*/*/manifest.json"))]


def _issue(sub: Submission, file: str, message: str, check: str, row: int | None = None,
           column: str | None = None, severity: str = ERROR) -> Issue:
    return Issue(sub.site_code, sub.period_end if _is_period(sub.period) else sub.period, file, row, column,
                 check, message, severity)


def _is_period(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m")
        return len(text) == 7
    except ValueError:
        return False


def verify_manifest(sub: Submission, settings: Settings) -> list[Issue]:
    """Manifest first: known site, a month-end period matching the folder, and every file present
    with the row count and checksum the manifest declares. Nothing is parsed until this passes."""
    try:
        manifest = sub.manifest()
    except json.JSONDecodeError as exc:
        return [_issue(sub, "manifest.json", f"is not valid JSON (at line {exc.lineno}, column {exc.colno}: "
                                             f"{exc.msg.lower().removesuffix(' at')}): write the manifest last, completely, once every data "
                                             "file is in place", "manifest_json")]
    except UnicodeDecodeError:
        return [_issue(sub, "manifest.json", "is not UTF-8 text: save it as plain UTF-8", "manifest_json")]
    if not isinstance(manifest, dict):
        return [_issue(sub, "manifest.json", "must be a JSON object with site_code, period_end, spec_version, "
                                             "created_at and files", "manifest_json")]
    problems = _manifest_fields(sub, manifest, settings)
    if problems:
        return problems
    files = manifest.get("files") or {}
    out: list[Issue] = []
    for kind in FILE_KINDS:
        out += _verify_file(sub, kind, files)
    return out


def _manifest_fields(sub: Submission, manifest: dict, settings: Settings) -> list[Issue]:
    m = "manifest.json"
    site = manifest.get("site_code")
    if not SITE_CODE_RE.match(str(site)) or settings.site(str(site)) is None:
        return [_issue(sub, m, f"site_code {site!r} is not a site in the registry ({settings.sites_file.name})",
                       "unknown_site", column="site_code")]
    if site != sub.site_code:
        return [_issue(sub, m, f"site_code {site!r} does not match the folder sites/{sub.site_code}/",
                       "site_folder_mismatch", column="site_code")]
    if manifest.get("spec_version") not in SPEC_VERSIONS:
        return [_issue(sub, m, f"spec_version {manifest.get('spec_version')!r} is not supported "
                               f"(expected one of {sorted(SPEC_VERSIONS)})", "spec_version", column="spec_version")]
    period_end = str(manifest.get("period_end"))
    if not _is_period(sub.period) or period_end != sub.period_end:
        return [_issue(sub, m, f"period_end {period_end!r} must be the last day of the month of the folder "
                               f"{sub.period} (expected {sub.period_end if _is_period(sub.period) else 'a YYYY-MM folder'})",
                       "period_end", column="period_end")]
    return []


def _verify_file(sub: Submission, kind: str, files: dict) -> list[Issue]:
    path = sub.data_file(kind)
    name = path.name if path else f"{kind}.csv"
    entry = files.get(name) or files.get(f"{kind}.csv") or files.get(f"{kind}.parquet")
    if path is None:
        return [_issue(sub, name, "is missing from the submission folder", "missing_file")]
    if entry is None:
        return [_issue(sub, "manifest.json", f"does not list {name}", "manifest_files", column="files")]
    digest, lines = _read_once(path)
    if digest != entry.get("sha256"):
        return [_issue(sub, name, "checksum does not match the manifest's sha256: the file changed or was "
                                  "truncated after the manifest was written", "checksum")]
    rows = _parquet_rows(path) if path.suffix == ".parquet" else max(lines - 1, 0)  # less the header
    if rows != entry.get("rows"):
        return [_issue(sub, name, f"has {rows} data rows but the manifest says {entry.get('rows')}", "row_count")]
    return []


def _parquet_rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def check_header(sub: Submission, kind: str) -> list[Issue]:
    """Exact column set, UTF-8 without a byte-order mark, comma-delimited; identifier-like columns refused."""
    path = sub.data_file(kind)
    assert path is not None
    if path.suffix == ".parquet":
        header = list(pl.read_parquet_schema(path))
    else:
        with path.open("rb") as f:
            first = f.readline()
        if not first:
            return [_issue(sub, path.name, "is empty (0 bytes): even a file with no records needs its header "
                                           f"row ({', '.join(FILE_COLUMNS[kind])})", "empty_file")]
        if first.startswith(b"\xef\xbb\xbf"):
            return [_issue(sub, path.name, "starts with a UTF-8 byte-order mark (BOM) before its first column name: "
                                           "save it as plain UTF-8 without a BOM",
                           "byte_order_mark", row=1, column=_first_name(first[3:]))]
        try:
            header = next(csv.reader([first.decode("utf-8").rstrip("\r\n")]), [])
        except UnicodeDecodeError:
            return [_issue(sub, path.name, "header row is not UTF-8 text: save the file as UTF-8", "encoding", row=1)]
    return _header_issues(sub, path.name, kind, header)


def _header_issues(sub: Submission, file: str, kind: str, header: list[str]) -> list[Issue]:
    expected = FILE_COLUMNS[kind]
    out = []
    for col in header:
        if any(p in col.lower() for p in IDENTIFIER_PATTERNS):
            out.append(_issue(sub, file, f"column {col!r} looks like a personal identifier: submissions must be "
                                         "pseudonymised (no NHS numbers, names, dates of birth or postcodes)",
                              "identifier_column", row=1, column=col))
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected and not any(i.column == c for i in out)]
    if len(header) == 1 and len(expected) > 1 and (";" in header[0] or "\t" in header[0] or "|" in header[0]):
        return out + [_issue(sub, file, "is not comma-separated (found one column containing ';', tab or '|'); "
                                        "use commas between columns", "delimiter", row=1)]
    if missing:
        out.append(_issue(sub, file, f"is missing column(s) {', '.join(missing)}; expected exactly "
                                     f"{', '.join(expected)}", "missing_column", row=1, column=missing[0]))
    if extra:
        out.append(_issue(sub, file, f"has unexpected column(s) {', '.join(extra)}; expected exactly "
                                     f"{', '.join(expected)}", "unexpected_column", row=1, column=extra[0]))
    if len(set(header)) != len(header):
        out.append(_issue(sub, file, "has a repeated column name", "duplicate_column", row=1))
    return out


def load_pending(con: duckdb.DuckDBPyConnection, staging: Staging, sub: Submission, kind: str) -> list[Issue]:
    """Stage one file as text (so a bad value can be reported, not silently cast) in its Parquet file,
    replacing any earlier attempt's. Written under a temporary name and renamed, so a file that is
    there is whole."""
    path = sub.data_file(kind)
    assert path is not None
    target = staging.path(sub.submission_id, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    casts = ", ".join(f'cast("{c}" as varchar) as "{c}"' for c in FILE_COLUMNS[kind])
    source = (f"read_parquet({sql_text(str(path))})" if path.suffix == ".parquet" else
              f"read_csv({sql_text(str(path))}, header=true, all_varchar=true, delim=',', quote='\"', escape='\"', "
              f"strict_mode=true, null_padding=false, encoding='utf-8', auto_detect=false, "
              f"columns={{{', '.join(repr(c) + ': ' + repr('VARCHAR') for c in _file_header(path))}}})")
    try:
        # the file's row order is kept (preserve_insertion_order, DuckDB's default): _line depends on it
        con.execute(f"""copy (select {sql_text(sub.submission_id)} as submission_id, {sql_text(sub.site_code)} as
                              site_code, cast({sql_text(sub.period_end)} as date) as period_end, {casts} from {source})
                        to {sql_text(str(partial))} (format parquet, compression zstd)""")
    except duckdb.Error as exc:
        partial.unlink(missing_ok=True)
        found = locate_csv_problem(path) if path.suffix == ".csv" else None
        if found:
            row, column, message, check = found
            return [_issue(sub, path.name, message, check, row=row, column=column)]
        return [_issue(sub, path.name, f"could not be read: {_duckdb_problem(exc)}", "csv_parse",
                       row=_line_from_error(str(exc)))]
    partial.replace(target)
    return []


def _file_header(path: Path) -> list[str]:
    """The header row only: decoding the whole first buffer would trip over a bad byte further down,
    which the load must report with its line instead."""
    with path.open("rb") as f:
        first = f.readline()
    return next(csv.reader([first.decode("utf-8").rstrip("\r\n")]), [])


def _first_name(line: bytes) -> str | None:
    try:
        return next(csv.reader([line.decode("utf-8").rstrip("\r\n")]), [None])[0] or None
    except UnicodeDecodeError:
        return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]


def _duckdb_problem(exc: Exception) -> str:
    """The line of a DuckDB CSV error that says what is wrong (not its advice on parser options)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines[1:]:
        if not line.startswith(("Original Line", "Possible", "*", "file =")) and "=" not in line:
            return line[:300]
    return _first_line(exc)


def locate_csv_problem(path: Path) -> tuple[int, str | None, str, str] | None:
    """Find the first line a CSV reader cannot take, as (line, column, message, check), reading it
    the way DuckDB does (RFC 4180 quotes, UTF-8): bytes that are not UTF-8, a quote that is never
    closed, or a line with more or fewer values than the header. Only runs when loading failed."""
    state = {"line": 0, "bad": None}

    def lines():
        with path.open("rb") as f:
            for raw in f:
                state["line"] += 1
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    state["bad"] = (state["line"], raw, exc.start)
                    return

    reader = csv.reader(lines(), strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for record in reader:
            if header is None:
                header, start = record, state["line"] + 1
                continue
            if record and len(record) != len(header):
                return _wrong_width(start, header, record)
            start = state["line"] + 1
    except csv.Error:
        if state["bad"] is None:
            with path.open("rb") as f:
                text = next((raw for i, raw in enumerate(f, 1) if i == start), b"").decode("utf-8", "replace")
            field = _field_with_open_quote(text)
            column = header[field] if header and field is not None and field < len(header) else None
            return (start, column, 'has a double quote (") that opens a value and is never closed, so the rest of '
                                   "the file would run into that one value: remove the stray quote, or close it",
                    "csv_parse")
    if state["bad"] is not None:
        line, raw, offset = state["bad"]
        field = raw[:offset].count(b",")
        column = header[field] if header and field < len(header) else None
        return (line, column, f"is not UTF-8 text (byte 0x{raw[offset]:02X} here, which looks like a Windows-1252 or "
                              "Latin-1 export): save the file as UTF-8", "encoding")
    return None


def _wrong_width(line: int, header: list[str], record: list[str]) -> tuple[int, str | None, str, str]:
    if len(record) < len(header):
        return (line, header[len(record)],
                f"has {len(record)} of the {len(header)} values of the header (it ends after "
                f"{header[len(record) - 1]}): the line looks cut short, or values are missing", "csv_parse")
    return (line, None, f"has {len(record)} values but the header has {len(header)} columns: a value with a comma "
                        "in it must be in double quotes", "csv_parse")


def _field_with_open_quote(line: str) -> int | None:
    """Index of the field in which a quote opens and the line ends before it closes."""
    field, quoted, i = 0, False, 0
    while i < len(line):
        ch = line[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(line) and line[i + 1] == '"':
                    i += 1
                else:
                    quoted = False
        elif ch == '"':
            quoted = True
            opened = field
        elif ch == ",":
            field += 1
        i += 1
    return opened if quoted else None


def _line_from_error(text: str) -> int | None:
    import re
    m = re.search(r"[Ll]ine:? (\d+)", text)
    return int(m.group(1)) if m else None


@dataclass
class _Findings:
    """One submission's schema failures so far: the first MAX_FAILURES_REPORTED, and how many in all."""
    sub: Submission
    issues: list[Issue] = field(default_factory=list)
    failures: int = 0

    def add(self, file: str, cases: pl.DataFrame) -> None:
        """This submission's failure cases (column, check, failure_case, _line), in pandera's order."""
        self.failures += cases.height
        for case in cases.head(max(0, MAX_FAILURES_REPORTED - len(self.issues))).iter_rows(named=True):
            self.issues.append(_issue(self.sub, file, schema_message(case["column"], case["failure_case"],
                                                                     case["check"]), "schema", row=case["_line"],
                                      column=case["column"]))

    def result(self, file: str) -> list[Issue]:
        if self.failures > len(self.issues):
            return [*self.issues, _issue(self.sub, file, f"{self.failures} values failed validation in all; the "
                                                         f"first {len(self.issues)} are listed", "schema_summary")]
        return self.issues


def validate_pending_many(staging: Staging, subs: list[Submission], kind: str,
                          batch_rows: int = 1_000_000) -> dict[str, list[Issue]]:
    """pandera, lazily (every failure, not the first), over the staged text of every submission in `subs`,
    in bounded batches. A schema depends on the period only (no date after the period end), so each batch
    holds one period's submissions and is validated in one pandera call, not one per submission (a call
    costs ~30 ms however few its rows)."""
    findings = {s.submission_id: _Findings(s) for s in subs}
    file_names = {s.submission_id: s.data_file(kind).name for s in subs}  # type: ignore[union-attr]
    by_period: dict[str, list[str]] = {}
    for s in subs:
        by_period.setdefault(s.period_end, []).append(s.submission_id)
    for period, ids in by_period.items():
        schema = schema_for(kind, date.fromisoformat(period))
        for part in _batches(staging, kind, ids, batch_rows):
            for sid, cases in _failure_cases(schema, part).items():
                findings[sid].add(file_names[sid], cases)
    return {i: f.result(file_names[i]) for i, f in findings.items()}


def _batches(staging: Staging, kind: str, ids: list[str], batch_rows: int) -> Iterator[pl.DataFrame]:
    """The staged rows of submissions `ids`, with submission_id and `_line` (the line in the file), in
    frames of `batch_rows` rows but the last: a file is read in slices, so memory stays bounded however
    large it is. polars reads the files itself: 26 M event rows in 0.8 s, where DuckDB's Arrow export
    of the same took 4.3 s (docs/performance.md, session 10)."""
    pending: list[pl.DataFrame] = []
    rows = 0
    for sid in ids:
        scan = (pl.scan_parquet(staging.path(sid, kind)).select("submission_id", *FILE_COLUMNS[kind])
                .with_row_index("_line", offset=2))
        total, start = scan.select(pl.len()).collect().item(), 0
        while True:
            piece = scan.slice(start, batch_rows - rows).collect()
            pending.append(piece)
            rows, start = rows + piece.height, start + piece.height
            if rows >= batch_rows:
                yield pl.concat(pending)
                pending, rows = [], 0
            if start >= total:
                break
    if pending:
        yield pl.concat(pending)


def _failure_cases(schema: pa.DataFrameSchema, part: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """pandera's failure cases of `part` (rows of several submissions of one period), per submission, each
    with its line and in the order pandera gives one submission's own: by check, then by line."""
    try:
        schema.validate(part.drop("submission_id", "_line"), lazy=True)
        return {}
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.with_row_index("_case")
    rows = part.select("submission_id", "_line").with_row_index("_row")
    located = cases.join(rows, left_on=pl.col("index").cast(pl.UInt32), right_on="_row", how="left")
    check = pl.col("_case").min().over("column", "check")  # where pandera listed the check first
    out = {}
    for sid in part["submission_id"].unique(maintain_order=True):
        # a case without a row (a whole column's) is every submission's in the part
        mine = located.filter((pl.col("submission_id") == sid) | pl.col("index").is_null())
        if mine.height:
            out[sid] = mine.sort(check, "_line", "_case", nulls_last=False)
    return out


def schema_message(column: str | None, value: object, check: str) -> str:
    """A pandera failure in the site analyst's words. Values that could identify a person (person ids,
    dates of birth and death, anything shaped like an NHS number or a postcode) are not repeated: the
    message is published in `data_quality`; the row and column say where to look."""
    if check == "not_nullable":
        return "is blank, but a value is required here"
    if check.startswith(("dtype(", "column_in_", "column '")):
        return f"could not be checked as text ({check}); please send the file as plain CSV"
    return f"{shown_value(column, value)} {check}"


def shown_value(column: str | None, value: object) -> str:
    if value is None:
        return "a blank value"
    text = str(value)
    if column in NOT_ECHOED_COLUMNS or looks_like_identifier(text):
        return "the value (not repeated here: it could identify a person)"
    return f"value {text!r}"


def quarantine(sub: Submission, issues: list[Issue], settings: Settings, now: datetime | None = None) -> Path:
    """Move the submission, byte for byte, to the quarantine beside a machine-readable error report."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    target = settings.quarantine_dir / sub.site_code / f"{sub.period}__{stamp}"
    target.mkdir(parents=True, exist_ok=False)
    shutil.move(str(sub.folder), str(target / "submission"))
    report = {"site_code": sub.site_code, "period": sub.period, "submission_id": sub.submission_id,
              "quarantined_at": stamp, "errors": [i.as_dict() for i in issues if i.severity == ERROR],
              "warnings": [i.as_dict() for i in issues if i.severity == WARNING]}
    (target / "errors.json").write_text(json.dumps(report, indent=2) + "\n")
    return target
