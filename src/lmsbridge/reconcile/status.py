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
    """``{source or "lms:<account>": {last_pass, duration, outcome, found, last_success, error}}``; {} when none ran."""
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
            "calls": p.findings.get("platform_calls", p.findings.get("stackone_calls")),
            "last_success": _iso(p.last_success_at),
            "error": p.error,
        }
        for p in passes
    }


def print_passes(console: Console, passes: dict[str, dict[str, Any]]) -> None:
    """The "Reconciliation" table of ``status``."""
    table = Table(title="Reconciliation, last pass")
    for column in ("source", "last pass", "duration", "outcome", "found", "calls", "last success"):
        table.add_column(column)
    for source, p in passes.items():
        found = ", ".join(f"{k} {v}" for k, v in p["found"].items()) or (
            "in step" if p["outcome"] == "finished" else "-"
        )
        outcome = p["outcome"] if not p["error"] else f"{p['outcome']}: {p['error']}"
        table.add_row(
            source, p["last_pass"], f"{p['duration']:.1f} s", outcome, found, str(p["calls"]), p["last_success"] or "-"
        )
    console.print(table)
