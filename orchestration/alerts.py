"""Alerts to a webhook a team chooses (C20P5_ALERT_WEBHOOK): one JSON object per POST.

    {"source": "c20p5", "event": "run_failure" | "sites_withheld",
     "text": "<one line, for chat tools that show `text`>", "summary": "<the same line>",
     "sent_at": "2026-11-24T02:03:04Z", "details": {...}}

run_failure details: run_id, job, partitions, trigger, error, steps (step -> message), ui_path.
sites_withheld details: run_id, publication_id, warehouse, withheld [{site_code, period_end, reason}].

No webhook configured: the alert is logged, nothing fails. A webhook that does not answer is tried
ATTEMPTS times with backoff, then logged: an alert never fails or retries a run.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Protocol

from orchestration.settings import Settings

ATTEMPTS, FIRST_WAIT_SECONDS, TIMEOUT_SECONDS = 3, 1.0, 10.0
LAUNCHED_BY = "c20p5/launched_by"  # "cli": `c20p5` alerts on its own runs, the failure sensor skips them

logger = logging.getLogger("c20p5.alerts")


class _Log(Protocol):
    def warning(self, msg: str) -> Any: ...

    def error(self, msg: str) -> Any: ...

    def info(self, msg: str) -> Any: ...


def payload(event: str, summary: str, details: dict) -> dict:
    return {"source": "c20p5", "event": event, "text": f"[c20p5] {summary}", "summary": summary,
            "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "details": details}


def send_alert(settings: Settings, event: str, summary: str, details: dict, log: _Log | None = None) -> str:
    """POST the alert; returns what happened ("sent", "logged: ...", "failed: ...") for run metadata."""
    log = log or logger
    body = payload(event, summary, details)
    if not settings.alert_webhook:
        log.warning(f"alert not sent (C20P5_ALERT_WEBHOOK is not set): {body['text']}")
        return "logged: no webhook configured"
    wait, error = FIRST_WAIT_SECONDS, ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _post(settings.alert_webhook, body)
            log.info(f"alert {event} sent to the webhook")
            return "sent"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500 and exc.code != 429:
                break  # the webhook refuses this request: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        if attempt < ATTEMPTS:
            time.sleep(wait)
            wait *= 2
    log.error(f"alert {event} could not be sent to the webhook ({error}): {body['text']}")
    return f"failed: {error}"


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(body, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "c20p5-alerts"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        response.read()


def run_failure_details(run_id: str, job: str, tags: dict[str, str], error: str, steps: dict[str, str]) -> dict:
    from orchestration.partitions import PARTITION, RANGE_END, RANGE_START
    partitions = (f"{tags[RANGE_START]}..{tags[RANGE_END]}" if RANGE_START in tags else tags.get(PARTITION, "none"))
    return {"run_id": run_id, "job": job, "partitions": partitions, "trigger": tags.get("c20p5/trigger", "manual"),
            "error": error, "steps": steps, "ui_path": f"/runs/{run_id}"}


def failure_summary(details: dict) -> str:
    return f"run {details['run_id'][:8]} of {details['job']} ({details['partitions']}) failed: {details['error'][:500]}"


__all__ = ["send_alert", "payload", "run_failure_details", "failure_summary", "LAUNCHED_BY"]
