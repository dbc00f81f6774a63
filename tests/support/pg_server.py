"""A real PostgreSQL server for the tests: initdb in a temporary folder, on a free port of 127.0.0.1.

Local socket connections (the tests' admin) are trusted; TCP connections (what gearshift uses)
need a password, so the password paths are exercised for real. As root, the server runs as the
`postgres` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from pathlib import Path


def server_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (the newest installed version), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    user = "postgres"

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root, self.bin = root, bin_dir
        self.data, self.sockets = root / "data", root / "run"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chown(root, owner.pw_uid, owner.pw_gid)
        self.sockets.mkdir()
        if self._as:
            os.chown(self.sockets, pwd.getpwnam("postgres").pw_uid, -1)
        self._dbs = 0

    def _pg(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self._as:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._pg(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                 "-w", "-t", "60", "start")

    def stop(self) -> None:
        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)

    def admin(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host=str(self.sockets), port=self.port, user=self.user, dbname="postgres",
                               autocommit=True)

    def create_database(self) -> str:
        """A new empty database; returns its URL (no password: give it through `store.password_env`)."""
        self._dbs += 1
        name = f"gearshift_{self._dbs}"
        with self.admin() as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def accept_connections(self, url: str, accept: bool) -> None:
        """Open or close the database of `url` to connections; closing also ends the open ones (an outage)."""
        name = url.rsplit("/", 1)[1]
        with self.admin() as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if accept else 'false'}")
            if not accept:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
