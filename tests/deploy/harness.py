"""Run a real Flower deployment (SuperLink, SuperNodes, ``flwr run``) on 127.0.0.1.

Every process is started by :class:`Federation`, in its own session, and
:meth:`Federation.close` ends exactly those: each started PID's process group, then any
descendant PID seen while it ran (Flower's SuperExec detaches into its own session) — always,
also when a test fails. Nothing else is touched: ``FLWR_HOME`` points into ``tmp_path`` (never
``~/.flwr``), telemetry and update checks are off, and SuperLinks never install dependencies
(no network at test time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # flower-superlink, flwr-serverapp, ... live here
READY_TIMEOUT = 60.0  # seconds for a SuperLink to accept connections
RUN_TIMEOUT = 480.0  # seconds for one `flwr run --stream` (2 rounds take ~90 s on 2 cores)
APP_PARTS = ("pyproject.toml", ".gitignore", "fedkd", "strategies")
"""What the FAB of ``flwr run .`` holds, plus the .gitignore its filter reads."""


def stage_app(dest: Path) -> Path:
    """``dest``, holding a copy of the app's files (:data:`APP_PARTS`): ``flwr run`` of it
    sends the FAB ``flwr run .`` in the checkout sends, byte for byte (the FAB test checks),
    without first walking and resolving every file of the checkout (its .venv alone is ~56k
    files: ~10 s of CPU per ``flwr run``, before the filter drops them)."""
    dest.mkdir(parents=True)
    for part in APP_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / part)
    return dest


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (bind port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Certs:
    """A local CA and a SuperLink certificate for 127.0.0.1, from ``scripts/make_certs.sh``."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class Started:
    """One process this fixture started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, int]  # descendant pid -> start time (guards against pid reuse)


class Federation:
    """Starts Flower processes on loopback and ends all of them (see module docstring)."""

    def __init__(self, root: Path, app: Path = REPO) -> None:
        self.root = root
        self.app = app  # what `flwr run` builds its FAB from (the checkout, or stage_app's copy)
        self.home = root / "flwr-home"
        self.logs = root / "logs"
        self.home.mkdir(parents=True)
        self.logs.mkdir()
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.started: list[Started] = []

    # ------------------------------------------------------------------ processes
    def start(self, name: str, args: list[str]) -> Started:
        """Start ``args`` in a new session; output goes to ``logs/<name>.log``."""
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        proc = Started(name, popen, log, {})
        self.started.append(proc)
        return proc

    def superlink(self, port: int, certs: Certs | None = None, auth: bool = False) -> Started:
        """``flower-superlink`` on 127.0.0.1:``port``; returns once it accepts connections."""
        tls = (
            ["--insecure"]
            if certs is None
            else [
                "--ssl-ca-certfile",
                str(certs.ca),
                "--ssl-certfile",
                str(certs.cert),
                "--ssl-keyfile",
                str(certs.key),
            ]
        )
        args = [
            "flower-superlink",
            *tls,
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *(["--enable-supernode-auth"] if auth else []),
        ]
        proc = self.start(f"superlink-{port}", args)
        self._wait_for_port(proc, port)
        return proc

    def supernode(
        self,
        name: str,
        superlink_port: int,
        node_config: str,
        certs: Certs | None = None,
        auth_key: Path | None = None,
    ) -> Started:
        """``flower-supernode`` connecting to the SuperLink, with its own Runtime API port."""
        tls = ["--insecure"] if certs is None else ["--root-certificates", str(certs.ca)]
        key = [] if auth_key is None else ["--auth-supernode-private-key", str(auth_key)]
        args = [
            "flower-supernode",
            *tls,
            *key,
            "--superlink",
            f"127.0.0.1:{superlink_port}",
            "--port",
            str(free_port()),
            "--node-config",
            node_config,
        ]
        return self.start(name, args)

    def connection(self, name: str, port: int, certs: Certs | None = None) -> None:
        """Write the ``flwr`` CLI's SuperLink connection into ``$FLWR_HOME/config.toml``."""
        security = "insecure = true" if certs is None else f'root-certificates = "{certs.ca}"'
        path = self.home / "config.toml"
        existing = path.read_text() if path.exists() else ""
        path.write_text(
            f'{existing}\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\n{security}\n'
        )

    def cli(self, args: list[str], timeout: float, name: str) -> tuple[int, str]:
        """Run a ``flwr`` CLI command to completion (bounded); returns (exit code, output)."""
        proc = self.start(name, args)
        deadline = time.monotonic() + timeout
        while proc.popen.poll() is None and time.monotonic() < deadline:
            self._remember_descendants()  # clientapp/serverapp processes come and go
            time.sleep(1.0)
        if proc.popen.poll() is None:
            self._end(proc)
            return -1, proc.log.read_text(errors="replace") + f"\n[timed out after {timeout}s]"
        return proc.popen.returncode, proc.log.read_text(errors="replace")

    def flwr_run(
        self, connection: str, run_config: str, timeout: float = RUN_TIMEOUT
    ) -> tuple[int, str]:
        """``flwr run <app> <connection> --stream --run-config ...``, as docs/deploy.md does."""
        args = ["flwr", "run", str(self.app), connection, "--stream", "--run-config", run_config]
        return self.cli(args, timeout, "flwr-run")

    def tail(self, lines: int = 40) -> str:
        """The end of every log, for assertion messages."""
        parts = []
        for proc in self.started:
            text = proc.log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {proc.name} (exit {proc.popen.poll()})\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ readiness
    def _wait_for_port(self, proc: Started, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._remember_descendants()
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited early:\n{self.tail()}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(
            f"{proc.name} did not listen on {port} in {READY_TIMEOUT}s\n{self.tail()}"
        )

    # ------------------------------------------------------------------ teardown
    def _remember_descendants(self) -> None:
        """Record every live descendant of the started PIDs (they may detach later)."""
        parents = _process_table()
        for proc in self.started:
            for pid in _descendants(proc.popen.pid, parents):
                start = _start_time(pid)
                if start is not None:
                    proc.seen.setdefault(pid, start)

    def _end(self, proc: Started) -> None:
        """SIGTERM the started PID's process group, then SIGKILL if it lingers; reap it."""
        self._remember_descendants()
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.popen.pid, sig)  # group id == the PID we started (new session)
            except ProcessLookupError:
                break
            try:
                proc.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(proc.popen.pid):
                break

    def close(self) -> None:
        """End every started process, then any remembered descendant still alive. All groups
        get SIGTERM at once and then share one grace period (ending them one by one, each
        with its own wait, added up to seconds per deployment); SIGKILL for what lingers."""
        self._remember_descendants()
        for proc in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)  # group id == PID (new session)
        deadline = time.monotonic() + 10.0
        for proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in reversed(self.started):
            if proc.popen.poll() is None or _group_alive(proc.popen.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5.0)
        deadline = time.monotonic() + 10.0  # detached children watch their parent and exit
        leftovers = {pid: t for p in self.started for pid, t in p.seen.items()}
        while leftovers and time.monotonic() < deadline:
            leftovers = {pid: t for pid, t in leftovers.items() if _start_time(pid) == t}
            time.sleep(0.2)
        for pid, start in leftovers.items():
            if _start_time(pid) == start:  # still the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _process_table() -> dict[int, int]:
    """pid -> parent pid for every process (Linux /proc; empty elsewhere)."""
    table: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return table


def _descendants(root: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _start_time(pid: int) -> int | None:
    """Process start time (clock ticks since boot), None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ----------------------------------------------------------------------------- concurrent runs
Launcher = Callable[[Federation], Any]
LAUNCHERS: dict[str, Launcher] = {}
"""Deployments by name; a test marked ``@pytest.mark.deployment(name)`` gets its outcome."""


def deployment(name: str) -> Callable[[Launcher], Launcher]:
    """Register a launcher: it starts one whole deployment in the :class:`Federation` it is
    given, runs ``flwr run`` to the end and returns what the test asserts on (everything it
    needs from the live processes, since they end as soon as the launcher returns)."""

    def register(launcher: Launcher) -> Launcher:
        LAUNCHERS[name] = launcher
        return launcher

    return register


def run_concurrently(names: list[str], root: Path) -> dict[str, Any]:
    """Run the named launchers at the same time, each in its own :class:`Federation` under
    ``root/<name>``, whose ``flwr run`` ships :func:`stage_app`'s copy of the app; each ends
    as soon as its launcher returns, pass or fail. Returns name -> outcome, or the exception
    its launcher raised. A deployment spends much of its wall time waiting (SuperNodes poll
    every ~3 s; each message waits for a fresh ClientApp process), so side by side the
    deployments fill each other's waits instead of adding them up."""
    if not names:
        return {}
    app = stage_app(root / "app")

    def one(name: str) -> Any:
        fed = Federation(root / name, app)
        try:
            return LAUNCHERS[name](fed)
        except Exception as error:  # re-raised by the test that asked for this deployment
            return error
        finally:
            fed.close()

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def make_certs(out: Path) -> Certs:
    """A CA and a 127.0.0.1 server certificate made by ``scripts/make_certs.sh``."""
    subprocess.run(
        ["bash", str(REPO / "scripts" / "make_certs.sh"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Certs(ca=out / "ca.crt", cert=out / "server.pem", key=out / "server.key")
