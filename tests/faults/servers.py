"""Throwaway servers for fault tests (the machine's shared services are never stopped)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, *, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200 (a server that is still starting), or RuntimeError."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


class ThrowawayRedis:
    """A redis-server on a spare port, keeping nothing on disk, that a test may stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("throwaway redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class ThrowawayPgBouncer:
    """PgBouncer in transaction mode on a spare port, in front of the machine's PostgreSQL.

    A small pool (``pool_size`` server connections) so consecutive transactions of one client
    land on different server connections, as they do under load in production. PgBouncer will
    not run as root: it runs as ``postgres`` from a directory of its own.
    """

    def __init__(self, *, database: str, pool_size: int = 3) -> None:
        import pwd
        import tempfile

        self.port = free_port()
        self.database = database
        self.directory = tempfile.mkdtemp(prefix="finn-pgbouncer-")
        owner = pwd.getpwnam("postgres")
        os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.config = os.path.join(self.directory, "pgbouncer.ini")
        self.log = os.path.join(self.directory, "pgbouncer.log")
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(
                "[databases]\n"
                f"{database} = host=127.0.0.1 port=5432 user=postgres dbname={database}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                "auth_type = any\npool_mode = transaction\n"
                f"default_pool_size = {pool_size}\nmin_pool_size = 0\nmax_client_conn = 500\n"
                f"logfile = {self.log}\npidfile = {self.directory}/pgbouncer.pid\n"
                "ignore_startup_parameters = extra_float_digits,options\n"
                "server_reset_query =\nserver_round_robin = 1\n"
            )
        os.chmod(self.config, 0o644)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.process = subprocess.Popen(
            # setpriv execs PgBouncer itself (no intermediate process), so terminate() reaches it.
            ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", binary, self.config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _newest_postgres_bin() -> str:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return found[-1] if found else ""


# The newest PostgreSQL server binaries on the machine ("" without them): throwaway clusters.
PG_BIN = _newest_postgres_bin()


def as_postgres(*args: str, check: bool = True) -> None:
    """Run a PostgreSQL server tool as ``postgres`` (initdb and pg_ctl refuse root).

    No pipes: a (re)started server inherits them and would hold them open.
    """
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=check,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
