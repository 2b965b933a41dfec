"""Run one submission's code in its own limited process and call its functions from the grader.

The grader never runs submitted code itself. `Sandbox.start` forks a child (from a forkserver that has torch and
numpy imported already) which puts itself in a new session, applies the memory (RLIMIT_AS), CPU-time (RLIMIT_CPU)
and file-size (RLIMIT_FSIZE) limits, moves into an empty working directory, runs the notebook's code cells as plain
Python (an error, `sys.exit()` or `MemoryError` in a cell is recorded and the next cell runs), then answers calls
`name(*args)` from the grader over a pipe. Only JSON crosses the pipe (see `wire`). Wall-clock limits are enforced
by the grader, which kills the child's whole process group.
"""

import builtins
import ctypes
import importlib.machinery
import multiprocessing
import os
import re
import resource
import signal
import sys
import tempfile
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import wire

SIGNALS = {signal.SIGXCPU: "the CPU-time limit", signal.SIGKILL: "a kill (wall-clock limit or memory)",
           signal.SIGSEGV: "a segmentation fault", signal.SIGXFSZ: "the file-size limit"}


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: notebook_s for running all cells, call_s per function call (wall clock, seconds),
    cpu_s of CPU time for the whole process, memory_mb of address space, output_mb of files written."""

    notebook_s: float = 60.0
    call_s: float = 20.0
    cpu_s: int = 120
    memory_mb: int = 3072
    output_mb: int = 16


@dataclass(frozen=True)
class Private:
    """Paths the submission must not see (each covered by an empty tmpfs, e.g. the tests, /tmp) or change (bound
    read-only, e.g. the repository and the Python installation), where Linux user namespaces allow it."""

    hide: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    enabled: bool = True


class SandboxError(RuntimeError):
    """The submission's process stopped (time, memory, crash) or sent something that is not a valid answer."""


class Sandbox:
    """One submission's process. `start()` runs the cells; `call(name, args, kwargs)` calls a function defined there."""

    def __init__(self, cells: list[str], workdir: str, log_path: str, limits: Limits, names: list[str],
                 private: Private = Private()) -> None:
        self.cells, self.workdir, self.log_path, self.limits, self.names = cells, workdir, log_path, limits, names
        self.private = private
        self.dead: str | None = None
        self.process: multiprocessing.Process | None = None

    def start(self) -> dict:
        """Run the notebook; returns {"errors": [[cell, error type], ...], "names": {name: kind}}."""
        ctx = multiprocessing.get_context("forkserver")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=serve, daemon=True,
                                   args=(child_conn, self.cells, self.workdir, self.log_path, self.limits, self.names,
                                         self.private))
        self.process.start()
        child_conn.close()
        return self._receive(self.limits.notebook_s, "running the notebook")

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        """name(*args, **kwargs) in the submission's process; raises SandboxError or the error it raised there."""
        if self.dead:
            raise SandboxError(self.dead)
        try:
            self.conn.send_bytes(wire.dumps({"call": name, "args": wire.encode(list(args)),
                                             "kwargs": wire.encode(kwargs)}))
        except (OSError, ValueError) as e:
            raise SandboxError(f"could not send the call to {name}(): {e}") from None
        reply = self._receive(self.limits.call_s, f"in {name}()")
        if "error" in reply:
            raise _exception(str(reply.get("type"))[:60], str(reply["error"])[:300])
        try:
            return wire.decode(reply.get("value"))
        except (ValueError, TypeError, RuntimeError, OverflowError, RecursionError) as e:
            raise SandboxError(f"{name}() returned something that is not a value: {e}") from None

    def _receive(self, timeout: float, during: str) -> dict:
        try:
            if not self.conn.poll(timeout):
                self._stop(f"wall-clock limit: stopped after {timeout:g} s {during}")
            return wire.loads(self.conn.recv_bytes(wire.MAX_BYTES))
        except SandboxError:
            raise
        except (EOFError, OSError):
            self.process.join(2)
            code = self.process.exitcode
            why = f"exit code {code}" if code is None or code >= 0 else SIGNALS.get(-code, f"signal {-code}")
            self._stop(f"the notebook's process ended ({why}) {during}")
        except (ValueError, RecursionError):
            self._stop(f"malformed message from the notebook's process {during}")

    def _stop(self, reason: str) -> None:
        self.dead = reason
        self.close()
        raise SandboxError(reason)

    def close(self) -> None:
        """Kill the child and everything it started (its process group)."""
        if self.process is not None and self.process.pid is not None:
            for target in (lambda: os.killpg(self.process.pid, signal.SIGKILL), self.process.kill):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
            self.process.join(5)
            self.conn.close()
            self.process = None


class SubmissionRaised(Exception):
    """The submitted function raised an exception (its type and message are in the text)."""


def _exception(kind: str, message: str) -> Exception:
    """The submission's exception, rebuilt as the built-in class of that name (so tests can expect ValueError)."""
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, SandboxError):
        return cls(message)
    return SubmissionRaised(f"{kind}: {message}")


_CLONE_NEWUSER, _CLONE_NEWNS = 0x10000000, 0x00020000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _isolate(private: Private) -> str:
    """Enter a user + mount namespace, hide and freeze paths, then enter a second user namespace so that the
    submission cannot unmount them. Returns a one-line report (isolation is skipped where the kernel forbids it)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret: int, what: str) -> None:
        if ret != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    def enter(inside: tuple[int, int], outside: tuple[int, int]) -> None:
        check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{inside[0]} {outside[0]} 1"),
                           ("gid_map", f"{inside[1]} {outside[1]} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)

    ids = (os.getuid(), os.getgid())
    try:
        enter((0, 0), ids)
        check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make mounts private")
        for path in private.hide:
            if os.path.isdir(path):
                check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"size=64m,mode=1777"), f"hide {path}")
        for path in private.readonly:
            if os.path.isdir(path):
                check(libc.mount(path.encode(), path.encode(), None, _MS_BIND | _MS_REC, None), f"bind {path}")
                check(libc.mount(None, path.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None), f"ro {path}")
        enter(ids, (0, 0))
    except OSError as e:
        return f"filesystem isolation: off ({e})"
    return f"filesystem isolation: on (hidden {', '.join(private.hide)}; read-only {', '.join(private.readonly)})"


def _limit(kind: int, value: int) -> None:
    hard = resource.getrlimit(kind)[1]
    resource.setrlimit(kind, (value, value if hard == resource.RLIM_INFINITY else min(value, hard)))


def _otter_stub() -> types.ModuleType:
    """Stands in for otter inside the sandbox: grader.check(...) does nothing there (the grader runs every test)."""
    stub = types.ModuleType("otter")
    stub.__spec__ = importlib.machinery.ModuleSpec("otter", None)
    stub.Notebook = lambda *a, **k: types.SimpleNamespace(check=lambda *a, **k: None, check_all=lambda: None,
                                                          export=lambda *a, **k: None)
    return stub


def serve(conn: Connection, cells: list[str], workdir: str, log_path: str, limits: Limits, names: list[str],
          private: Private) -> None:
    """Child side: isolate and limit yourself, run the cells, then answer calls until the grader hangs up."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    report = _isolate(private) if private.enabled else "filesystem isolation: off (--no-namespaces)"
    if report.startswith("filesystem isolation: on"):
        workdir = tempfile.mkdtemp(prefix="submission-")  # in the private /tmp
    _limit(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    _limit(resource.RLIMIT_CPU, limits.cpu_s)
    _limit(resource.RLIMIT_FSIZE, limits.output_mb * 2**20)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit raises OSError instead of killing us
    os.dup2(log, 1)
    os.dup2(log, 2)
    print(f"[grader] {report}", flush=True)
    os.chdir(workdir)
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    os.environ.clear()
    os.environ.update(keep, HOME=workdir, TMPDIR=workdir, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    sys.path.insert(0, workdir)
    sys.modules["otter"] = _otter_stub()
    import torch

    torch.set_num_threads(1)
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    errors = []
    for i, source in enumerate(cells):
        try:
            exec(compile(source, f"<cell {i}>", "exec"), ns)
        except BaseException as e:  # noqa: B036 - sys.exit() and KeyboardInterrupt in a cell must not end grading
            errors.append([i, re.sub(r"[^\w.]", "", type(e).__name__)[:60]])
    sys.stdout.flush()
    found = {n: "missing" if n not in ns else "function" if callable(ns[n]) else "value" for n in names}
    conn.send_bytes(wire.dumps({"errors": errors, "names": found}))
    while True:
        try:
            request = wire.loads(conn.recv_bytes(wire.MAX_BYTES))
        except EOFError:
            return
        try:
            target = ns[request["call"]]
            args, kwargs = wire.decode(request["args"]), wire.decode(request["kwargs"])
            value = target(*args, **kwargs) if args or kwargs or callable(target) else target
            reply = wire.dumps({"value": wire.encode(value)})
        except BaseException as e:  # noqa: B036 - whatever the submission raises is reported, not fatal
            reply = wire.dumps({"error": str(e)[:200], "type": type(e).__name__})
        conn.send_bytes(reply)
