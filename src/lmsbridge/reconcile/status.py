"""What ``lmsbridge status`` shows of reconciliation: each source's last pass, when, how long, what it found."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from lmsbridge.errors import LmsbridgeError
from lmsbridge.settings import Settings
from lmsbridge.storage import create_engine
from lmsbridge.storage.reconcile import ReconcileStore


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


async def last_passes(settings: Settings) -> dict[str, dict[str, Any]]:
    """``{source or "lms:<account>": {last_pass, duration, outcome, found, in_step, not_checked, calls,
    last_success, error}}``; {} when none ran."""
    engine = create_engine(settings.database_url.get_secret_value())
    store = ReconcileStore(engine)
    try:
        passes = await store.passes()
    except LmsbridgeError:
        return {}  # a database without the reconcile tables yet (not migrated)
    finally:
        await store.close()
        await engine.dispose()
    return {
        p.source: {
            "last_pass": _iso(p.started_at),
            "duration": round(p.duration, 3),
            "outcome": p.outcome,
            "found": {k: v for k, v in (p.findings.get("drift") or {}).items() if v},
            "in_step": p.findings.get("in_step"),
            "not_checked": _not_checked(p.findings),
            "calls": p.findings.get("platform_calls", p.findings.get("stackone_calls")),
            "last_success": _iso(p.last_success_at),
            "error": p.error,
        }
        for p in passes
    }


def _not_checked(findings: dict[str, Any]) -> int:
    """Written records an LMS pass could not compare (people not in the directory, writes an
    unreadable row may be): such a pass is not "in step". 0 for a platform pass."""
    return int(findings.get("unknown_people") or 0) + int(findings.get("unverified") or 0)


def print_passes(console: Console, passes: dict[str, dict[str, Any]]) -> None:
    """The "Reconciliation" table of ``status``."""
    table = Table(title="Reconciliation, last pass")
    for column in ("source", "last pass", "duration", "outcome", "found", "calls", "last success"):
        table.add_column(column)
    for source, p in passes.items():
        found = ", ".join(f"{k} {v}" for k, v in p["found"].items())
        if p.get("not_checked"):
            found = ", ".join(x for x in (found, f"not checked {p['not_checked']}") if x)
        found = found or ("in step" if p["outcome"] == "finished" else "-")
        outcome = p["outcome"] if not p["error"] else f"{p['outcome']}: {p['error']}"
        table.add_row(
            source, p["last_pass"], f"{p['duration']:.1f} s", outcome, found, str(p["calls"]), p["last_success"] or "-"
        )
    console.print(table)
