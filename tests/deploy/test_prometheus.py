"""The Prometheus rules load, and their unit tests (fire and stay quiet for every alert) pass in promtool.

promtool ships in Debian's ``prometheus`` package (``.ci/run`` installs it when missing); without it
these tests fail, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "lmsbridge.rules.yaml"
RULE_TESTS = PROMETHEUS / "lmsbridge.rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; the test FAILS when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (Debian), as .ci/run does")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False)


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    """`promtool check rules` finds the rule file valid (PromQL parses, templates render)."""
    result = _run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules`: every alert fires on the series that should fire it and not on the others."""
    result = _run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has at least one unit test that expects it and one that expects it silent."""
    cases: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            kind = "fires" if case.get("exp_alerts") else "quiet"
            counts = cases.setdefault(case["alertname"], {"fires": 0, "quiet": 0})
            counts[kind] += 1
    for alert in _alerts():
        counts = cases.get(alert["alert"], {"fires": 0, "quiet": 0})
        assert counts["fires"], f"{alert['alert']} is never expected to fire"
        assert counts["quiet"], f"{alert['alert']} is never expected to stay quiet"


def test_every_alert_has_a_severity_and_a_runbook_in_the_readme() -> None:
    """Each alert says how urgent it is and links to its runbook entry, which exists in README.md."""
    readme = (ROOT / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)
    }
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("page", "ticket"), alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        runbook = alert["annotations"]["runbook"]
        assert runbook == f"README.md#{alert['alert'].lower()}", alert["alert"]
        assert runbook.split("#")[1] in anchors, f"README.md has no heading for {alert['alert']}"
