"""A real `mlflow server` on 127.0.0.1 for tests (SQLite or PostgreSQL backend, served
artifacts), and a fresh PostgreSQL database for it where one is reachable."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_S = 60


# Where the PostgreSQL tests connect (trust auth on the development machine); override with
# ALL_DETECT_POSTGRES_URI=postgresql://user:password@host:port/database. The server gets the
# URI with the driver named (postgresql+psycopg://): SQLAlchemy's default PostgreSQL driver
# differs between releases, and a default that is not installed fails only at server start.
POSTGRES_URI = os.environ.get(
    "ALL_DETECT_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def mlflow_server(backend: Path | str, workdir: Path, workers: int = 1) -> Iterator[str]:
    """Serve `backend` (a SQLite file or a database URI) at 127.0.0.1:<free port>; yields the
    base URL; always stopped with its workers."""
    port = _free_port()
    log_path = workdir / "mlflow_server.log"
    store = backend if isinstance(backend, str) else f"sqlite:///{backend}"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", store),
        *("--artifacts-destination", str(workdir / "served_artifacts")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
    ]
    with log_path.open("wb") as log:
        # Own process group: the server starts worker processes, which must die with it.
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, server, log_path)
        yield url
    finally:
        _stop(server)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of `POSTGRES_URI` (dropped afterwards);
    skips the test with the reason when the driver or the server is absent."""
    psycopg = pytest.importorskip(
        "psycopg", reason="PostgreSQL driver missing: pip install -e '.[postgres]'"
    )
    try:
        admin = psycopg.connect(POSTGRES_URI, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URI} ({str(exc).strip()})")
    name = f"all_detect_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        server_uri = POSTGRES_URI.replace("postgresql://", "postgresql+psycopg://", 1)
        yield server_uri.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited ({server.returncode}):\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {SERVER_START_S}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(server: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
