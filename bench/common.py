"""Helpers shared by the benchmark scripts: throw-away homes, machine facts, timing, output.

The benchmarks are plain scripts (``python bench/<name>.py``); nothing here is imported by
the package or by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cryptography
import sqlalchemy
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import URL, create_engine, make_url, select, text

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.custody.home import read_passphrase
from iotsec.store import models

T = TypeVar("T")


# --------------------------------------------------------------------------- environment


def settings_for(home: Path) -> Settings:
    """Settings for an explicit home, independent of any ``IOTSEC_*`` in the environment."""
    return Settings(home=home, database_url=None)


@contextlib.contextmanager
def fresh_database(base: URL, prefix: str) -> Iterator[tuple[str, str]]:
    """A new database on ``base``'s server, dropped afterwards: its name and URL."""
    name = f"{prefix}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield name, base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def home_settings(home: Path) -> Settings:
    """The settings of the library's calls over ``home``: its store is the database the
    servers use (``IOTSEC_DATABASE_URL``, set by :func:`on_store`), or the home's SQLite file."""
    return Settings(home=home, database_url=os.environ.get("IOTSEC_DATABASE_URL") or None)


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", metavar="URL",
                        help="ours on PostgreSQL: a fresh database on this server (dropped "
                        "afterwards) instead of the home's SQLite file")


def on_store(database_url: str | None, prefix: str, run: Callable[[], int]) -> int:
    """``run()`` with ours on a fresh database of ``database_url``'s server (named after
    ``prefix``, dropped afterwards; ``IOTSEC_DATABASE_URL`` for the servers and
    :func:`home_settings`), or on the home's SQLite file when it is None."""
    if not database_url:
        os.environ.pop("IOTSEC_DATABASE_URL", None)
        return run()
    with fresh_database(make_url(database_url), prefix) as (_name, url):
        os.environ["IOTSEC_DATABASE_URL"] = url
        try:
            return run()
        finally:
            del os.environ["IOTSEC_DATABASE_URL"]


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"# kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def fresh_runtime(prefix: str, keep: bool = False) -> Iterator[Runtime]:
    """``iotsec init`` in a temporary home, then a runtime over it."""
    with scratch_dir(prefix, keep) as tmp:
        home = tmp / "home"
        init_home(settings_for(home), store_passphrase=True)
        rt = open_runtime(settings_for(home))
        try:
            yield rt
        finally:
            rt.close()


def issuing_private_key(rt: Runtime) -> ec.EllipticCurvePrivateKey:
    """The issuing CA's private key, decrypted from the home's key file (for references)."""
    with rt.engine.connect() as conn:
        label = conn.execute(
            select(models.authorities.c.key_label)
            .where(models.authorities.c.role == "issuing", models.authorities.c.active.is_(True))
        ).scalar_one()
    pem = (rt.settings.keys_dir / f"{label}.key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=read_passphrase(rt.settings))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the benchmarks expect an ECDSA issuing CA")
    return key


def pin_to_one_core() -> str:
    """Run this process (and the children it starts) on a single CPU; return which."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _command_output(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def source_revision() -> str:
    """The commit of the checkout the benchmark ran against, and whether src/ differed."""
    root = Path(__file__).resolve().parent.parent
    head = _command_output("git", "-C", str(root), "rev-parse", "--short", "HEAD")
    if head == "unavailable":
        return head
    dirty = _command_output("git", "-C", str(root), "status", "--porcelain", "--", "src")
    return f"{head} (with uncommitted changes in src/)" if dirty else head


def machine_info() -> dict[str, str]:
    import iotsec

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _command_output("uname", "-m"),
        "nproc": _command_output("nproc"),
        "cpu": _cpu_model(),
        "memory": _memory_gib(),
        "python": platform.python_version(),
        "openssl (CLI)": _command_output("openssl", "version"),
        "openssl (linked by cryptography)": backend.openssl_version_text(),
        "cryptography": cryptography.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "iotsec source": source_revision(),
        "iotsec imported from": str(Path(iotsec.__file__).parent),
    }


# --------------------------------------------------------------------------- measuring


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` once; return its result and the wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def rss_now_mib() -> float:
    """This process's current resident set size (VmRSS), MiB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_self_mib() -> float:
    """This process's peak RSS so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class ChildRun:
    """A finished child process: its wall time, its own peak RSS, and what it printed."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


# Linux keeps ru_maxrss across fork and exec: a child started straight from a large
# benchmark process reports *that* process's RSS as its own peak. So children are started
# from this small launcher (a fresh interpreter, a few MB), which spawns the command and
# reads that child's own rusage with wait4.
_LAUNCHER = """
import json, os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(result, "w") as fh:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss,
               "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "code": os.waitstatus_to_exitcode(status)}, fh)
"""


def run_child(cmd: Sequence[str], *, cwd: Path | None = None) -> ChildRun:
    """Run ``cmd``; return its wall time and *its own* peak RSS (see ``_LAUNCHER``)."""
    with tempfile.TemporaryDirectory(prefix="iotsec-bench-child-") as tmp:
        result = Path(tmp) / "rusage.json"
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result),
                               *cmd], cwd=cwd, capture_output=True, text=True, check=False)
        if not result.exists():
            raise RuntimeError(f"the launcher failed: {proc.stderr[-2000:]}")
        data = json.loads(result.read_text())
    return ChildRun(seconds=data["seconds"], cpu_seconds=data["cpu_seconds"],
                    peak_rss_mib=data["maxrss_kib"] / 1024,
                    returncode=data["code"], stdout=proc.stdout, stderr=proc.stderr)


# --------------------------------------------------------------------------- reporting


@dataclass
class Row:
    """One line of a result table."""

    name: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Report:
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, note: str = "") -> None:
        self.rows.append(Row(name, value, unit, note))

    def check(self, text: str) -> None:
        self.checks.append(text)
        print(f"# {text}", flush=True)

    def print(self) -> None:
        print()
        print(f"## {self.title}")
        for key, value in self.params.items():
            print(f"- {key}: {value}")
        width = max((len(r.name) for r in self.rows), default=10)
        print()
        for r in self.rows:
            note = f"  ({r.note})" if r.note else ""
            print(f"{r.name:<{width}}  {fmt(r.value):>12} {r.unit}{note}")
        if self.checks:
            print()
            for text in self.checks:
                print(f"- {text}")
        print(flush=True)

    def write_json(self, path: Path | None, machine: dict[str, str]) -> None:
        if path is None:
            return
        data = {"machine": machine, "title": self.title, "params": self.params,
                "rows": [asdict(r) for r in self.rows], "checks": self.checks}
        path.write_text(json.dumps(data, indent=2) + "\n")


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_machine(machine: dict[str, str]) -> None:
    print("# machine")
    for key, value in machine.items():
        print(f"#   {key}: {value}")
    print(flush=True)


def seed_fleet_rows(conn: sqlalchemy.Connection, devices: int, certificates: int,
                    now: int) -> None:
    """Within ``conn``'s PostgreSQL transaction: ``devices`` devices ``dev-0000001``... (1 %
    disabled, every second one in group ``g1``, which must exist, every second one with
    ``site=north``) and one certificate for each of the first ``certificates``, expiring
    over the next 400 days, 1 % revoked; all in SQL (``generate_series``)."""
    text = sqlalchemy.text
    conn.execute(text(
        "INSERT INTO devices (id, state, attributes, created_at, updated_at) "
        "SELECT 'dev-' || lpad(i::text, 7, '0'), "
        "CASE WHEN i % 100 = 0 THEN 'disabled' ELSE 'active' END, "
        "CASE WHEN i % 2 = 0 THEN '{\"site\": \"north\"}' ELSE '{}' END, :now, :now "
        "FROM generate_series(1, :n) i"), {"n": devices, "now": now})
    conn.execute(text(
        "INSERT INTO device_groups (device_id, group_name) "
        "SELECT 'dev-' || lpad(i::text, 7, '0'), 'g1' FROM generate_series(1, :n, 2) i"),
        {"n": devices})
    ca = conn.execute(text("SELECT id FROM authorities WHERE role = 'issuing' "
                           "ORDER BY id DESC LIMIT 1")).scalar_one()
    conn.execute(text(
        "INSERT INTO certificates (serial, authority_id, device_id, kind, profile, subject,"
        " not_before, not_after, sha256, der, created_at, revoked_at, revocation_reason) "
        "SELECT upper(md5(i::text)), :ca, 'dev-' || lpad(i::text, 7, '0'), 'device', "
        "'device', 'CN=dev-' || i, :now, :now + (i % 400) * 86400 + 3600, "
        "md5(i::text) || md5((i + 1)::text), '\\x00'::bytea, :now, "
        "CASE WHEN i % 100 = 1 THEN :now - i ELSE NULL END, "
        "CASE WHEN i % 100 = 1 THEN 0 ELSE NULL END "
        "FROM generate_series(1, :n) i"), {"n": certificates, "now": now, "ca": ca})
