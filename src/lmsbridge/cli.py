"""The ``lmsbridge`` command: the only place that builds Settings and configures logging.

Commands: ``run`` (receiver + worker), ``serve``, ``worker``, ``check`` (probe exit code),
``status``, ``dlq list|show|replay|purge``, ``migrate``, ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from lmsbridge import __version__
from lmsbridge.errors import ConfigError, LmsbridgeError
from lmsbridge.logs import configure
from lmsbridge.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmsbridge", description="Signed training webhooks in, LMS records out.")
    parser.add_argument("--version", action="version", version=f"lmsbridge {__version__}")
    parser.add_argument("--config", help="TOML settings file (default: $LMSBRIDGE_CONFIG)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="receiver and worker in one process (the main job)")
    sub.add_parser("serve", help="the webhook receiver only")
    sub.add_parser("worker", help="the consumers only")
    sub.add_parser("migrate", help="bring the database schema up to date")
    check = sub.add_parser("check", help="exit 0 when the broker and database answer (a probe)")
    check.add_argument("--timeout", type=float, default=5.0)
    status = sub.add_parser("status", help="ledger, queue depths, backlog, parked and dead records")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dlq = sub.add_parser("dlq", help="inspect and replay the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--json", action="store_true")
    dlq_show = dlq_sub.add_parser("show")
    dlq_show.add_argument("id")
    dlq_replay = dlq_sub.add_parser("replay")
    dlq_replay.add_argument("id", nargs="?")
    dlq_replay.add_argument("--all", action="store_true")
    dlq_sub.add_parser("purge").add_argument("--yes", action="store_true", help="do not ask")
    demo = sub.add_parser("demo", help="the whole pipeline against built-in stand-ins; needs only RabbitMQ")
    demo.add_argument("--events", type=int, default=60, help="how many webhooks to send")
    demo.add_argument("--amqp-url", default=None, help="RabbitMQ URL (default: settings' amqp_url)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmsbridge`` console script."""
    args = _parser().parse_args(argv)
    configure(level=args.log_level, fmt=args.log_format)
    try:
        if args.command == "demo":
            from lmsbridge.demo import run_demo

            settings = load_settings(args.config) if args.config else None
            return asyncio.run(run_demo(settings, events=args.events, amqp_url=args.amqp_url))
        settings = load_settings(args.config)
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"lmsbridge: {exc}", file=sys.stderr)
        return 2
    except LmsbridgeError as exc:
        print(f"lmsbridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("run", "serve", "worker"):
        from lmsbridge.runtime import Runtime, run_until_signal

        _require_runtime_settings(settings, worker=args.command != "serve")
        runtime = Runtime(settings, receiver=args.command != "worker", worker=args.command != "serve")
        _run(run_until_signal(runtime))
        return 0
    if args.command == "migrate":
        from lmsbridge.ops import migrate

        return _run(migrate(settings))
    if args.command == "check":
        from lmsbridge.ops import check

        return _run(check(settings, timeout=args.timeout))
    if args.command == "status":
        from lmsbridge.ops import status

        return _run(status(settings, as_json=args.json))
    from lmsbridge import dlq

    if args.dlq_command == "list":
        return _run(dlq.list_dead(settings, limit=args.limit, as_json=args.json))
    if args.dlq_command == "show":
        return _run(dlq.show(settings, args.id))
    if args.dlq_command == "replay":
        if not args.id and not args.all:
            raise ConfigError("dlq replay: give a message id or --all")
        return _run(dlq.replay(settings, None if args.all else args.id))
    if not args.yes and input("Purge every dead-lettered message? [y/N] ").strip().lower() != "y":
        return 1
    return _run(dlq.purge(settings))


def _require_runtime_settings(settings: Settings, *, worker: bool) -> None:
    if not settings.sources:
        raise ConfigError("config: sources: at least one source is needed ([sources.<name>])")
    if worker and not settings.stackone.api_key.get_secret_value():
        raise ConfigError("config: stackone.api_key: required to push to StackOne")


def _run(coro: Coroutine[Any, Any, int | None]) -> int:
    """Run ``coro`` on uvloop when it is installed (the "fast" extra), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(coro) or 0)
    return int(uvloop.run(coro) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
