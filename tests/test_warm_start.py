"""diffunlearn.warm_start: a job handed to the warm process runs in a fork of it, with the job's own working
directory, environment, arguments and standard streams, and ends as the job's process ends."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

SCRIPT = """\
from diffunlearn.warm_start import run_warm

run_warm()
import os, sys, time
print("pid", os.getpid(), "cwd", os.getcwd(), "var", os.environ.get("WARM_TEST_VAR"), "argv", sys.argv[1:])
print("torch loaded before the script:", "torch" in sys.modules)
print("to stderr", file=sys.stderr)
mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(120)
if mode == "raise":
    raise ValueError("bad value on purpose")
sys.exit(int(mode) if mode.isdigit() else 0)
"""


@pytest.fixture(scope="module")
def warm_env(tmp_path_factory):
    """An environment of its own (so the test gets its own warm process) that exits soon after the tests."""
    tag = uuid.uuid4().hex
    return {**os.environ, "DIFFUNLEARN_WARM_START": "1", "DIFFUNLEARN_WARM_START_IDLE": "20", "WARM_TEST_TAG": tag}


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return path


def _run(script, env, *args, cwd):
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _fields(stdout):
    line = stdout.splitlines()[0].split()
    return {"pid": int(line[1]), "cwd": line[3], "var": line[5]}


def test_job_runs_in_a_fork_with_its_own_cwd_env_argv_and_streams(script, warm_env, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**warm_env, "WARM_TEST_VAR": "first"}
    first = _run(script, env, "0", cwd=work)  # starts the warm process (or finds it)
    second = _run(script, env, "0", cwd=work)
    for r in (first, second):
        assert r.returncode == 0, r.stderr
        assert "to stderr" in r.stderr
        f = _fields(r.stdout)
        assert f["cwd"] == str(work) and f["var"] == "first"
    # the second job ran in a fork of a process that had imported torch before the script started
    assert "torch loaded before the script: True" in second.stdout
    proc = subprocess.Popen([sys.executable, str(script), "0"], env=env, cwd=work, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert _fields(out)["pid"] != proc.pid


def test_exit_status_and_exceptions_are_the_jobs(script, warm_env, tmp_path):
    _run(script, warm_env, "0", cwd=tmp_path)
    assert _run(script, warm_env, "3", cwd=tmp_path).returncode == 3
    r = _run(script, warm_env, "raise", cwd=tmp_path)
    assert r.returncode == 1
    assert "ValueError: bad value on purpose" in r.stderr


def test_another_environment_gets_another_warm_process(script, warm_env, tmp_path):
    from diffunlearn.warm_start import socket_path

    a = socket_path({**warm_env, "WARM_TEST_VAR": "a"})
    b = socket_path({**warm_env, "WARM_TEST_VAR": "b"})
    assert a != b
    # a variable that differs between the jobs of one run does not
    assert socket_path({**warm_env, "DIFFUNLEARN_JOB_STARTED_AT": "1.0"}) == socket_path(warm_env)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for this purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_job_process_takes_its_fork_with_it(script, warm_env, tmp_path, sig):
    _run(script, warm_env, "0", cwd=tmp_path)  # the warm process is up
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, str(script), "sleep", str(pid_file)], env=warm_env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _wait_for(pid_file, proc)
    assert child != proc.pid and _alive(child)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig  # ends the way a plain process would
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_switched_off_the_job_runs_in_its_own_process(script, warm_env, tmp_path):
    env = {**warm_env, "DIFFUNLEARN_WARM_START": "0"}
    proc = subprocess.Popen([sys.executable, str(script), "0"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert _fields(out)["pid"] == proc.pid
    assert "torch loaded before the script: False" in out


def test_off_inside_slurm_and_on_gpu_machines_unless_forced(monkeypatch):
    from diffunlearn import warm_start

    monkeypatch.setenv("DIFFUNLEARN_WARM_START", "auto")
    monkeypatch.setattr(warm_start, "_has_nvidia_gpu", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert warm_start.enabled()
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert not warm_start.enabled()
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setattr(warm_start, "_has_nvidia_gpu", lambda: True)
    assert not warm_start.enabled()
    monkeypatch.setenv("DIFFUNLEARN_WARM_START", "1")
    assert warm_start.enabled()
