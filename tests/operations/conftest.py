"""Fixtures for the operations tests: a local webhook, and helpers to drive Dagster the way the
daemon does (evaluate a sensor or schedule on a real instance, then execute its run requests)."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest


@dataclass
class Webhook:
    url: str
    received: list[dict] = field(default_factory=list)

    def events(self, name: str) -> list[dict]:
        return [r for r in self.received if r["event"] == name]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 in a thread, keeping every JSON body POSTed to it."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/json"
            hook.received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_port}/hooks/c20p5"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


def apply(result: dg.SensorResult, instance: dg.DagsterInstance) -> dg.SensorResult:
    """What the daemon does with a sensor's result before launching its runs: add the partitions asked for."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result


def execute(request: dg.RunRequest, instance: dg.DagsterInstance, **tags: str) -> dg.ExecuteInProcessResult:
    """Run what a sensor or schedule requested, on the same instance (as the daemon's launcher would),
    without the HTML reports (tests/reports cover them; they would add ~10 s a run here)."""
    from orchestration.definitions import defs
    job = defs.resolve_job_def("nightly_refresh")
    pipeline = [k for k in defs.resolve_asset_graph().get_all_asset_keys()
                if k != dg.AssetKey("evaluation_reports") and defs.resolve_asset_graph().get(k).is_materializable]
    return job.execute_in_process(instance=instance, raise_on_error=False, partition_key=request.partition_key,
                                  tags={**request.tags, **tags}, asset_selection=pipeline)


def publication_metadata(result: dg.ExecuteInProcessResult) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey("warehouse_publication"):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError("no publication materialised")


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} not materialised")


def check_results(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return {r.dagster_event.event_specific_data.check_name: r.dagster_event.event_specific_data for r in records}


def log_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.user_message for r in instance.all_logs(run_id) if r.user_message]
