"""The image and compose files keep their promises (read as data: no Docker engine runs in CI).

Dockerfile: the data directory exists and belongs to the runtime user before ``USER``; the health
check is ``lmsbridge check``; ``.dockerignore`` keeps environments, databases and local settings
out of the build context. compose.yaml: valid YAML, a restart policy on every long-running
service, an optional PostgreSQL under a profile that the receiver and the worker are pointed at, and
a settings file that must exist. The settings error an operator then sees is checked on the real
command line.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lmsbridge.settings import ReceiverSettings, WorkerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution, over a parsed document."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(arg)
        return arg if op == ":-" else ""

    return _VARIABLE.sub(substitute, value)


def _compose(env: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # resolves anchors and <<
    resolved: dict[str, Any] = _interpolate(data, env)
    return resolved


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _active(compose: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    return {n: s for n, s in compose["services"].items() if not s.get("profiles") or set(s["profiles"]) & profiles}


def test_dockerfile_owns_its_data_directory_before_user_and_checks_health() -> None:
    """The runtime stage creates and chowns /var/lib/lmsbridge before USER, and HEALTHCHECK runs `lmsbridge check`."""
    text = (DEPLOY / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM ") :]  # the last stage is the image
    lines = [line.strip() for line in runtime.replace("\\\n", " ").splitlines()]
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    setup = " ".join(lines[:user])
    assert re.search(r"mkdir -p [^&]*/var/lib/lmsbridge", setup)
    assert re.search(r"chown [^&]*lmsbridge[^&]* /var/lib/lmsbridge", setup)
    uid = re.search(r"useradd [^&]*--uid (\d+)", setup)
    assert uid is not None
    assert lines[user].split()[1].split(":")[0] in (uid.group(1), "lmsbridge")
    health = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert health.endswith('CMD ["lmsbridge", "check"]')
    assert "WORKDIR /var/lib/lmsbridge" in lines


def test_dockerignore_keeps_the_context_small_and_secret_free_but_keeps_what_the_build_copies() -> None:
    """.dockerignore excludes the venv, git, caches, databases and local settings, never what COPY needs."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for path in (".venv", ".git", ".mypy_cache", "lmsbridge.db", "lmsbridge.toml", "deploy/kubernetes/secrets.env"):
        assert ignored(path), path
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (DEPLOY / "Dockerfile").read_text(), re.M)
    for source in " ".join(copied).split():
        assert (ROOT / source).exists(), source
        assert not ignored(source), source


def test_the_build_stage_builds_a_complete_wheel_from_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """Only the files the Dockerfile COPYs (less .dockerignore) build a wheel with the code, migrations and licence."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    context = tmp_path / "context"
    context.mkdir()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (DEPLOY / "Dockerfile").read_text(), re.M)
    for source in " ".join(copied).split():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=ignore)
        else:
            shutil.copy(ROOT / source, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "out"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "out").glob("lmsbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmsbridge/cli.py" in names
    assert any(n.startswith("lmsbridge/storage/migrations/versions/0001") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the licence is not in the image"


def test_compose_defaults_to_sqlite_on_a_volume_with_restart_policies() -> None:
    """Without a profile: RabbitMQ, receiver and worker, all restarting, SQLite on the data volume, no PostgreSQL."""
    compose = _compose({})
    services = _active(compose, set())
    assert set(services) == {"rabbitmq", "receiver", "worker"}
    for name, service in compose["services"].items():
        assert service["restart"] in ("unless-stopped", "always", "on-failure"), name
    for name in ("receiver", "worker"):
        service = services[name]
        url = service["environment"]["LMSBRIDGE_DATABASE_URL"]
        assert url == "sqlite+aiosqlite:////var/lib/lmsbridge/lmsbridge.db"
        data = next(v for v in service["volumes"] if v["type"] == "volume")
        assert data["target"] == "/var/lib/lmsbridge"
        assert data["source"] in compose["volumes"]
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["required"] is False  # absent without the profile: fine
        assert load_settings(database_url=url, amqp_url=service["environment"]["LMSBRIDGE_AMQP_URL"])
    assert services["receiver"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"]


def test_compose_runs_one_worker_so_an_upgrade_never_overlaps_two_versions() -> None:
    """The worker service runs one container (no replicas or scale above 1, its metrics port published
    on the host): `up -d` with a new image stops it before the new one starts and migrates, so no
    worker of the old version consumes on the migrated schema (README, Upgrading)."""
    worker = _compose({})["services"]["worker"]
    assert worker.get("scale", 1) == 1
    assert worker.get("deploy", {}).get("replicas", 1) == 1
    assert "9108:9108" in worker["ports"]  # a second container could not bind it


def test_compose_stop_grace_outlasts_the_drain() -> None:
    """Compose waits longer after SIGTERM than the worker drains and the receiver finishes requests."""
    for name in ("receiver", "worker"):
        grace = _compose({})["services"][name]["stop_grace_period"]
        seconds = int(grace.removesuffix("s"))
        assert seconds > WorkerSettings().drain_timeout, name
        assert seconds > ReceiverSettings().shutdown_grace, name


def test_compose_postgres_profile_points_receiver_and_worker_at_its_database() -> None:
    """With deploy/postgres.env: the postgres profile runs, and both lmsbridge services use its database."""
    env = _env_file(DEPLOY / "postgres.env")
    compose = _compose(env)
    services = _active(compose, set(env["COMPOSE_PROFILES"].split(",")))
    assert set(services) == {"rabbitmq", "postgres", "receiver", "worker"}
    pg = services["postgres"]["environment"]
    for name in ("receiver", "worker"):
        url = urlsplit(services[name]["environment"]["LMSBRIDGE_DATABASE_URL"])
        assert url.scheme == "postgresql+asyncpg"
        assert (url.hostname, url.username, url.password, url.path) == (
            "postgres",
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            "/" + pg["POSTGRES_DB"],
        )
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]


def test_compose_refuses_to_start_without_the_settings_file() -> None:
    """The settings file is a bind mount compose must not create: a missing file stops `up` naming the path."""
    compose = _compose({})
    for name in ("receiver", "worker"):
        mount = next(v for v in compose["services"][name]["volumes"] if v["type"] == "bind")
        assert mount["target"] == "/etc/lmsbridge/lmsbridge.toml"
        assert mount["bind"]["create_host_path"] is False
        assert mount["read_only"] is True
        assert mount["source"] == "./lmsbridge.toml"  # deploy/lmsbridge.toml, beside compose.yaml
    assert _compose({"LMSBRIDGE_SETTINGS": "/srv/lmsbridge.toml"})["services"]["worker"]["volumes"][0]["source"] == (
        "/srv/lmsbridge.toml"
    )


def test_the_image_command_with_a_missing_settings_file_fails_with_one_line(tmp_path: Path) -> None:
    """What the container runs, `lmsbridge --log-format json worker` with LMSBRIDGE_CONFIG missing: exit 2, one line."""
    missing = tmp_path / "lmsbridge.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMSBRIDGE_")} | {"LMSBRIDGE_CONFIG": str(missing)}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lmsbridge")), "--log-format", "json", "worker"],  # the ENTRYPOINT
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(missing) in lines[0], result.stderr


def test_compose_mounts_a_rabbitmq_config_that_rabbitmq_reads() -> None:
    """RabbitMQ's service mounts deploy/rabbitmq/advanced.config read-only where RabbitMQ reads it, and the
    running RabbitMQ parses the file to the dead-letter worker's 20 s timeout (180 s by default: retries
    held after a restart, README "Shutdown and restarts")."""
    rabbitmq = _compose({})["services"]["rabbitmq"]
    assert "./rabbitmq/advanced.config:/etc/rabbitmq/advanced.config:ro" in rabbitmq["volumes"]
    path = DEPLOY / "rabbitmq" / "advanced.config"
    parsed = subprocess.run(
        ["rabbitmqctl", "eval", f'file:consult("{path}").'], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert parsed.split() == ["{ok,[[{rabbit,[{dead_letter_worker_publisher_confirm_timeout,20000}]}]]}"]
