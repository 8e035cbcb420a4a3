"""Retry transient I/O, never data errors (SPEC §10-§11).

Every asset has RETRY_POLICY (exponential backoff with jitter). Inside, `data_errors_fail_fast`
lets a transient error through untouched, so the policy retries it, and turns anything else into a
`Failure(allow_retries=False)`: a bad file does not get better by waiting, and its message (file,
row, column) reaches the run log, the alert and `c20p5 run` at once.
"""
from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# Substrings of messages from DuckDB, dbt, psycopg and the OS that mean "try again later".
TRANSIENT_MESSAGES = (
    "could not set lock", "conflicting lock", "database is locked", "resource temporarily unavailable",
    "connection refused", "connection reset", "server closed the connection", "terminating connection",
    "could not connect", "connection timed out", "timed out", "broken pipe", "network is unreachable",
    "stayed locked",
)
TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETXTBSY, errno.ETIMEDOUT, errno.ECONNRESET,
                    errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPIPE}


def is_transient(exc: BaseException) -> bool:
    """A locked file or a dropped connection; judged on the error and the errors that caused it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(exc, (duckdb.IOException, OSError, RuntimeError)) and _transient_text(str(exc)):
            return True
        if _is_psycopg_operational(exc) and _transient_text(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_text(message: str) -> bool:
    text = message.lower()
    return any(m in text for m in TRANSIENT_MESSAGES)


def _is_psycopg_operational(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError)


@contextmanager
def data_errors_fail_fast(what: str) -> Iterator[None]:
    """Wrap an asset body: transient errors propagate (RETRY_POLICY retries them), others fail now."""
    try:
        yield
    except dg.Failure:
        raise
    except dg.DagsterExecutionInterruptedError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        raise dg.Failure(description=f"{what} failed (not retried: not a transient error): {_first_lines(exc)}",
                         allow_retries=False) from exc


def _first_lines(exc: BaseException, limit: int = 2000) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


__all__ = ["RETRY_POLICY", "data_errors_fail_fast", "is_transient"]
