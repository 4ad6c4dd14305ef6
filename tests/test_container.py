"""Container pieces: Dockerfile lint, the start script's diagnostics and failures, the network venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow  # every test runs a tool, the start script or a fresh interpreter

ROOT = Path(__file__).resolve().parent.parent
START = ROOT / "deploy" / "runpod" / "start.sh"
SETUP_VENV = ROOT / "deploy" / "runpod" / "setup_network_venv.py"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: run `make tools` (make test does)")
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile.runpod")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes() -> None:
    proc = subprocess.run([tool("shellcheck"), str(START)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def python3_only_path(tmp_path: Path) -> str:
    """A PATH with `python3` (the project's venv) and system tools, but no `python`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    assert shutil.which("python", path=path) is None  # the failure mode this guards against
    return path


def start_env(tmp_path: Path, tiny_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "RUNPOD_", "HF_"))}
    env.update({"PATH": python3_only_path(tmp_path), "TTS_MODEL": "tiny", "TTS_TINY_CACHE_DIR": str(tiny_cache),
                "TTS_DEFAULT_NFE_STEPS": "2", "TTS_MAX_BATCH_SIZE": "2", "TTS_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT), **extra})
    return env


def test_start_script_with_volume_runs_a_test_job(tmp_path: Path, tiny_cache: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    env = start_env(tmp_path, tiny_cache, TTS_VOLUME_PATH=str(volume), TTS_VOICES_DIR=str(volume / "voices"))
    proc = subprocess.run([str(START), "--test_input", '{"input": {"text": "Hello from the start script."}}'],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    for diagnostic in ("start.sh: python3: ", "start.sh: disk /: ", f"start.sh: volume {volume}: mounted",
                       f"start.sh: volume {volume}: writable", "start.sh: gpu: ", f"HF_HOME: {volume}/hf",
                       "exec "):
        assert diagnostic in output, diagnostic
    assert "python3 -m server.runpod_worker" in output
    assert "Job local_test completed successfully." in output
    assert (volume / "voices").is_dir()


def test_start_script_fails_clearly_without_required_volume(tmp_path: Path, tiny_cache: Path) -> None:
    env = start_env(tmp_path, tiny_cache, TTS_VOLUME_PATH=str(tmp_path / "missing"), TTS_REQUIRE_VOLUME="1")
    proc = subprocess.run([str(START), "--test_input", '{"input": {"text": "Hi."}}'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"FATAL: network volume {tmp_path / 'missing'} is required" in proc.stderr
    assert "volume" in proc.stderr and "not mounted" in proc.stderr


def test_start_script_without_python3_fails_clearly(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no python3 at all
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, str(START)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "FATAL: python3 is not on PATH" in proc.stderr


# -- network venv ------------------------------------------------------------------------------------------

def setup_venv(venv: Path, lock: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SETUP_VENV), "--venv", str(venv), "--lock", str(lock),
                             "--system-site-packages", "--offline", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def test_concurrent_setups_build_once(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("pip\n")
    venv = tmp_path / "vol" / "venv"
    procs = [setup_venv(venv, lock) for _ in range(3)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    outcomes = sorted(err.split(": ")[1].split(" ")[0] for _, err in results)
    assert outcomes == ["built", "reused", "reused"]
    assert (venv / ".installed").is_file() and (venv / "bin" / "python3").exists()
    assert sorted(p.name for p in venv.parent.iterdir()) == ["venv", "venv.lock"]  # no temporary leftovers
    check = subprocess.run([str(venv / "bin" / "python3"), "-c", "import sys; print(sys.prefix)"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == str(venv)


def test_interrupted_setup_is_cleaned_up_and_lock_change_rebuilds(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("pip\n")
    venv = tmp_path / "venv"
    code, _ = finish(setup_venv(venv, lock, env={"SETUP_VENV_CRASH_AFTER_CREATE": "1"}))
    assert code == 137 and not venv.exists()
    assert list(tmp_path.glob("venv.tmp-*")), "the crashed build left its temporary venv"
    code, err = finish(setup_venv(venv, lock))
    assert code == 0 and "built" in err and not list(tmp_path.glob("venv.tmp-*"))
    stamp = (venv / ".installed").read_text()
    code, err = finish(setup_venv(venv, lock))
    assert code == 0 and "reused" in err
    lock.write_text("pip\nsetuptools\n")  # a new lock file: the venv is rebuilt
    time.sleep(0.01)
    code, err = finish(setup_venv(venv, lock))
    assert code == 0 and "built" in err and (venv / ".installed").read_text() != stamp


def test_missing_lock_file_is_one_clear_error(tmp_path: Path) -> None:
    code, err = finish(setup_venv(tmp_path / "venv", tmp_path / "nope.txt"))
    assert code == 1 and err.strip() == f"error: lock file not found: {tmp_path / 'nope.txt'}"


def test_worker_json_log_is_parseable(tmp_path: Path, tiny_cache: Path) -> None:
    """The container logs JSON (TTS_LOG_FORMAT=json): every line our code writes must parse."""
    missing = tmp_path / "none"  # no volume, and the image's default voices dir points into it
    env = start_env(tmp_path, tiny_cache, TTS_VOLUME_PATH=str(missing), TTS_VOICES_DIR=str(missing / "voices"))
    proc = subprocess.run([str(START), "--test_input", '{"input": {"text": "Log check."}}'], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "keeping voices in memory only" in proc.stderr and not missing.exists()
    ours = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    messages = {orjson.loads(line)["msg"] for line in ours}
    assert {"worker starting", "model loaded", "model warm", "worker ready", "job result"} <= messages


# -- worker kind and ports (a fake python3 records what start.sh execs) --------------------------------------

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Python 3.11.7 (fake)"; exit 0; fi
printf 'ARGS=%s\\n' "$*"
printf 'TTS_PORT=%s\\n' "${TTS_PORT-<unset>}"
printf 'TTS_HEALTH_PORT=%s\\n' "${TTS_HEALTH_PORT-<unset>}"
"""


def run_with_fake_python(tmp_path: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TTS_VOLUME_PATH": str(tmp_path / "no-volume"), **env_vars}
    return subprocess.run([str(START), *args], env=env, capture_output=True, text=True, timeout=30)


def exec_record(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.parametrize("mode", [None, "queue", "runpod"])
def test_queue_kind_execs_the_runpod_worker(tmp_path: Path, mode: str | None) -> None:
    extra = {} if mode is None else {"TTS_MODE": mode}
    record = exec_record(run_with_fake_python(tmp_path, "--rp_serve_api", PORT="80", **extra))
    assert record["ARGS"] == "-m server.runpod_worker --rp_serve_api"
    # The queue worker has no HTTP port: RunPod's PORT must not leak into the server's settings.
    assert record["TTS_PORT"] == "<unset>" and record["TTS_HEALTH_PORT"] == "<unset>"


@pytest.mark.parametrize(("env_vars", "port", "health"), [
    ({}, "8000", "0"),                                                      # plain container / Kubernetes
    ({"PORT": "80", "PORT_HEALTH": "8081"}, "80", "8081"),                  # RunPod load-balancing endpoint
    ({"PORT": "80"}, "80", "0"),                                            # no health port: /ping on main
    ({"PORT": "80", "PORT_HEALTH": "8081", "TTS_PORT": "9000", "TTS_HEALTH_PORT": "9001"}, "9000", "9001"),
])
def test_server_kind_maps_runpod_ports(tmp_path: Path, env_vars: dict[str, str], port: str, health: str) -> None:
    for mode in ("server", "http"):
        proc = run_with_fake_python(tmp_path, "--log-level", "debug", TTS_MODE=mode, **env_vars)
        record = exec_record(proc)
        assert record["ARGS"] == "-m server --log-level debug"
        assert (record["TTS_PORT"], record["TTS_HEALTH_PORT"]) == (port, health)
        assert f"ports: main {port}, health {health}" in proc.stderr


def test_unknown_worker_kind_fails_clearly(tmp_path: Path) -> None:
    proc = run_with_fake_python(tmp_path, TTS_MODE="loadbalancer")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "FATAL: TTS_MODE must be queue (alias runpod) or server (alias http), not 'loadbalancer'" in proc.stderr


@pytest.mark.parametrize(("env", "rc"), [({"TTS_MODE": "queue"}, 0), ({"TTS_MODE": "server"}, 1),
                                         ({"TTS_MODE": "http"}, 1)])
def test_healthcheck_probes_the_server_kind_only(env: dict[str, str], rc: int) -> None:
    """The queue worker has no port; the HTTP/WS server must answer /healthz (nothing listens here)."""
    from tests.conftest import free_port

    clean = {k: v for k, v in os.environ.items() if k not in ("TTS_PORT", "PORT", "TTS_MODE")}
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "runpod" / "healthcheck.py")],
                          env={**clean, **env, "PORT": str(free_port())}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == rc, proc.stderr
