"""The Grafana dashboard loads and shows what an operator needs (metric names are checked against a real
run in test_metric_names.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.deploy.promql import parse

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lmsbridge.json"


def test_dashboard_is_importable_and_covers_every_topic() -> None:
    """Valid JSON with a Prometheus datasource variable; panels for the ledger, throughput by stage, latency,
    StackOne statuses, rate budget (and its waits by lane), queue depths, paused accounts and dead letters."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "lmsbridge"
    assert dashboard["title"]
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    shown: list[tuple[set[str], set[str], str]] = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            expr = parse(target["expr"])
            shown.append((expr.metrics, expr.grouping, target["expr"]))

    def has(metric: str, *, by: str | None = None, text: str = "") -> bool:
        return any(metric in m and (by is None or by in g) and text in e for m, g, e in shown)

    assert has("lmsbridge:ledger_in_flight")
    assert has("lmsbridge_events_total", by="stage")
    assert has("lmsbridge_records_total", by="stage")
    assert has("lmsbridge_end_to_end_seconds_bucket", text="histogram_quantile(0.99")
    assert has("lmsbridge_stackone_responses_total", by="status")
    assert has("lmsbridge_rate_budget_waiting")
    assert has("lmsbridge_rate_budget_granted")
    assert has("lmsbridge_rate_budget_wait_seconds_bucket", by="lane", text="histogram_quantile(0.99")
    assert has("lmsbridge_queue_depth", by="queue")
    assert has("lmsbridge_paused_accounts")
    assert has("lmsbridge_events_total", text='stage="dead_lettered"')
    assert has("lmsbridge_queue_depth", text="dead")
