"""The bad-input cases of the fault suite: one PCN-based site per case, each broken in its own way.

A case plants its fault in the landing zone after month 2 (or, for re-deliveries, month 1 again)
was copied there, and says what the pipeline must do:

- `REJECTED`: the submission is withheld and quarantined byte for byte; the error report holds
  every `Expect` (file, row = line number with the header as line 1 or None for the whole file,
  column, and words of the message);
- `PUBLISHED`: the site publishes (a tolerated oddity: LSOA 2011 codes, Windows line endings, a
  volume anomaly, which is a warning, and re-deliveries of a month already published);
- `WAITING`: an incomplete submission (no manifest yet) is left alone in the landing zone.

Faults planted with the manifest rewritten to match (`resign`) pass the checksum gate, so the file
is parsed and the error is at row/column level; others leave the manifest deliberately stale.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REJECTED, PUBLISHED, WAITING = "rejected", "published", "waiting"
PERIOD_1, PERIOD_2 = "2026-09", "2026-10"
PERIOD_END_1, PERIOD_END_2 = "2026-09-30", "2026-10-31"
UNKNOWN_SITE = "not_a_site"  # a folder, with a manifest, for a site that is not in the registry


@dataclass(frozen=True)
class Expect:
    """One error the report must contain: exactly this file, row and column, and these words."""
    file: str
    row: int | None
    column: str | None
    words: str


@dataclass
class Plant:
    """Where a case plants its fault; `site` is the case's own site (code = case name)."""
    landing: Path   # the landing zone the pipeline reads
    source: Path    # the generated landing zone the months are copied from
    site: str
    other_site_practice: str  # a real practice of another site

    def folder(self, period: str = PERIOD_2, site: str | None = None) -> Path:
        return self.landing / "sites" / (site or self.site) / period


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    plant: Callable[[Plant], list[Expect]]
    outcome: str = REJECTED
    period: str = PERIOD_2          # the period the fault is in
    folder_site: str | None = None  # the site folder when it is not the case's own (unknown site)
    warning: str | None = None      # a warning check expected in data_quality (published cases)
    pipeline: bool = True           # in the end-to-end run (False: a variant checked at function level only)

    @property
    def site(self) -> str:
        return self.folder_site or self.name

    @property
    def period_end(self) -> str:
        return PERIOD_END_1 if self.period == PERIOD_1 else PERIOD_END_2


# --- file helpers -----------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_rows(path: Path) -> int:
    """Rows as a site's tool counts them: lines after the header, a last line without newline included."""
    data = path.read_bytes()
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return max(lines - 1, 0)


def resign(folder: Path) -> None:
    """Rewrite the manifest's rows and sha256 of every data file present, keeping it consistent."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in list(manifest["files"]):
        path = folder / name
        if path.exists():
            manifest["files"][name] = {"rows": data_rows(path), "sha256": sha256(path)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",", eol: str = "\n") -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator=eol)
        w.writerow(header)
        w.writerows(rows)


def set_value(folder: Path, kind: str, index: int, column: str, value: str, sign: bool = True) -> int:
    """Set one value on data row `index` (0-based); returns its line number (header = line 1)."""
    path = folder / f"{kind}.csv"
    header, rows = read(path)
    rows[index][header.index(column)] = value
    write(path, header, rows)
    if sign:
        resign(folder)
    return index + 2


def one_value(kind: str, index: int, column: str, value: str | Callable[[Plant], str],
              words: str) -> Callable[[Plant], list[Expect]]:
    """A case that sets one value in `kind`.csv (data row `index`, 0-based; `value` may depend on the
    Plant) and re-makes the manifest: the error is expected on that line and column, with `words`."""
    def plant(p: Plant) -> list[Expect]:
        line = set_value(p.folder(), kind, index, column, value(p) if callable(value) else value)
        return [Expect(f"{kind}.csv", line, column, words)]
    return plant


def add_column(folder: Path, kind: str, name: str, value: Callable[[int], str]) -> None:
    path = folder / f"{kind}.csv"
    header, rows = read(path)
    write(path, header + [name], [r + [value(i)] for i, r in enumerate(rows)])
    resign(folder)


def nhs_number(i: int) -> str:
    """A 10-digit number with a valid modulus-11 check digit, as NHS numbers have."""
    n = 0
    while True:
        base = f"{943476 + i:06d}{(i * 7919 + n) % 1000:03d}"
        total = sum(int(d) * (10 - k) for k, d in enumerate(base))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return base + str(check)
        n += 1


# --- the cases --------------------------------------------------------------------------------

def _missing_file(p: Plant) -> list[Expect]:
    (p.folder() / "events.csv").unlink()
    return [Expect("events.csv", None, None, "missing")]


def _empty_file(p: Plant) -> list[Expect]:
    (p.folder() / "events.csv").write_bytes(b"")
    resign(p.folder())
    return [Expect("events.csv", None, None, "empty")]


def _header_only(p: Plant) -> list[Expect]:
    path = p.folder() / "patients.csv"
    header, _ = read(path)
    write(path, header, [])
    resign(p.folder())
    return [Expect("patients.csv", None, None, "no data rows")]


def _truncated_last_line(p: Plant) -> list[Expect]:
    """The transfer stopped inside the last line; the site re-made the manifest from the cut file."""
    path = p.folder() / "patients.csv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    last = lines[-1].rstrip("\n").split(",")
    lines[-1] = ",".join(last[:3])  # person_id, practice_code, lsoa_code: no newline, six values missing
    path.write_text("".join(lines))
    resign(p.folder())
    return [Expect("patients.csv", len(lines), "sex", "cut short")]


def _truncated_in_transfer(p: Plant) -> list[Expect]:
    path = p.folder() / "events.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # manifest left as it was: the checksum catches it
    return [Expect("events.csv", None, None, "checksum")]


def _wrong_delimiter(p: Plant) -> list[Expect]:
    path = p.folder() / "patients.csv"
    header, rows = read(path)
    write(path, header, rows, delimiter=";")
    resign(p.folder())
    return [Expect("patients.csv", 1, None, "comma")]


def _non_utf8(p: Plant) -> list[Expect]:
    """A Windows-1252 export: one person_id carries the byte 0xE9 ('é' in Latin-1)."""
    path = p.folder() / "patients.csv"
    lines = path.read_bytes().split(b"\n")
    lines[7] = b"P\xe9" + lines[7][1:]
    path.write_bytes(b"\n".join(lines))
    resign(p.folder())
    return [Expect("patients.csv", 8, "person_id", "UTF-8")]


def _byte_order_mark(p: Plant) -> list[Expect]:
    path = p.folder() / "events.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    resign(p.folder())
    return [Expect("events.csv", 1, "person_id", "byte-order mark")]


def _renamed_column(p: Plant) -> list[Expect]:
    path = p.folder() / "patients.csv"
    header, rows = read(path)
    header[header.index("sex")] = "gender"
    write(path, header, rows)
    resign(p.folder())
    return [Expect("patients.csv", 1, "sex", "missing column"),
            Expect("patients.csv", 1, "gender", "unexpected column")]


def _missing_column(p: Plant) -> list[Expect]:
    path = p.folder() / "events.csv"
    header, rows = read(path)
    i = header.index("value")
    write(path, header[:i] + header[i + 1:], [r[:i] + r[i + 1:] for r in rows])
    resign(p.folder())
    return [Expect("events.csv", 1, "value", "missing column")]


def _extra_column(p: Plant) -> list[Expect]:
    add_column(p.folder(), "patients", "notes", lambda i: "ok")
    return [Expect("patients.csv", 1, "notes", "unexpected column")]


def _nhs_number_column(p: Plant) -> list[Expect]:
    add_column(p.folder(), "patients", "nhs_number", nhs_number)
    return [Expect("patients.csv", 1, "nhs_number", "personal identifier")]


def _postcode_column(p: Plant) -> list[Expect]:
    add_column(p.folder(), "patients", "postcode", lambda i: f"BB{i % 12 + 1} {i % 9 + 1}AB")
    return [Expect("patients.csv", 1, "postcode", "personal identifier")]


def _nhs_numbers_as_person_id(p: Plant) -> list[Expect]:
    """The site sent real NHS numbers in person_id (consistently in every file) instead of tokens."""
    folder = p.folder()
    header, rows = read(folder / "patients.csv")
    mapping = {r[0]: nhs_number(i) for i, r in enumerate(rows)}
    for path in folder.glob("*.csv"):
        header, rows = read(path)
        write(path, header, [[mapping.get(r[0], r[0])] + r[1:] for r in rows])
    resign(folder)
    return [Expect("patients.csv", 2, "person_id", "NHS number"), Expect("events.csv", 2, "person_id", "NHS number")]


def _lsoa_2011(p: Plant) -> list[Expect]:
    """Every LSOA that changed in 2021 is sent as its 2011 code: mapped to 2021, not rejected."""
    from tests.faults.support import lsoa21_to_2011
    folder = p.folder()
    path = folder / "patients.csv"
    header, rows = read(path)
    i = header.index("lsoa_code")
    old = lsoa21_to_2011()
    spare = iter(sorted(old.values()))
    changed = 0
    for r in rows:
        if r[i] in old:
            r[i], changed = old[r[i]], changed + 1
    for r in rows:  # too few people in LSOAs that changed in 2021: move some into such LSOAs
        if changed >= 10:
            break
        if r[i] and r[i] not in old.values():
            r[i], changed = next(spare), changed + 1
    write(path, header, rows)
    resign(folder)
    return []


def _duplicate_person(p: Plant) -> list[Expect]:
    path = p.folder() / "patients.csv"
    header, rows = read(path)
    rows.append(list(rows[5]))
    write(path, header, rows)
    resign(p.folder())
    return [Expect("patients.csv", 7, "person_id", "more than once"),
            Expect("patients.csv", len(rows) + 1, "person_id", "more than once")]


def _stray_quote(p: Plant) -> list[Expect]:
    """An unclosed double quote: everything after it would run into one value."""
    folder = p.folder()
    path = folder / "events.csv"
    lines = path.read_text().splitlines(keepends=True)
    cols = lines[14].split(",")
    cols[2] = '"' + cols[2]
    lines[14] = ",".join(cols)
    path.write_text("".join(lines))
    resign(folder)
    return [Expect("events.csv", 15, "code", "quote")]


def _row_count_mismatch(p: Plant) -> list[Expect]:
    folder = p.folder()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["events.csv"]["rows"] += 7
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return [Expect("events.csv", None, None, "the manifest says")]


def _checksum_mismatch(p: Plant) -> list[Expect]:
    set_value(p.folder(), "patients", 3, "ethnic_category", "99", sign=False)
    return [Expect("patients.csv", None, None, "checksum")]


def _unknown_site(p: Plant) -> list[Expect]:
    folder = p.folder(site=UNKNOWN_SITE)
    shutil.copytree(p.source / "sites" / "good_a" / PERIOD_2, folder)
    edit_manifest(folder, site_code=UNKNOWN_SITE)
    return [Expect("manifest.json", None, "site_code", "not a site in the registry")]


def _site_folder_mismatch(p: Plant) -> list[Expect]:
    edit_manifest(p.folder(), site_code="good_a")
    return [Expect("manifest.json", None, "site_code", "does not match the folder")]


def _period_end_not_month_end(p: Plant) -> list[Expect]:
    edit_manifest(p.folder(), period_end="2026-10-30")
    return [Expect("manifest.json", None, "period_end", "last day of the month")]


def _manifest_not_json(p: Plant) -> list[Expect]:
    path = p.folder() / "manifest.json"
    path.write_text(path.read_text()[:60])
    return [Expect("manifest.json", None, None, "not valid JSON")]


def _windows_line_endings(p: Plant) -> list[Expect]:
    """CRLF line endings (Excel on Windows): plain CSV, accepted."""
    folder = p.folder()
    for path in folder.glob("*.csv"):
        header, rows = read(path)
        write(path, header, rows, eol="\r\n")
    resign(folder)
    return []


def _volume_anomaly(p: Plant) -> list[Expect]:
    """Eleven copies of every event: more than ten times the usual volume is a warning only."""
    folder = p.folder()
    path = folder / "events.csv"
    header, rows = read(path)
    write(path, header, rows * 11)
    resign(folder)
    return []


def _redelivery_identical(p: Plant) -> list[Expect]:
    """Month 1 arrives again, byte for byte (the site's upload tool retried): skipped."""
    folder = p.folder(PERIOD_1)
    shutil.rmtree(folder)
    shutil.copytree(p.source / "sites" / p.site / PERIOD_1, folder)
    return []


def _redelivery_corrected(p: Plant) -> list[Expect]:
    """Month 1 again with a correction: the people of the site's first practice were registered at its
    second. Only the practice breakdown changes (site schema); national cells and every all-sites
    comparator stay as they were, so other cases' earlier publications still compare equal."""
    folder = p.folder(PERIOD_1)
    path = folder / "patients.csv"
    header, rows = read(path)
    i = header.index("practice_code")
    practices = sorted({r[i] for r in rows})
    assert len(practices) >= 2, "the corrected re-delivery needs a site with two practices"
    for r in rows:
        if r[i] == practices[0]:
            r[i] = practices[1]
    write(path, header, rows)
    resign(folder)
    edit_manifest(folder, created_at="2026-11-20T09:00:00Z")
    return []


def _redelivery_broken(p: Plant) -> list[Expect]:
    """Month 1 again, with a broken correction: quarantined, and month 1 stays as first published."""
    folder = p.folder(PERIOD_1)
    line = set_value(folder, "patients", 5, "sex", "X")
    edit_manifest(folder, created_at="2026-11-20T09:00:00Z")
    return [Expect("patients.csv", line, "sex", "must be one of M, F, I, U")]


def _no_manifest_yet(p: Plant) -> list[Expect]:
    (p.folder() / "manifest.json").unlink()
    return []


CASES: tuple[Case, ...] = (
    Case("missing_file", "events.csv is not in the folder", _missing_file),
    Case("empty_file", "events.csv is 0 bytes (manifest says 0 rows)", _empty_file),
    Case("header_only", "patients.csv has its header and no people", _header_only),
    Case("truncated_last_line", "last line of patients.csv cut short, manifest re-made", _truncated_last_line),
    Case("truncated_in_transfer", "events.csv cut in half after the manifest was written",
         _truncated_in_transfer, pipeline=False),
    Case("wrong_delimiter", "patients.csv separated by semicolons", _wrong_delimiter),
    Case("non_utf8", "a Latin-1 byte in patients.csv", _non_utf8),
    Case("byte_order_mark", "events.csv starts with a UTF-8 BOM", _byte_order_mark),
    Case("renamed_column", "sex renamed gender", _renamed_column),
    Case("missing_column", "events.csv without its value column", _missing_column),
    Case("extra_column", "patients.csv with an extra notes column", _extra_column),
    Case("nhs_number_column", "patients.csv with an nhs_number column", _nhs_number_column),
    Case("postcode_column", "patients.csv with a postcode column", _postcode_column, pipeline=False),
    Case("nhs_number_values", "NHS numbers sent as person_id", _nhs_numbers_as_person_id),
    Case("postcode_values", "a postcode sent as lsoa_code",
         one_value("patients", 9, "lsoa_code", "BB11 2DL", "postcode"), pipeline=False),
    Case("wrong_type", "text in the numeric events value",
         one_value("events", 10, "value", "high", "must be a number")),
    Case("wrong_date_format", "a DD/MM/YYYY date",
         one_value("patients", 3, "registration_start", "13/05/2001", "YYYY-MM-DD"), pipeline=False),
    Case("future_date", "an event dated 2031",
         one_value("events", 20, "event_date", "2031-01-15", "after the period end")),
    Case("date_before_1900", "a registration in 1899",
         one_value("patients", 5, "registration_start", "1899-12-31", "before 1900")),
    Case("impossible_age", "born 1905 (121 at the period end)",
         one_value("patients", 6, "birth_month", "1905-06", "age over 115")),
    Case("born_after_period_end", "born after the period end (a negative age)",
         one_value("patients", 7, "birth_month", "2027-03", "after the period end"), pipeline=False),
    Case("malformed_practice", "practice code P8100",
         one_value("patients", 2, "practice_code", "P8100", "ODS practice code")),
    Case("unknown_practice", "practice code Y99999 (no such practice)",
         one_value("patients", 9, "practice_code", "Y99999", "not a known GP practice")),
    Case("practice_of_another_site", "a real practice of another site",
         one_value("patients", 11, "practice_code",
                   lambda p: p.other_site_practice, "not one of this site's practices"), pipeline=False),
    Case("malformed_lsoa", "LSOA code E0101234", one_value("patients", 3, "lsoa_code", "E0101234", "LSOA code")),
    Case("unknown_lsoa", "LSOA code E01999999 (no such LSOA)",
         one_value("patients", 4, "lsoa_code", "E01999999", "not an English LSOA")),
    Case("lsoa_2011", "LSOA 2011 codes where 2021 is expected: mapped", _lsoa_2011, PUBLISHED),
    Case("duplicate_person", "one person twice in patients.csv", _duplicate_person),
    Case("unknown_person", "an event for a person not in patients.csv",
         one_value("events", 8, "person_id", "Pnobody00000001", "not in patients.csv")),
    Case("blank_required_value", "sex left blank", one_value("patients", 4, "sex", "", "blank"), pipeline=False),
    Case("stray_quote", "an unclosed double quote in events.csv", _stray_quote, pipeline=False),
    Case("row_count_mismatch", "manifest row count of events.csv off by 7", _row_count_mismatch),
    Case("checksum_mismatch", "patients.csv edited after the manifest was written", _checksum_mismatch),
    Case("unknown_site", "a manifest for a site not in the registry", _unknown_site, folder_site=UNKNOWN_SITE),
    Case("site_folder_mismatch", "manifest names another site than its folder",
         _site_folder_mismatch, pipeline=False),
    Case("period_not_month_end", "period_end 2026-10-30", _period_end_not_month_end),
    Case("manifest_not_json", "manifest.json cut short", _manifest_not_json, pipeline=False),
    Case("windows_line_endings", "CRLF line endings: accepted", _windows_line_endings, PUBLISHED, pipeline=False),
    Case("volume_anomaly", "eleven times the usual events: a warning", _volume_anomaly, PUBLISHED,
         warning="volume_anomaly"),
    Case("redelivery_identical", "month 1 delivered again, identical: skipped", _redelivery_identical, PUBLISHED,
         period=PERIOD_1),
    Case("redelivery_corrected", "month 1 delivered again, corrected: replaces", _redelivery_corrected, PUBLISHED,
         period=PERIOD_1),
    Case("redelivery_broken", "month 1 delivered again, broken: quarantined", _redelivery_broken, period=PERIOD_1),
    Case("no_manifest_yet", "month 2 files without a manifest: not complete, left alone", _no_manifest_yet,
         WAITING),
)
GOOD_SITES = ("good_a", "good_b")
PIPELINE_CASES = tuple(c for c in CASES if c.pipeline)
REGISTERED = tuple(c.name for c in PIPELINE_CASES if c.folder_site is None)  # sites of the end-to-end run
