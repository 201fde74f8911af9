"""The dashboard and the alert rules read only metrics and labels that lmsbridge really exports.

A receiver and a worker run as two processes would (two runtimes, each with its own /metrics), a
small batch goes through them, and their /metrics pages are scraped. Every expression in
``deploy/prometheus/lmsbridge.rules.yaml`` and ``deploy/grafana/lmsbridge.json`` is then read for
metric names, label matchers and grouping labels, which must all appear in that scrape. The list
comes from the run, not from this file: a metric renamed or added in the code is seen here.
The probe paths of the Kubernetes manifests are asked on the same processes.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.deploy.promql import Expression, parse
from tests.pipeline.conftest import ACCOUNT, SettingsFactory, settled

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "lmsbridge.rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "lmsbridge.json"
KUBERNETES = DEPLOY / "kubernetes"

# Labels Prometheus itself puts on every scraped series (the job, the target, Kubernetes discovery).
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
# Series the rules read that other exporters make: Prometheus's scrape status and kube-state-metrics.
EXTERNAL = {"up": {"job", "instance"}, "kube_pod_status_ready": {"namespace", "pod", "uid", "condition"}}

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]
Exported = dict[str, dict[str, set[str]]]  # sample name -> label -> values seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _exported(*pages: str) -> Exported:
    found: Exported = {}
    for page in pages:
        for family in text_string_to_metric_families(page):
            found.setdefault(family.name, {})
            for sample in family.samples:
                labels = found.setdefault(sample.name, {})
                for label, value in sample.labels.items():
                    labels.setdefault(label, set()).add(value)
    return found


def _expressions() -> dict[str, Expression]:
    """Every expression shipped, by where it is; recording rules also under their own name."""
    found: dict[str, Expression] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            found[f"rules:{name}"] = parse(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            found[f"dashboard:{panel['title']}:{target['refId']}"] = parse(target["expr"])
    return found


def _problems(expressions: dict[str, Expression], exported: Exported) -> list[str]:
    recorded = {key.removeprefix("rules:"): e for key, e in expressions.items() if key.startswith("rules:lmsbridge:")}
    problems: list[str] = []

    def labels_of(metric: str) -> set[str] | None:
        if metric in exported:
            return set(exported[metric])
        if metric in EXTERNAL:
            return EXTERNAL[metric]
        if metric in recorded:
            source = recorded[metric]
            return source.grouping | {label for m in source.metrics for label in labels_of(m) or set()}
        return None

    for where, expr in expressions.items():
        known: set[str] = set(TARGET_LABELS)
        for metric, matchers in expr.selectors:
            labels = labels_of(metric)
            if labels is None:
                problems.append(f"{where}: {metric} is not exported")
                continue
            known |= labels
            for m in matchers:
                if m.label not in labels | TARGET_LABELS:
                    problems.append(f"{where}: {metric} has no label {m.label!r}")
                    continue
                seen = exported.get(metric, {}).get(m.label)
                if seen is None:
                    continue
                if m.label == "stage" and m.op in ("=", "=~"):
                    # Every stage is exported from the start: each one named must be a real stage.
                    for value in m.value.split("|") if m.op == "=~" else [m.value]:
                        if value not in seen:
                            problems.append(f"{where}: {metric} has no stage {value!r} (stages: {sorted(seen)})")
                elif m.op == "=~" and not any(re.fullmatch(m.value, v) for v in seen):
                    problems.append(f"{where}: {metric}{{{m.label}=~{m.value!r}}} matches none of {sorted(seen)}")
        for label in expr.grouping - known:
            problems.append(f"{where}: groups by {label!r}, which none of {sorted(expr.metrics)} has")
    return problems


async def _scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.text()


def _probe_paths(manifest: str) -> set[str]:
    deployment = yaml.safe_load((KUBERNETES / manifest).read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if probe in container
    }


async def test_rules_and_dashboard_name_only_exported_metrics_and_labels(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Every metric, label matcher and grouping label in the rules and the dashboard is in a real /metrics."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    metrics_port = _free_port()
    settings = make_settings(worker={"metrics_port": metrics_port})
    worker = await start_runtime(settings, receiver=False)
    receiver = await start_runtime(settings, worker=False)
    sender = sender_for(receiver)
    event = exec_event("assignment.created", exec_assignment("o1", "jane@acme.example", scenario="s1"))
    assert (await sender.post("acme-sales", event, message_id="m1"))[0] == 202
    forged = WebhookSender(sender.base_url, "whsec_" + "Zm9yZ2VkLWtleS1mb3JnZWQta2V5", session=sender.session)
    assert (await forged.post("acme-sales", event, message_id="m2"))[0] == 401
    await settled(worker)  # also publishes the queue depths

    session = sender.session
    assert session is not None
    receiver_url, worker_url = f"http://127.0.0.1:{receiver.port}", f"http://127.0.0.1:{metrics_port}"
    exported = _exported(
        await _scrape(session, f"{receiver_url}/metrics"), await _scrape(session, f"{worker_url}/metrics")
    )
    assert "lmsbridge_end_to_end_seconds_bucket" in exported  # the batch went all the way through

    expressions = _expressions()
    assert len(expressions) > 30
    problems = _problems(expressions, exported)
    assert not problems, "\n".join(problems)

    # The probes the Kubernetes manifests declare answer on the real processes.
    for path in _probe_paths("receiver-deployment.yaml"):
        await _scrape(session, receiver_url + path)
    for path in _probe_paths("worker-deployment.yaml"):
        await _scrape(session, worker_url + path)


def test_the_check_finds_an_unknown_metric_a_wrong_label_and_a_wrong_stage() -> None:
    """The name and label check is not vacuous: typos in a metric, a label or a stage are reported."""
    exported: Exported = {
        "lmsbridge_events_total": {"stage": {"accepted", "upserted"}},
        "lmsbridge_queue_depth": {"queue": {"lmsbridge.dead"}},
    }
    cases: dict[str, Any] = {
        "a": parse("sum(rate(lmsbridge_event_total[5m]))"),
        "b": parse('lmsbridge_queue_depth{queues="x"}'),
        "c": parse('lmsbridge_events_total{stage="upsert"}'),
        "d": parse("sum by (source) (lmsbridge_queue_depth)"),
        "e": parse('sum by (instance) (lmsbridge_events_total{stage=~"accepted|upserted"})'),
    }
    problems = _problems(cases, exported)
    assert [p.split(":")[0] for p in problems] == ["a", "b", "c", "d"], problems
