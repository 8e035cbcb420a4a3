"""Great Expectations (GX 1.x) checks for the indicator marts, validated per site.

Each site's slice of each mart is validated separately so that one site's bad
data withholds only that site. Frames are pandas DataFrames read from DuckDB by
the caller: GX's SQL datasource returns empty results on DuckDB, so we use an
in-memory (ephemeral) context with a pandas dataframe asset instead.

GX is imported inside functions only: importing it takes seconds and callers
that never validate (CLI --help, unit tests of other modules) should not pay.

Severity: every expectation carries ``meta={"severity": "error" | "warning"}``
(mirrored in GX's native ``severity`` field and in ``notes`` for Data Docs).
A site fails only when an "error" expectation fails; warnings are reported.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

INDICATOR_VALUES = "fct_indicator_values"
INEQUALITY_SUMMARY = "fct_inequality_summary"
MARTS = (INDICATOR_VALUES, INEQUALITY_SUMMARY)
SUITE_NAMES = {
    INDICATOR_VALUES: "indicator_values_quality",
    INEQUALITY_SUMMARY: "inequality_summary_quality",
}

ERROR = "error"
WARNING = "warning"

BREAKDOWNS = (
    "overall", "imd_quintile", "core20", "ethnicity", "sex", "age_band",
    "plus_group", "core20_ethnicity", "practice", "pcn",
)
UNITS = ("%", "per 100,000", "per 1,000")
SPC_VARIATION = (
    "common_cause", "special_cause_improvement", "special_cause_concern",
    "special_cause_neither", "insufficient_data",
)
SPC_ASSURANCE = ("pass", "fail", "inconsistent", "insufficient_data", "no_target")

INDICATOR_KEY = ("site_code", "period_end", "indicator_id", "breakdown", "breakdown_value")
INDICATOR_COLUMNS = INDICATOR_KEY + (
    "numerator", "denominator", "value", "lower_ci", "upper_ci", "unit",
    "target", "comparator_value",
)
SUMMARY_KEY = ("site_code", "period_end", "indicator_id")
SUMMARY_COLUMNS = SUMMARY_KEY + (
    "core20_value", "not_core20_value", "absolute_gap", "relative_gap",
    "sii", "sii_lower_ci", "sii_upper_ci", "rii", "rii_lower_ci", "rii_upper_ci",
    "spc_variation", "spc_assurance",
)

# Rows whose site_code is null belong to no site; they are reported under this
# pseudo-site (which always fails on "site_code not null") instead of vanishing.
MISSING_SITE = "__missing_site_code__"
MAX_UNEXPECTED = 5
DOCS_SITE_NAME = "pipeline_checks"
# SUMMARY gives counts plus a short sample of unexpected values, no row dumps.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_UNEXPECTED}


@dataclass(frozen=True)
class FailedExpectation:
    """One failed expectation for one site and mart."""

    mart: str
    expectation_type: str  # e.g. "expect_column_values_to_be_between"
    columns: tuple[str, ...]  # column, (column_A, column_B) or column_list
    severity: str  # ERROR or WARNING
    unexpected_count: int | None
    unexpected_values: tuple[str, ...]  # up to MAX_UNEXPECTED samples, or missing columns
    exception: str | None = None  # set when GX could not evaluate (e.g. missing column)

    def __str__(self) -> str:
        cols = ",".join(self.columns) or "-"
        text = f"[{self.severity}] {self.mart}: {self.expectation_type}({cols})"
        if self.unexpected_count:
            text += f" {self.unexpected_count} unexpected"
        if self.unexpected_values:
            text += f" e.g. {'; '.join(self.unexpected_values)}"
        if self.exception:
            text += f" raised: {self.exception}"
        return text


@dataclass
class SiteResult:
    """Outcome for one site across all marts validated.

    success: True when every "error"-severity expectation passed (warnings allowed).
    failures: every failed expectation, errors and warnings alike.
    evaluated / failed: expectation counts summed over the site's marts.
    docs_index: path of the Data Docs index.html (shared by all sites of one
        call) when ``docs_dir`` was given, else None.
    """

    site_code: str
    success: bool
    failures: list[FailedExpectation]
    evaluated: int
    failed: int
    docs_index: Path | None = None

    @property
    def errors(self) -> list[FailedExpectation]:
        return [f for f in self.failures if f.severity == ERROR]


# --------------------------------------------------------------------------- suites


def _expect(kind: str, severity: str, why: str, **kwargs: Any) -> Expectation:
    """Build GX expectation `kind`, tagging severity in meta, GX's field and notes."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    gx_severity = FailureSeverity.CRITICAL if severity == ERROR else FailureSeverity.WARNING
    return getattr(gxe, kind)(
        meta={"severity": severity},
        notes=f"Severity: {severity}. {why}",
        severity=gx_severity,
        # Turn evaluation errors (e.g. a missing column) into failed results, not crashes.
        catch_exceptions=True,
        **kwargs,
    )


def _suite(name: str, expectations: list[Expectation]) -> gx.ExpectationSuite:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def _columns_exist(columns: tuple[str, ...]) -> Expectation:
    # One table-level expectation, not one per column: GX's cost is per expectation.
    return _expect("ExpectTableColumnsToMatchSet", ERROR, "Downstream publishing reads these.",
                   column_set=list(columns), exact_match=False)


def _not_null(columns: tuple[str, ...], severity: str, why: str) -> list[Expectation]:
    return [_expect("ExpectColumnValuesToNotBeNull", severity, why, column=c) for c in columns]


def _in_set(column: str, values: tuple[str, ...], why: str) -> Expectation:
    return _expect("ExpectColumnValuesToBeInSet", ERROR, why, column=column, value_set=list(values))


def _ci_brackets(point: str, lower: str, upper: str) -> list[Expectation]:
    """lower <= point <= upper, skipping rows where either side is null."""
    why = "A point estimate outside its own confidence interval means a calculation bug."
    pair = "ExpectColumnPairValuesAToBeGreaterThanB"
    kw = {"or_equal": True, "ignore_row_if": "either_value_is_missing"}
    return [
        _expect(pair, ERROR, why, column_A=point, column_B=lower, **kw),
        _expect(pair, ERROR, why, column_A=upper, column_B=point, **kw),
    ]


def suite_for_indicator_values() -> gx.ExpectationSuite:
    """Expectations for fct_indicator_values (one row per site/period/indicator/cell)."""
    with _quiet_gx():
        return _indicator_values_suite()


def _indicator_values_suite() -> gx.ExpectationSuite:
    from great_expectations.expectations.row_conditions import Column

    # GX >= 1.9 wants Condition objects; string row_condition + condition_parser
    # ("pandas") still works but emits DeprecationWarnings.
    pct = Column("unit") == "%"
    return _suite(SUITE_NAMES[INDICATOR_VALUES], [
        _expect("ExpectTableRowCountToBeBetween", ERROR,
                "A site with no indicator rows has nothing to publish.", min_value=1),
        _columns_exist(INDICATOR_COLUMNS),
        *_not_null(INDICATOR_KEY + ("numerator", "denominator", "unit"), ERROR,
                   "Keys and counts identify and size every published cell."),
        _expect("ExpectCompoundColumnsToBeUnique", ERROR,
                "Duplicate cells would double count on the dashboard.",
                column_list=list(INDICATOR_KEY)),
        _in_set("breakdown", BREAKDOWNS, "The dashboard only renders known breakdowns."),
        _in_set("unit", UNITS, "Unit drives formatting and the percentage checks."),
        *[_expect("ExpectColumnValuesToBeBetween", ERROR, "Counts cannot be negative.",
                  column=c, min_value=0) for c in ("numerator", "denominator")],
        _expect("ExpectColumnPairValuesAToBeGreaterThanB", ERROR,
                "A percentage's numerator is a subset of its denominator.",
                column_A="denominator", column_B="numerator", or_equal=True, row_condition=pct),
        _expect("ExpectColumnValuesToBeBetween", ERROR, "Percentages lie in [0, 100].",
                column="value", min_value=0, max_value=100, row_condition=pct),
        _expect("ExpectColumnValuesToBeBetween", ERROR, "Rates cannot be negative.",
                column="value", min_value=0),
        *_ci_brackets("value", "lower_ci", "upper_ci"),
        _expect("ExpectColumnValuesToNotBeNull", WARNING,
                "Value may be null only when the denominator is 0.",
                column="value", row_condition=Column("denominator") > 0),
    ])


def suite_for_inequality_summary() -> gx.ExpectationSuite:
    """Expectations for fct_inequality_summary (numeric columns may all be null)."""
    with _quiet_gx():
        return _inequality_summary_suite()


def _inequality_summary_suite() -> gx.ExpectationSuite:
    return _suite(SUITE_NAMES[INEQUALITY_SUMMARY], [
        _expect("ExpectTableRowCountToBeBetween", WARNING,
                "A site with indicator values should also have a summary.", min_value=1),
        _columns_exist(SUMMARY_COLUMNS),
        *_not_null(SUMMARY_KEY, ERROR, "Keys identify every summary row."),
        _expect("ExpectCompoundColumnsToBeUnique", ERROR,
                "One summary per site, period and indicator.", column_list=list(SUMMARY_KEY)),
        _in_set("spc_variation", SPC_VARIATION, "SPC icons exist only for these states."),
        _in_set("spc_assurance", SPC_ASSURANCE, "SPC icons exist only for these states."),
        *_not_null(("spc_variation", "spc_assurance"), WARNING,
                   "'insufficient_data' is the explicit no-result state, not null."),
        *_ci_brackets("sii", "sii_lower_ci", "sii_upper_ci"),
        *_ci_brackets("rii", "rii_lower_ci", "rii_upper_ci"),
    ])


_SUITE_BUILDERS = {
    INDICATOR_VALUES: suite_for_indicator_values,
    INEQUALITY_SUMMARY: suite_for_inequality_summary,
}


# --------------------------------------------------------------------------- context


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """Hide GX's INFO chatter (even if the pipeline logs at INFO) and the
    DeprecationWarnings its own import raises (sre_constants); restore afterwards."""
    gx_logger = logging.getLogger("great_expectations")
    previous = gx_logger.level
    gx_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="great_expectations")
            yield
    finally:
        gx_logger.setLevel(previous)


def _docs_site_config(docs_dir: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
    }


def _context(docs_dir: Path | None) -> AbstractDataContext:
    """In-memory context: no tqdm bars, no analytics, and only our docs site.

    A plain get_context(mode="ephemeral") also registers a default docs site in a
    fresh temp directory, which build_data_docs() would write and leave behind.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {} if docs_dir is None else {DOCS_SITE_NAME: _docs_site_config(docs_dir)}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validation_definitions(
    context: AbstractDataContext, marts: list[str]
) -> dict[str, gx.ValidationDefinition]:
    """One dataframe asset + suite + validation definition per mart, reused for every site.

    ValidationDefinition.run (unlike Batch.validate) stores results, which Data Docs needs.
    """
    import great_expectations as gx

    source = context.data_sources.add_pandas("marts")
    definitions = {}
    for mart in marts:
        batch = source.add_dataframe_asset(mart).add_batch_definition_whole_dataframe("site")
        suite = context.suites.add(_SUITE_BUILDERS[mart]())
        definitions[mart] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{mart}_by_site", data=batch, suite=suite)
        )
    return definitions


# --------------------------------------------------------------------------- results


def _columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    if kwargs.get("column"):
        return (str(kwargs["column"]),)
    if kwargs.get("column_A"):
        return (str(kwargs["column_A"]), str(kwargs["column_B"]))
    return tuple(str(c) for c in kwargs.get("column_list") or ())


def _show(value: Any) -> str:
    """Compact text for an unexpected value: numpy scalars as Python, rows as tuples."""
    if isinstance(value, dict):
        value = tuple(value.values())  # compound-unique samples are {column: value}
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    value = value.item() if hasattr(value, "item") else value  # np.int64(3) -> 3
    return repr(value) if isinstance(value, str) else str(value)


def _unexpected_sample(details: Mapping[str, Any]) -> tuple[str, ...]:
    # expect_table_columns_to_match_set reports missing columns under details.mismatched.
    missing = ((details.get("details") or {}).get("mismatched") or {}).get("missing")
    if missing:
        return tuple(f"missing {c}" for c in missing)
    sample = details.get("partial_unexpected_list")
    if sample:
        return tuple(_show(v) for v in sample[:MAX_UNEXPECTED])
    if "observed_value" in details:  # table-level expectations, e.g. row count
        return (f"observed {_show(details['observed_value'])}",)
    return ()


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """exception_info is either flat or keyed by metric id (metric errors, e.g. no such column)."""
    candidates = [info or {}] + [v for v in (info or {}).values() if isinstance(v, dict)]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            return str(candidate.get("exception_message"))
    return None


def _failure(mart: str, result: ExpectationValidationResult) -> FailedExpectation:
    config = result.expectation_config
    details = result.result or {}
    return FailedExpectation(
        mart=mart,
        expectation_type=config.type,
        columns=_columns(config.kwargs),
        severity=(config.meta or {}).get("severity", ERROR),
        unexpected_count=details.get("unexpected_count"),
        unexpected_values=_unexpected_sample(details),
        exception=_exception_message(result.exception_info),
    )


def _failures(mart: str, result: ExpectationSuiteValidationResult) -> list[FailedExpectation]:
    return [_failure(mart, r) for r in result.results if not r.success]


# --------------------------------------------------------------------------- slicing


def _split_by_site(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Site -> rows; null site codes become MISSING_SITE rather than being dropped."""
    if "site_code" not in frame.columns:
        return {}  # every site then gets an empty slice and fails "column exists"
    keys = frame["site_code"].astype("object").where(frame["site_code"].notna(), MISSING_SITE)
    return {str(site): rows for site, rows in frame.groupby(keys, sort=True)}


def _check_marts(frames: Mapping[str, pd.DataFrame]) -> None:
    unknown = set(frames) - set(MARTS)
    if unknown:
        raise ValueError(f"unknown marts {sorted(unknown)}; expected some of {MARTS}")


# --------------------------------------------------------------------------- entry point


def validate_site_frames(
    frames: Mapping[str, pd.DataFrame], docs_dir: Path | None = None
) -> list[SiteResult]:
    """Validate each site's slice of each mart; return one SiteResult per site, sorted.

    frames maps mart name (INDICATOR_VALUES, INEQUALITY_SUMMARY) to the all-sites
    frame. Sites are the union of site codes over all frames; a site absent from
    one mart is validated against an empty slice of it (row-count check). If
    docs_dir is given, a static Data Docs site is built there and its index.html
    is set on every result's ``docs_index``.
    """
    _check_marts(frames)
    slices = {mart: _split_by_site(frame) for mart, frame in frames.items()}
    sites = sorted(set().union(*slices.values())) if slices else []
    with _quiet_gx():
        context = _context(docs_dir)
        definitions = _validation_definitions(context, list(frames))
        run_time = datetime.now(timezone.utc)  # one timestamp groups this call in Data Docs
        results = [
            _validate_site(site, frames, slices, definitions, run_time) for site in sites
        ]
        if docs_dir is not None:
            index = _build_docs(context, docs_dir)
            for result in results:
                result.docs_index = index
    return results


def _validate_site(
    site: str,
    frames: Mapping[str, pd.DataFrame],
    slices: Mapping[str, Mapping[str, pd.DataFrame]],
    definitions: Mapping[str, gx.ValidationDefinition],
    run_time: datetime,
) -> SiteResult:
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=f"site-{site}", run_time=run_time)
    failures: list[FailedExpectation] = []
    evaluated = 0
    for mart, definition in definitions.items():
        rows = slices[mart].get(site, frames[mart].iloc[0:0])
        result = definition.run(
            batch_parameters={"dataframe": rows}, result_format=_RESULT_FORMAT, run_id=run_id
        )
        evaluated += result.statistics["evaluated_expectations"]
        failures += _failures(mart, result)
    return SiteResult(
        site_code=site,
        success=not any(f.severity == ERROR for f in failures),
        failures=failures,
        evaluated=evaluated,
        failed=len(failures),
    )


def _build_docs(context: AbstractDataContext, docs_dir: Path) -> Path:
    context.build_data_docs(site_names=[DOCS_SITE_NAME])
    index = docs_dir.resolve() / "index.html"
    if not index.is_file():
        raise RuntimeError(f"GX did not write Data Docs index at {index}")
    return index
