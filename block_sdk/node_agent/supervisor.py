"""Process supervision for a node agent: desired processes in, child processes out.

No Django here: the agent (``apps.clusters.agent``) reads workload rows and hands this module
plain :class:`DesiredProcess` values each tick; :meth:`Supervisor.reconcile` starts, restarts
(with bounded exponential back-off), stops (SIGTERM to the process group, SIGKILL after a
grace period) and reports what it observed.

Every child runs in its own session (so its whole tree can be signalled, and it outlives an
agent crash). Each child's pid and start time are persisted in a state file as soon as it
is spawned; a restarted agent adopts the live processes whose fingerprint matches and
restarts or forgets the rest, so an agent restart neither orphans nor duplicates processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

log = logging.getLogger("aios.node_agent.supervisor")

ALWAYS, ON_FAILURE, NEVER = "always", "on-failure", "never"
# Observed statuses (the same words as apps.clusters.choices.WorkloadStatus).
PENDING, STARTING, RUNNING, BACKOFF = "pending", "starting", "running", "backoff"
EXITED, FAILED, STOPPED = "exited", "failed", "stopped"

MAX_LOG_BYTES = 10 * 1024 * 1024
MARKER_ENV = "AIOS_SUPERVISOR"  # names the agent (cluster/node) that owns a process
WORKLOAD_ENV = "AIOS_WORKLOAD_ID"


@dataclass
class DesiredProcess:
    id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    running: bool = True
    restart_policy: str = ALWAYS
    max_restarts: int = 0  # 0 = unlimited
    stop_grace_s: float = 5.0
    spec_hash: str = ""  # a change restarts the process with the new spec
    remove: bool = False  # stop it, then forget it


@dataclass
class Observed:
    id: str
    status: str
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    last_error: str = ""
    started_at: float | None = None  # wall-clock seconds
    finished_at: float | None = None
    next_restart_at: float | None = None
    log_path: str = ""
    gone: bool = False  # no process and nothing left to do (a removal is complete)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Proc:
    id: str
    log_path: str
    status: str = PENDING
    pid: int | None = None
    create_time: float | None = None
    popen: subprocess.Popen | None = None
    spec_hash: str = ""
    started_mono: float | None = None
    started_wall: float | None = None
    finished_wall: float | None = None
    restarts: int = 0
    consecutive_failures: int = 0
    exit_code: int | None = None
    last_error: str = ""
    next_restart_mono: float | None = None
    stop_deadline: float | None = None
    stop_reason: str = ""  # "stop" | "restart" | "remove"
    killed: bool = False

    def observed(self) -> Observed:
        next_wall = None
        if self.next_restart_mono is not None:
            next_wall = time.time() + max(0.0, self.next_restart_mono - time.monotonic())
        return Observed(
            id=self.id,
            status=self.status,
            pid=self.pid,
            exit_code=self.exit_code,
            restarts=self.restarts,
            last_error=self.last_error,
            started_at=self.started_wall,
            finished_at=self.finished_wall,
            next_restart_at=next_wall,
            log_path=self.log_path,
        )


class AgentLockHeld(RuntimeError):
    """Another agent already runs for this node."""


def acquire_lock(path: Path) -> IO[str]:
    """An exclusive lock held for the agent's lifetime (released by the kernel if it dies).

    The file is opened close-on-exec, so children never inherit (and keep) the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise AgentLockHeld(f"another node agent holds {path}") from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _process_matches(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid`` if it is the one we started (same start time), else None."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return None  # the pid was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _signal_tree(pid: int, sig: int) -> None:
    """Signal the child's process group (its whole tree); fall back to the pid alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class Supervisor:
    def __init__(
        self,
        state_file: Path,
        log_dir: Path,
        *,
        marker: str,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 10.0,
        starting_s: float = 1.0,
    ):
        self.state_file = Path(state_file)
        self.log_dir = Path(log_dir)
        self.marker = marker
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.starting_s = starting_s
        self.procs: dict[str, _Proc] = {}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            pid_id: {
                "pid": p.pid,
                "create_time": p.create_time,
                "spec_hash": p.spec_hash,
                "restarts": p.restarts,
                "started_wall": p.started_wall,
                "log_path": p.log_path,
            }
            for pid_id, p in self.procs.items()
            if p.pid is not None and p.status in (STARTING, RUNNING)
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)

    def load_and_adopt(self) -> dict[str, str]:
        """Adopt the processes a previous agent left running; returns ``{id: outcome}``."""
        outcomes: dict[str, str] = {}
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {}
        for wid, entry in state.items():
            pid = entry.get("pid")
            proc = _Proc(id=wid, log_path=entry.get("log_path") or self._log_path(wid))
            proc.spec_hash = entry.get("spec_hash", "")
            proc.restarts = int(entry.get("restarts", 0))
            live = _process_matches(pid, entry.get("create_time")) if pid else None
            if live is not None:
                proc.pid, proc.create_time = pid, entry.get("create_time")
                proc.started_wall = entry.get("started_wall")
                proc.started_mono = time.monotonic() - max(
                    0.0, time.time() - (proc.started_wall or time.time())
                )
                proc.status = RUNNING
                outcomes[wid] = "adopted"
            else:
                # It died while no agent watched it: a crash with an unknown exit code.
                proc.status = BACKOFF
                proc.consecutive_failures = 1
                proc.next_restart_mono = time.monotonic()
                proc.last_error = "exited while the node agent was not running (code unknown)"
                proc.finished_wall = time.time()
                outcomes[wid] = "lost"
            self.procs[wid] = proc
        outcomes.update(self._kill_unknown_orphans())
        self.save()
        log.info("event=agent_adopt outcomes=%s", outcomes)
        return outcomes

    def _kill_unknown_orphans(self) -> dict[str, str]:
        """Processes marked as ours that the state file does not know (an agent that died
        between spawning and saving): they would be duplicates, so they go."""
        known = {p.pid for p in self.procs.values() if p.pid}
        outcomes = {}
        for proc in psutil.process_iter(["pid"]):
            if proc.pid in known or proc.pid == os.getpid():
                continue
            try:
                env = proc.environ()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
                continue
            if env.get(MARKER_ENV) != self.marker:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            wid = env.get(WORKLOAD_ENV, f"pid-{proc.pid}")
            _signal_tree(proc.pid, signal.SIGKILL)
            outcomes[f"orphan:{wid}:{proc.pid}"] = "killed"
        return outcomes

    # -- the loop body -------------------------------------------------------------------------
    def reconcile(self, desired: Iterable[DesiredProcess]) -> dict[str, Observed]:
        desired_by_id = {d.id: d for d in desired}
        changed = False
        now = time.monotonic()
        for proc in list(self.procs.values()):
            changed |= self._poll(proc, desired_by_id.get(proc.id), now)
        observed: dict[str, Observed] = {}
        for wid, want in desired_by_id.items():
            proc = self.procs.get(wid)
            if proc is None:
                proc = self.procs[wid] = _Proc(id=wid, log_path=self._log_path(wid))
                proc.spec_hash = want.spec_hash
            changed |= self._drive(proc, want, now)
            obs = proc.observed()
            if want.remove and proc.pid is None and proc.status in (STOPPED, EXITED, FAILED):
                obs.gone = True
            observed[wid] = obs
        # Rows that vanished: stop their processes, forget them once gone.
        for wid in [w for w in self.procs if w not in desired_by_id]:
            proc = self.procs[wid]
            if proc.pid is None:
                del self.procs[wid]
                changed = True
            else:
                changed |= self._stop(proc, "remove", grace_s=5.0, now=now)
        for wid, obs in observed.items():
            if obs.gone:
                self.procs.pop(wid, None)
        if changed:
            self.save()
        return observed

    def _poll(self, proc: _Proc, want: DesiredProcess | None, now: float) -> bool:
        """Notice an exit; decide restart/back-off; escalate a slow stop to SIGKILL."""
        if proc.pid is None:
            return False
        code: int | None
        if proc.popen is not None:
            code = proc.popen.poll()
            alive = code is None
        else:
            alive = _process_matches(proc.pid, proc.create_time) is not None
            code = None  # an adopted process is not our child: its exit code is lost
        if alive:
            if proc.stop_deadline is not None and now >= proc.stop_deadline and not proc.killed:
                _signal_tree(proc.pid, signal.SIGKILL)
                proc.killed = True
                log.warning("event=workload_sigkill workload_id=%s pid=%s", proc.id, proc.pid)
            if proc.status == STARTING and now - (proc.started_mono or now) >= self.starting_s:
                proc.status = RUNNING
                return True
            return False
        # The process is gone. Its group (pgid = its pid: it was a session leader) may still
        # hold grandchildren; they must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.exit_code = code
        proc.finished_wall = time.time()
        proc.pid = proc.create_time = proc.popen = None
        stop_reason, proc.stop_reason = proc.stop_reason, ""
        proc.stop_deadline, proc.killed = None, False
        if stop_reason in ("stop", "remove"):
            proc.status = STOPPED
            log.info("event=workload_stopped workload_id=%s code=%s", proc.id, code)
            return True
        if stop_reason == "restart":
            proc.status = PENDING  # started again right away with the new spec
            proc.next_restart_mono = None
            return True
        ran_for = now - (proc.started_mono or now)
        proc.consecutive_failures = (
            1 if ran_for >= self.stable_after_s else (proc.consecutive_failures + 1)
        )
        failed = code != 0  # None (unknown) counts as a failure
        proc.last_error = (
            f"exited with code {code}" if code is not None else "exited (code unknown)"
        )
        policy = want.restart_policy if want else NEVER
        limit = want.max_restarts if want else 0
        restart = policy == ALWAYS or (policy == ON_FAILURE and failed)
        if restart and limit and proc.restarts >= limit:
            restart = False
            proc.last_error += f"; not restarted: {limit} restarts reached"
        if restart:
            delay = min(
                self.backoff_max_s, self.backoff_base_s * 2 ** (proc.consecutive_failures - 1)
            )
            proc.status = BACKOFF
            proc.next_restart_mono = now + delay
            log.info(
                "event=workload_exit workload_id=%s code=%s restart_in_s=%.2f",
                proc.id,
                code,
                delay,
            )
        else:
            proc.status = FAILED if failed else EXITED
            proc.next_restart_mono = None
            log.info("event=workload_exit workload_id=%s code=%s final=1", proc.id, code)
        return True

    def _drive(self, proc: _Proc, want: DesiredProcess, now: float) -> bool:
        if want.remove or not want.running:
            if proc.pid is not None:
                return self._stop(proc, "remove" if want.remove else "stop", want.stop_grace_s, now)
            if proc.status not in (STOPPED, EXITED, FAILED):
                proc.status = STOPPED
                proc.next_restart_mono = None
                return True
            return False
        spec_changed = want.spec_hash != proc.spec_hash
        if proc.pid is not None:
            if spec_changed and proc.stop_reason != "restart":
                log.info("event=workload_spec_changed workload_id=%s", proc.id)
                return self._stop(proc, "restart", want.stop_grace_s, now)
            return False
        if proc.status == BACKOFF and not spec_changed:
            if proc.next_restart_mono is not None and now < proc.next_restart_mono:
                return False
            proc.restarts += 1
        elif proc.status in (EXITED, FAILED) and not spec_changed:
            return False  # final; a spec change (generation bump) starts it again
        elif spec_changed:
            proc.consecutive_failures = 0
        proc.spec_hash = want.spec_hash
        self._start(proc, want)
        return True

    def _start(self, proc: _Proc, want: DesiredProcess) -> None:
        path = Path(proc.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if path.stat().st_size > MAX_LOG_BYTES:
                os.replace(path, path.with_suffix(path.suffix + ".1"))
        env = {**want.env, MARKER_ENV: self.marker, WORKLOAD_ENV: want.id}
        try:
            with open(path, "ab") as logf:
                logf.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
                logf.flush()
                popen = subprocess.Popen(
                    want.argv,
                    cwd=want.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group; survives an agent crash
                    close_fds=True,
                )
        except OSError as exc:
            proc.status = FAILED
            proc.last_error = f"cannot start: {exc}"
            proc.pid = None
            log.error("event=workload_start_failed workload_id=%s error=%r", proc.id, exc)
            return
        proc.popen = popen
        proc.pid = popen.pid
        try:
            proc.create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            proc.create_time = None
        proc.status = STARTING
        proc.started_mono = time.monotonic()
        proc.started_wall = time.time()
        proc.exit_code = None
        proc.next_restart_mono = None
        self.save()  # persist the fingerprint before anything else can go wrong
        log.info("event=workload_started workload_id=%s pid=%s", proc.id, proc.pid)

    def _stop(self, proc: _Proc, reason: str, grace_s: float, now: float) -> bool:
        if proc.pid is None:
            return False
        if proc.stop_deadline is None:
            _signal_tree(proc.pid, signal.SIGTERM)
            proc.stop_deadline = now + max(0.1, grace_s)
            proc.stop_reason = reason
            log.info("event=workload_sigterm workload_id=%s pid=%s", proc.id, proc.pid)
            return True
        if reason == "remove" and proc.stop_reason != "remove":
            proc.stop_reason = "remove"
            return True
        return False

    def _log_path(self, wid: str) -> str:
        return str(self.log_dir / f"{wid}.log")

    # -- shutdown ----------------------------------------------------------------------------
    def stop_all(self, grace_s: float = 5.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``grace_s``) and wait for them."""
        now = time.monotonic()
        for proc in self.procs.values():
            if proc.pid is not None:
                self._stop(proc, "stop", grace_s, now)
        deadline = now + grace_s + 2.0
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                self._poll(proc, None, time.monotonic())
            if all(p.pid is None for p in self.procs.values()):
                break
            time.sleep(0.05)
        self.save()

    def running_pids(self) -> dict[str, int]:
        return {wid: p.pid for wid, p in self.procs.items() if p.pid is not None}
