"""PgBouncer in transaction mode in front of the test PostgreSQL, for ``make fault DATABASE=pgbouncer``."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.faults.conftest import free_port


@contextlib.contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """``database_url`` (postgresql+asyncpg://user@host:port/name) through a PgBouncer of its own,
    pooling in transaction mode, with ``?prepared_statement_cache_size=0`` (see
    ``lmsbridge.storage.engine``). Fails, never skips, when ``pgbouncer`` is not installed."""
    exe = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if exe is None:
        pytest.fail("pgbouncer is not installed: apt-get install pgbouncer")
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="lmsbridge-pgbouncer-"))
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={parts.hostname} port={parts.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = {workdir / "pgbouncer.log"}
"""
    )
    command = [exe, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: it switches to the database's user
        owner = pwd.getpwnam("postgres")
        workdir.chmod(0o755)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command += ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
                pytest.fail(f"pgbouncer did not start (exit {process.poll()}): {log}")
            time.sleep(0.1)
        netloc = f"{user}@127.0.0.1:{port}"
        yield urlunsplit((parts.scheme, netloc, parts.path, "prepared_statement_cache_size=0", ""))
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
