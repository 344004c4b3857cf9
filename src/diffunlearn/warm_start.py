"""Warm start: run a Snakemake script job in a fork of a process that has already imported torch and diffusers.

Every ``script:`` job is a fresh Python process, and most of the pipeline's jobs spend longer importing torch,
diffusers and the package (5 to 10 CPU seconds) than working. On a local run, the first job starts a warm
process (``python -m diffunlearn.warm_start serve``) that imports those modules once and then only forks:
each later job's own process (the one Snakemake started) sends its script, working directory, environment,
arguments and standard streams to it over a Unix socket, a forked child runs the script exactly as Python would
have, and the job's process exits with the child's exit status. The warm process never computes anything
itself (no threads, no CUDA), so every child starts from a clean, freshly imported state.

What stays as it was: the job's outputs, log and exit status; a signal sent to the job's process (SIGTERM,
SIGINT, SIGHUP) reaches the child; a job process killed outright (SIGKILL) takes its child with it, since the
warm process kills a child whose job process has gone. What changes: Snakemake's ``benchmark:`` files measure
the job's own process tree, so their CPU and memory columns no longer include the work (the wall time still
does); each job's log carries its CPU seconds (the ``done:`` line).

When it is off (the job runs in its own process, as before): ``DIFFUNLEARN_WARM_START=0``; inside a SLURM job;
on a machine with an NVIDIA GPU (a fork must never follow CUDA's initialisation, and GPU jobs are long enough
that start-up does not matter), unless ``DIFFUNLEARN_WARM_START=1``; and whenever the warm process cannot be
reached. A warm process serves only jobs with the same Python, the same environment variables and the same
package files (source modification times, installed torch / diffusers) that it was started with; it exits
after ``DIFFUNLEARN_WARM_START_IDLE`` seconds (default 120) without a job.

This module is imported by every job before anything heavy, so it imports only the standard library.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import time

ENV_SWITCH = "DIFFUNLEARN_WARM_START"
ENV_IDLE = "DIFFUNLEARN_WARM_START_IDLE"
ENV_STARTED_AT = "DIFFUNLEARN_JOB_STARTED_AT"  # the job process's start (epoch seconds), for JobLog's timings
# Variables that differ between the jobs of one run, or are ours, and do not change what an import does.
_ENV_NOT_FINGERPRINTED = {ENV_STARTED_AT, ENV_IDLE, "OLDPWD", "PWD", "SHLVL", "_"}
PRELOAD = (  # imported once by the warm process; each job then finds them in sys.modules
    "numpy", "scipy.linalg", "PIL.Image", "safetensors.torch", "torch", "accelerate",
    "diffunlearn.checkpoint", "diffunlearn.data", "diffunlearn.train", "diffunlearn.sample", "diffunlearn.margins",
    "diffunlearn.unlearn", "diffunlearn.evaluate", "diffunlearn.grid", "diffunlearn.io", "diffunlearn.snakemake_io",
    "diffunlearn.speed", "diffunlearn.seeding", "diffunlearn.metrics.klom", "diffunlearn.metrics.klom_kernel",
    "pandas", "matplotlib",
)

_in_child = False  # True in a forked child: run_warm() then lets the script go on


def run_warm(snakemake=None) -> None:
    """Called first thing by each workflow script. Where a warm process is available, hands this job to a fork
    of it and exits this process with the job's exit status; otherwise (or in that fork) returns at once."""
    if _in_child or not enabled():
        return
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not script.endswith(".py") or not os.path.exists(script):
        return
    sock = _connect_or_start(socket_path())
    if sock is None:
        return
    code = _hand_over(sock, script)
    if code is None:  # the warm process refused or vanished before forking: run here instead
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def enabled() -> bool:
    value = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if not hasattr(socket, "AF_UNIX") or not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("SLURM_JOB_ID"):
        return False
    return not _has_nvidia_gpu()


def _has_nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/gpus")


def fingerprint(env: dict | None = None) -> str:
    """What a warm process must share with a job to serve it: interpreter, environment, package files."""
    env = os.environ if env is None else env
    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{sys.version}\0{os.getuid()}\0".encode())
    for key in sorted(env):
        if key not in _ENV_NOT_FINGERPRINTED:
            h.update(f"{key}={env[key]}\0".encode())
    package = os.path.dirname(os.path.abspath(__file__))
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                h.update(f"{root}/{name}:{st.st_mtime_ns}:{st.st_size}\0".encode())
    import importlib.util

    for name in ("torch", "diffusers", "numpy", "accelerate"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            st = os.stat(spec.origin)
            h.update(f"{name}:{spec.origin}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def socket_path(env: dict | None = None) -> str:
    base = os.path.join("/tmp" if os.path.isdir("/tmp") else os.path.expanduser("~"), f"diffunlearn-warm-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    return os.path.join(base, fingerprint(env) + ".sock")


# ---------------------------------------------------------------- the job's side


def _try_connect(path: str):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _connect_or_start(path: str, wait_s: float = 60.0):
    sock = _try_connect(path)
    if sock is not None or os.path.exists(path[: -len(".sock")] + ".refused"):
        return sock
    import fcntl
    import subprocess

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one job starts the warm process; the others wait for it here
        sock = _try_connect(path)
        if sock is not None:
            return sock
        if os.path.exists(path):
            os.unlink(path)  # left by a warm process that was killed
        log = open(path[: -len(".sock")] + ".log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "diffunlearn.warm_start", "serve", path],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True)
        log.close()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None  # it failed to start (see its .log): run in this process
            sock = _try_connect(path)
            if sock is not None:
                return sock
            time.sleep(0.05)
        return None


def _send_msg(sock, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    header = struct.pack("!I", len(data))
    if fds:
        socket.send_fds(sock, [header + data], list(fds))
    else:
        sock.sendall(header + data)


def _recv_exact(sock, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv_msg(sock):
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    data = _recv_exact(sock, struct.unpack("!I", header)[0])
    return None if data is None else json.loads(data)


def _hand_over(sock, script: str) -> int | None:
    import signal

    env = dict(os.environ)
    env[ENV_STARTED_AT] = repr(process_start_epoch())
    sys.stdout.flush()
    sys.stderr.flush()
    request = {"script": script, "cwd": os.getcwd(), "argv": sys.argv, "env": env}
    try:
        _send_msg(sock, request, fds=(0, 1, 2))
        reply = _recv_msg(sock)
    except OSError:
        return None
    if not reply or "pid" not in reply:
        return None
    child = int(reply["pid"])

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    try:
        reply = _recv_msg(sock)
    except OSError:
        reply = None
    if not reply or "exit" not in reply:
        return 1  # the warm process died with the job running (its child died with it)
    status = int(reply["exit"])
    if status < 0:  # the child was killed by a signal: end the same way, as a plain process would
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


def process_start_epoch(default: float | None = None) -> float:
    """When this process started (epoch seconds, from /proc); ``default`` (or now) where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time() if default is None else default


# ---------------------------------------------------------------- the warm process


def serve(path: str) -> None:
    import importlib
    import selectors
    import signal

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # a module that cannot be imported here is imported by the job itself
            print(f"preload {name}: {type(e).__name__}: {e}", flush=True)
    try:
        from diffunlearn.models import scheduler_class, unet_class

        unet_class()
        scheduler_class("ddpm")
        scheduler_class("ddim")
    except Exception as e:
        print(f"preload diffusers: {type(e).__name__}: {e}", flush=True)
    import ctypes  # noqa: F401  (the children use it for PR_SET_PDEATHSIG)
    import runpy  # noqa: F401
    import threading
    import traceback  # noqa: F401

    # Native threads here are OpenBLAS's pools (numpy's, scipy's), which stop before a fork and restart in the
    # child (pthread_atfork); a Python thread would be copied half-way, so none may run.
    if threading.active_count() > 1:
        print(f"not serving: {threading.active_count()} Python threads after the imports", flush=True)
        open(path[: -len(".sock")] + ".refused", "w").close()
        return
    idle_s = float(os.environ.get(ENV_IDLE, "120"))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    tmp = f"{path}.{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)  # clients connect only once the imports are done
    own_inode = os.stat(path).st_ino
    print(f"serving on {path} (pid {os.getpid()}, idle exit after {idle_s:.0f} s)", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    children = {}  # pid -> connection to its job's process
    last_active = time.monotonic()
    try:
        while True:
            timeout = None if children else max(0.0, idle_s - (time.monotonic() - last_active))
            if not children and timeout <= 0:
                break
            for key, _ in sel.select(timeout):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    pid = _start_child(conn, listener, sel, wake_r, wake_w, children)
                    if pid is not None:
                        children[pid] = conn
                        sel.register(conn, selectors.EVENT_READ, pid)
                elif key.data == "child":
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:  # the job's process closed its end: it is gone, so is its child
                    pid = key.data
                    if pid in children:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
            _reap(children, sel)
            last_active = time.monotonic() if children else last_active
    finally:
        listener.close()
        try:  # unless a newer warm process has taken the path in the meantime
            if os.stat(path).st_ino == own_inode:
                os.unlink(path)
        except OSError:
            pass


def _reap(children: dict, sel) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        try:
            _send_msg(conn, {"exit": code})
        except OSError:
            pass
        conn.close()


def _start_child(conn, listener, sel, wake_r, wake_w, children) -> int | None:
    try:
        conn.settimeout(10)
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        conn.settimeout(None)
        size = struct.unpack("!I", msg[:4])[0]
        data = msg[4:]
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise OSError("short request")
            data += chunk
        request = json.loads(data)
        if len(fds) != 3:
            raise OSError("expected 3 file descriptors")
    except (OSError, ValueError) as e:
        print(f"bad request: {e}", flush=True)
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: becomes the job
        try:
            _become_job(request, fds, [conn, listener], sel, (wake_r, wake_w), children)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    try:
        _send_msg(conn, {"pid": pid})
    except OSError:
        pass
    return pid


def _become_job(request, fds, sockets, sel, wake_fds, children) -> None:
    import atexit
    import ctypes
    import runpy
    import signal
    import threading
    import traceback

    global _in_child
    _in_child = True
    if __name__ != "diffunlearn.warm_start":
        raise RuntimeError("the warm process must run diffunlearn.warm_start, not a copy of it")
    try:  # die with the warm process (Linux): a job must not outlive the process that watches its job process
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sel.close()
    for s in sockets:
        s.close()
    for c in children.values():
        c.close()
    for fd in wake_fds:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "serve":
        serve(argv[1])
    else:
        print("usage: python -m diffunlearn.warm_start serve SOCKET", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # run as the package's module, not as __main__: the jobs' scripts import diffunlearn.warm_start, and a child
    # must find _in_child set in that module
    from diffunlearn.warm_start import main as _main

    _main()
