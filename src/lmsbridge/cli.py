"""The ``lmsbridge`` command: the only place that builds Settings and configures logging.

Commands: ``run`` (receiver + worker), ``serve``, ``worker``, ``migrate``, ``check`` (a probe's
exit code), ``status``, ``dlq list|show|replay|purge``, ``reconcile`` and ``demo``. The global options
(``--config``, ``--log-level``, ``--log-format``) are accepted before or after the command:
``lmsbridge --config F run`` and ``lmsbridge run --config F`` are the same.

Exit codes (also in ``lmsbridge --help`` and the README):

====  ==========================================================================
0     done; for ``check``, the broker and the database answer
1     the command could not do its job (a service unreachable, a check failed)
2     bad settings or bad usage (one line on stderr names the key or the option)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from lmsbridge import __version__
from lmsbridge.errors import ConfigError, LmsbridgeError
from lmsbridge.logs import configure, mask_values
from lmsbridge.scrub import secret_values
from lmsbridge.settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETTINGS = 2
EXIT_INTERRUPTED = 130

_EXIT_CODES = """exit codes:
  0    done; for `check`, RabbitMQ and the database answer
  1    the command could not do its job (a service unreachable, a check failed)
  2    bad settings or bad usage (one line on stderr names the key or the option)
  130  interrupted (Ctrl-C); 143 stopped by SIGTERM, 129 by SIGHUP (a one-shot command closes its
       connections first)

Global options may come before or after the command: `lmsbridge run --config F` works too.
Every setting can also come from the environment: LMSBRIDGE_<SECTION>__<KEY>."""

Handler = Callable[[argparse.Namespace, Settings], int]


def _global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """The global options; on subcommands their defaults are suppressed so a value given first is kept."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help="TOML settings file (default: $LMSBRIDGE_CONFIG; without either, environment and defaults only)",
    )
    group.add_argument(
        "--log-level",
        default=default("info"),
        choices=["debug", "info", "warning", "error"],
        help="lowest level logged (default: info)",
    )
    group.add_argument(
        "--log-format",
        default=default("auto"),
        choices=["auto", "json", "console"],
        help="json: one JSON object per line; console: for people; auto: console on a terminal, else json",
    )
    return parent


def _count(text: str) -> int:
    """A whole number, 1 or more (argparse's ``type``: a bad one is a usage error, exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def _seconds(text: str) -> float:
    """A number of seconds, finite and 0 or more (argparse's ``type``)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number of seconds, 0 or more")
    return value


def _parser() -> argparse.ArgumentParser:
    common = _global_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="lmsbridge",
        description="Signed training webhooks in, LMS assignments and completions out (via StackOne).",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"lmsbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(  # type: ignore[no-any-return]
            name,
            help=text,
            description=text,
            parents=[common],
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command("run", "receiver and worker in one process (the main job)")
    command("serve", "the webhook receiver only (scale it horizontally)")
    command("worker", "the consumers only (scale them horizontally)")
    migrate = command("migrate", "bring the database schema up to date")
    migrate.add_argument(
        "--wait", type=_seconds, default=0.0, metavar="SECONDS", help="wait this long for the database to answer"
    )
    check = command("check", "exit 0 when RabbitMQ and the database answer, else 1 (a probe)")
    check.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for each service (default: 5)")
    status = command("status", "records per state and account, queue depths, parked and dead reasons, rate budget")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dlq = command("dlq", "inspect, replay and purge the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = command("list", "list dead-lettered messages with their reason and error", dlq_sub)
    dlq_list.add_argument("--limit", type=_count, default=100, help="show at most this many (default: 100)")
    dlq_list.add_argument("--json", action="store_true", help="machine-readable output")
    dlq_list.add_argument("--reason", help="only those dead for this reason (as the list shows it)")
    dlq_show = command("show", "print one dead-lettered message's headers and body", dlq_sub)
    dlq_show.add_argument("id", help="the message id, as `dlq list` shows it")
    dlq_replay = command("replay", "send dead-lettered messages back where they came from", dlq_sub)
    dlq_replay.add_argument("id", nargs="?", help="the message id to replay")
    dlq_replay.add_argument("--all", action="store_true", help="replay every dead-lettered message")
    dlq_replay.add_argument(
        "--reason", help="with --all: only those dead for this reason, as `dlq list` shows it (the rest stay dead)"
    )
    dlq_purge = command("purge", "delete every dead-lettered message", dlq_sub)
    dlq_purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reconcile = command("reconcile", "bring lmsbridge to the platforms' truth (or, with --lms, check the LMS)")
    reconcile.add_argument(
        "--source", action="append", default=[], metavar="NAME", help="only this source (repeatable)"
    )
    reconcile.add_argument("--dry-run", action="store_true", help="compare and report; queue and change nothing")
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    reconcile.add_argument("--lms", action="store_true", help="check that what lmsbridge wrote is in the LMS")
    reconcile.add_argument("--account", default=None, metavar="ID", help="with --lms: only this StackOne account")
    demo = command("demo", "the whole pipeline against built-in stand-ins; needs only RabbitMQ")
    demo.add_argument("--events", type=_count, default=60, help="how many webhooks to send (default: 60)")
    demo.add_argument("--amqp-url", default=None, help="RabbitMQ URL (default: the settings' amqp_url)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmsbridge`` console script and of ``python -m lmsbridge``."""
    args = _parser().parse_args(argv)
    configure(level=args.log_level, fmt=args.log_format)
    try:
        if args.command == "demo":
            return _demo(args)
        settings = load_settings(args.config)
        mask_values(secret_values(settings))
        return _COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        print(f"lmsbridge: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except LmsbridgeError as exc:
        print(f"lmsbridge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _demo(args: argparse.Namespace) -> int:
    from lmsbridge.demo import run_demo

    settings = load_settings(args.config) if args.config else None
    return asyncio.run(run_demo(settings, events=args.events, amqp_url=args.amqp_url))


def _runtime(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge.runtime import Runtime, run_until_signal

    receiver, worker = args.command != "worker", args.command != "serve"
    _require_runtime_settings(settings, worker=worker)
    _run(run_until_signal(Runtime(settings, receiver=receiver, worker=worker)))
    return EXIT_OK


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge.ops import migrate

    return _run(migrate(settings, wait=args.wait), stoppable=True)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge.ops import check

    return _run(check(settings, timeout=args.timeout), stoppable=True)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge.ops import status

    return _run(status(settings, as_json=args.json), stoppable=True)


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge import dlq

    if args.dlq_command == "list":
        return _run(dlq.list_dead(settings, limit=args.limit, as_json=args.json, reason=args.reason), stoppable=True)
    if args.dlq_command == "show":
        return _run(dlq.show(settings, args.id), stoppable=True)
    if args.dlq_command == "replay":
        if not args.id and not args.all:
            raise ConfigError("dlq replay: give a message id or --all")
        if args.reason is not None and not args.all:
            raise ConfigError("dlq replay: --reason goes with --all")
        return _run(dlq.replay(settings, None if args.all else args.id, reason=args.reason), stoppable=True)
    if not args.yes and not _purge_confirmed():
        print("lmsbridge: dlq purge: nothing purged", file=sys.stderr)
        return EXIT_FAILED
    return _run(dlq.purge(settings), stoppable=True)


def _purge_confirmed() -> bool:
    """Ask on stdin; True only for "y". No answer at all (stdin closed, as in a script) is a usage error."""
    try:
        return input("Purge every dead-lettered message? [y/N] ").strip().lower() == "y"
    except EOFError:
        hint = "pass --yes to purge without asking"
        raise ConfigError(f"dlq purge: no answer on stdin (not a terminal?): {hint}") from None


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from lmsbridge.reconcile import reconcile_command

    return _run(
        reconcile_command(
            settings, sources=args.source, dry_run=args.dry_run, as_json=args.json, lms=args.lms, account=args.account
        ),
        stoppable=True,
    )


_COMMANDS: dict[str, Handler] = {
    "run": _runtime,
    "serve": _runtime,
    "worker": _runtime,
    "migrate": _migrate,
    "check": _check,
    "status": _status,
    "dlq": _dlq,
    "reconcile": _reconcile,
}


def _require_runtime_settings(settings: Settings, *, worker: bool) -> None:
    if not settings.sources:
        raise ConfigError("config: sources: at least one source is needed ([sources.<name>])")
    if worker and not settings.stackone.api_key.get_secret_value():
        raise ConfigError("config: stackone.api_key: required to push to StackOne")


def _run(coro: Coroutine[Any, Any, int | None], *, stoppable: bool = False) -> int:
    """Run ``coro`` on uvloop when it is installed (the "fast" extra), else on asyncio.

    ``stoppable``: a one-shot command, which SIGTERM and SIGHUP stop as Ctrl-C does (see
    :func:`_until_stopped`); ``run``/``serve``/``worker`` handle those signals themselves.
    """
    work = _until_stopped(coro) if stoppable else coro
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(work) or 0)
    return int(uvloop.run(work) or 0)


async def _until_stopped(coro: Coroutine[Any, Any, int | None]) -> int | None:
    """Await ``coro``; on SIGTERM or SIGHUP cancel it, so its cleanup runs (connections closed, a
    progress bar taken down), then say so and return ``128 + the signal`` (before: the process died
    where it stood, its RabbitMQ connection cut rather than closed)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in _ONE_SHOT_STOPS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        code = await coro
    except asyncio.CancelledError:
        if not received:
            raise
        code = None
    finally:
        for sig in _ONE_SHOT_STOPS:
            loop.remove_signal_handler(sig)
    if received:
        print(f"lmsbridge: stopped by {received[0].name}", file=sys.stderr)
        return 128 + int(received[0])
    return code


_ONE_SHOT_STOPS = (signal.SIGTERM, signal.SIGHUP)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
