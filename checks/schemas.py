"""pandera schemas for the six extract files of SPEC §3, one per file kind.

Files are loaded as text first (so a bad value can be reported, not silently cast) and
validated batch by batch as polars frames, which keeps memory flat for very large files.
Checks that need other tables (known practices and LSOAs, people present in `patients`,
duplicate ids across the whole file) run in SQL inside DuckDB, in `checks/rules.py`.
"""
from __future__ import annotations

from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

FILE_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("person_id", "practice_code", "lsoa_code", "sex", "birth_month", "ethnic_category",
                 "registration_start", "registration_end", "date_of_death"),
    "events": ("person_id", "event_date", "code", "value"),
    "cancer_registrations": ("person_id", "diagnosis_date", "icd10", "stage"),
    "maternity_bookings": ("person_id", "booking_date", "continuity_of_carer"),
    "hospital_admissions": ("person_id", "admission_date", "primary_diagnosis", "external_cause", "main_procedure"),
    "mh_contacts": ("person_id", "contact_date", "service"),
}
FILE_KINDS = tuple(FILE_COLUMNS)

ETHNIC_CATEGORIES = [*"ABCDEFGHJKLMNPRS", "Z", "99"]
EARLIEST = date(1900, 1, 1)
# Identifier-like column names refused at the door: submissions must be pseudonymised.
IDENTIFIER_PATTERNS = ("nhs", "postcode", "post_code", "date_of_birth", "dob", "name", "address")
# Columns whose values error messages never repeat (messages are published in `data_quality`).
NOT_ECHOED_COLUMNS = frozenset({"person_id", "birth_month", "date_of_death"})
# A UK postcode (e.g. BB11 2DL, M1 1AE), with or without its space.
POSTCODE = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$"

PSEUDONYM = r"^[A-Za-z0-9_\-]{4,64}$"
PRACTICE = r"^[A-Z][0-9]{5}$"
LSOA = r"^[EW]0[0-9]{7}$"
ICD10 = r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,2})?$"
OPCS4 = r"^[A-Z][0-9]{2}(\.?[0-9]{1,2})?$"
SNOMED = r"^[1-9][0-9]{5,17}$"


def _parsed(col: pl.Expr, fmt: str) -> pl.Expr:
    """The date a value means, or null when it is not a real date written exactly as `fmt`."""
    text = (col + "-01") if fmt == "%Y-%m" else col
    parsed = text.str.to_date("%Y-%m-%d", strict=False)
    return pl.when(col.str.len_chars() == len(date(2000, 1, 1).strftime(fmt))).then(parsed)


def _date_shape(fmt: str):
    """A check: blank, or a real date written as `fmt`."""
    def check(data: PolarsData) -> pl.LazyFrame:
        col = pl.col(data.key)
        return data.lazyframe.select(col.is_null() | _parsed(col, fmt).is_not_null())
    return check


def _date_within(fmt: str, earliest: date | None = None, latest: date | None = None):
    """A check: a real date (the shape is checked on its own) not before `earliest` / after `latest`."""
    def check(data: PolarsData) -> pl.LazyFrame:
        parsed = _parsed(pl.col(data.key), fmt)
        ok = (parsed >= earliest) if earliest else (parsed <= latest)
        return data.lazyframe.select(parsed.is_null() | ok)
    return check


def _is_number(data: PolarsData) -> pl.LazyFrame:
    col = pl.col(data.key)
    # fill_null: text that does not parse casts to null, and `False | null` is null, which pandera passes.
    return data.lazyframe.select(col.is_null() | col.cast(pl.Float64, strict=False).is_finite().fill_null(False))


def _not_postcode(data: PolarsData) -> pl.LazyFrame:
    col = pl.col(data.key)
    return data.lazyframe.select(col.is_null() | ~col.str.contains(POSTCODE))


def _matches_or_postcode(pattern: str):
    """The format check of a column that also has `_not_postcode`: a postcode is reported once, by that."""
    def check(data: PolarsData) -> pl.LazyFrame:
        col = pl.col(data.key)
        return data.lazyframe.select(col.is_null() | col.str.contains(pattern) | col.str.contains(POSTCODE))
    return check


def nhs_number_valid(text: str) -> bool:
    """10 digits (spaces allowed as 3-3-4) whose last is the modulus-11 check digit of the first nine."""
    digits = text.replace(" ", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits[:9])) % 11
    return (0 if check == 11 else check) == int(digits[9])


def looks_like_identifier(text: str) -> bool:
    """A value shaped like an NHS number or a postcode (used to keep it out of published messages)."""
    import re
    return nhs_number_valid(text) or re.match(POSTCODE, text.strip()) is not None


def _date(column: str, period_end: date, nullable: bool = False, fmt: str = "%Y-%m-%d") -> pa.Column:
    """Three checks, so the message says which is wrong: the shape, before 1900, after the period end."""
    shape = "YYYY-MM" if fmt == "%Y-%m" else "YYYY-MM-DD"
    return pa.Column(pl.Utf8, nullable=nullable, checks=[
        pa.Check(_date_shape(fmt), name=f"{column}_date", error=f"is not a real date written {shape}"),
        pa.Check(_date_within(fmt, earliest=EARLIEST), name=f"{column}_not_before_1900",
                 error="is before 1900: check the year"),
        pa.Check(_date_within(fmt, latest=period_end), name=f"{column}_not_after_period_end",
                 error=f"is after the period end {period_end}: a submission holds nothing dated later than "
                       "its period end"),
    ])


def _text(pattern: str, what: str, nullable: bool = False) -> pa.Column:
    return pa.Column(pl.Utf8, nullable=nullable, checks=pa.Check.str_matches(pattern, error=f"must be {what}"))


def _one_of(values: list[str], nullable: bool = False) -> pa.Column:
    return pa.Column(pl.Utf8, nullable=nullable, checks=pa.Check.isin(values, error=f"must be one of {', '.join(values)}"))


def schema_for(kind: str, period_end: date) -> pa.DataFrameSchema:
    """The pandera schema of one file kind; dates may not be after the submission's period end."""
    person = _text(PSEUDONYM, "an opaque pseudonymised token (4-64 letters, digits, - or _)")
    columns: dict[str, pa.Column] = {
        "patients": lambda: {
            "person_id": person,
            "practice_code": _text(PRACTICE, "an ODS practice code: one capital letter and five digits, e.g. P81008"),
            "lsoa_code": pa.Column(pl.Utf8, nullable=True, checks=[
                pa.Check(_matches_or_postcode(LSOA), name="lsoa_code_format",
                         error="must be an LSOA code such as E01012345 (2021 or 2011), or blank"),
                pa.Check(_not_postcode, name="not_a_postcode",
                         error="looks like a postcode: send the LSOA code (such as E01012345) of the area where the "
                               "person lives, never a postcode")]),
            "sex": _one_of(["M", "F", "I", "U"]),
            "birth_month": _date("birth_month", period_end, fmt="%Y-%m"),
            "ethnic_category": _one_of(ETHNIC_CATEGORIES),
            "registration_start": _date("registration_start", period_end),
            "registration_end": _date("registration_end", period_end, nullable=True),
            "date_of_death": _date("date_of_death", period_end, nullable=True),
        },
        "events": lambda: {
            "person_id": person, "event_date": _date("event_date", period_end),
            "code": _text(SNOMED, "a SNOMED CT concept id (6-18 digits)"),
            "value": pa.Column(pl.Utf8, nullable=True, checks=pa.Check(_is_number, name="numeric", error="must be a number or blank")),
        },
        "cancer_registrations": lambda: {
            "person_id": person, "diagnosis_date": _date("diagnosis_date", period_end),
            "icd10": _text(ICD10, "an ICD-10 code such as C18.7"),
            "stage": _one_of(["1", "2", "3", "4", "X"]),
        },
        "maternity_bookings": lambda: {
            "person_id": person, "booking_date": _date("booking_date", period_end),
            "continuity_of_carer": _one_of(["Y", "N"]),
        },
        "hospital_admissions": lambda: {
            "person_id": person, "admission_date": _date("admission_date", period_end),
            "primary_diagnosis": _text(ICD10, "an ICD-10 code such as K02.1"),
            "external_cause": _text(ICD10, "an ICD-10 code such as X99.9, or blank", nullable=True),
            "main_procedure": _text(OPCS4, "an OPCS-4 code such as F09.1, or blank", nullable=True),
        },
        "mh_contacts": lambda: {
            "person_id": person, "contact_date": _date("contact_date", period_end),
            "service": _one_of(["cyp_mh", "adult_mh"]),
        },
    }[kind]()
    return pa.DataFrameSchema(columns, strict=True, ordered=False, name=kind)
