"""The stack's daemons as processes.

Every daemon runs detached in its own session, so its process group (a runner and its
workers, a worker's ffmpeg) can be stopped as a whole. It logs to `<state>/log/<name>.log`
and its pid is recorded in `<state>/run/<name>.json` together with its command line, so a
recycled pid is never mistaken for ours. Processes are read with psutil.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack.component import StackError, StackPaths


def command_line(pid: int) -> list[str]:
    """The argument list of a process, [] when there is no such process (or it is a zombie)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def describe(pid: int) -> str:
    """A process's state and command line, for error messages."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return f"{process.status()}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error as err:
        return type(err).__name__


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, the leader first."""
    found = []
    for process in psutil.process_iter(["status"]):
        if process.info["status"] in (psutil.STATUS_ZOMBIE, None):
            continue
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == pgid:
                found.append(process.pid)
    return sorted(found, key=lambda pid: (pid != pgid, pid))


def find_processes(prefixes: list[list[str]]) -> dict[int, list[str]]:
    """Live processes whose command line starts with one of `prefixes`: {pid: command line}."""
    found = {}
    for process in psutil.process_iter(["cmdline", "status"]):
        cmd = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(cmd[: len(p)] == p for p in prefixes):
            found[process.pid] = cmd
    return found


def run_logged(cmd: list[str], log: Path, env: dict[str, str], timeout: float) -> None:
    """Run a one-shot program (a setup script) to completion, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} run: {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StackError(f"{log.stem} timed out after {timeout:.0f} s", log=log) from None
    if done.returncode != 0:
        raise StackError(f"{log.stem} failed (exit {done.returncode})", log=log)


class Daemons:
    """The daemons one stack started: spawn, find by recorded pid, stop by process group."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        #: Our own children, polled so that they are reaped (and their exit status known).
        self.children: dict[int, subprocess.Popen] = {}

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> int:
        """Start `cmd` detached, log to `<log>/<name>.log`, record its pid; returns the pid."""
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        with self.paths.log_path(name).open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        self.children[process.pid] = process
        # Later checks compare the process's command line with the recorded one, so that a
        # recycled pid is never taken for ours. Popen returns once exec has begun, but the
        # kernel sets up the new argv a moment later: until then it reads empty. Wait for it.
        seen: list[str] = []

        def argv_in_place() -> bool:
            seen[:] = command_line(process.pid)
            return seen == cmd or process.poll() is not None

        wait_for(argv_in_place, timeout_s=5.0, interval_s=0.005)
        pid_file = self.paths.pid_file(name)
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": process.pid, "cmd": seen or cmd}) + "\n")
        tmp.replace(pid_file)
        return process.pid

    def recorded(self, name: str) -> tuple[int, list[str]] | None:
        """(pid, command line) from the pid file, None without one."""
        try:
            data = json.loads(self.paths.pid_file(name).read_text())
            return int(data["pid"]), list(data["cmd"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def forget(self, name: str) -> None:
        self.paths.pid_file(name).unlink(missing_ok=True)

    def live_pid(self, name: str) -> int | None:
        """The recorded pid if that process is alive and still runs the recorded command."""
        recorded = self.recorded(name)
        if recorded is None:
            return None
        pid, cmd = recorded
        child = self.children.get(pid)
        if child is not None and child.poll() is not None:
            return None
        return pid if command_line(pid) == cmd else None

    def exit_status(self, pid: int) -> int | None:
        """Exit status of one of our children, None while it runs (or when it is not ours)."""
        child = self.children.get(pid)
        return child.poll() if child is not None else None

    def _group_alive(self, pid: int) -> bool:
        self.exit_status(pid)  # reaps our own child, which would otherwise linger as a zombie
        return bool(group_pids(pid))

    def terminate(self, pid: int, grace: float) -> bool:
        """TERM the process group led by `pid`, wait up to `grace` seconds, then KILL what is
        left. True when TERM was enough. `grace <= 0` sends KILL alone, like a crash (no
        handler runs)."""
        clean = True
        steps = ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)) if grace > 0 else ((signal.SIGKILL, 5.0),)
        for sig, wait_s in steps:
            if not group_pids(pid):
                break
            clean = sig == signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            wait_for(lambda: not self._group_alive(pid), timeout_s=wait_s, interval_s=0.05)
        child = self.children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        return clean
