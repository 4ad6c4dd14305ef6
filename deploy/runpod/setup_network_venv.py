#!/usr/bin/env python3
"""Create or reuse a virtual environment on a network volume (for slim images that do not bake deps).

    python3 deploy/runpod/setup_network_venv.py --venv /runpod-volume/venv --lock constraints.txt --project .

* Idempotent: ``<venv>/.installed`` holds a hash of the lock file, the requirements and the Python
  version; a venv whose marker matches is reused at once.
* Safe when several workers start together: an exclusive ``flock`` on ``<venv>.lock``; whoever waits
  re-checks the marker after taking the lock, so only one of them installs.
* Safe after a crash mid-install: the venv is built in ``<venv>.tmp-<pid>`` and renamed into place
  only when complete; leftovers of a dead build are removed. (Only ``venv/bin/python3 -m ...`` is used
  afterwards: entry-point scripts keep the temporary path in their shebang.)
* Offline: ``--offline`` passes ``--no-index`` to pip; ``--system-site-packages`` lets the venv reuse
  what the image already has.

Exit status 0 when the venv is ready, 1 with one line naming the failure otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

MARKER = ".installed"


def fingerprint(lock: Path, requirements: list[str], system_site: bool) -> str:
    digest = hashlib.sha256(lock.read_bytes())
    digest.update("\n".join(sorted(requirements)).encode())
    digest.update(f"{sys.version_info[:3]} system_site={system_site}".encode())
    return digest.hexdigest()


def is_ready(venv: Path, expected: str) -> bool:
    marker = venv / MARKER
    return marker.is_file() and marker.read_text().strip() == expected and (venv / "bin" / "python3").exists()


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the process dies, so a crash never deadlocks
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_leftovers(venv: Path) -> None:
    """Remove temporary builds of processes that died (we hold the lock, so none is still running)."""
    for leftover in venv.parent.glob(f"{venv.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def build(venv: Path, lock: Path, requirements: list[str], system_site: bool, offline: bool, stamp: str) -> None:
    staging = venv.parent / f"{venv.name}.tmp-{os.getpid()}"
    command = [sys.executable, "-m", "venv", str(staging)]
    if system_site:
        command.append("--system-site-packages")
    subprocess.run(command, check=True)
    if os.environ.get("SETUP_VENV_CRASH_AFTER_CREATE") == "1":  # for tests: die like a killed container
        os._exit(137)
    if requirements:
        pip = [str(staging / "bin" / "python3"), "-m", "pip", "install", "--disable-pip-version-check",
               "-c", str(lock)]
        if offline:
            pip.append("--no-index")
        subprocess.run([*pip, *requirements], check=True)
    (staging / MARKER).write_text(stamp + "\n")
    if venv.exists():  # an outdated or broken venv: move it aside atomically, then delete it
        old = venv.parent / f"{venv.name}.tmp-old-{os.getpid()}"
        venv.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(venv)


def ensure(venv: Path, lock: Path, requirements: list[str], system_site: bool, offline: bool) -> str:
    stamp = fingerprint(lock, requirements, system_site)
    if is_ready(venv, stamp):
        return "reused"
    with exclusive(venv.parent / f"{venv.name}.lock"):
        if is_ready(venv, stamp):  # another worker built it while we waited
            return "reused"
        clean_leftovers(venv)
        build(venv, lock, requirements, system_site, offline, stamp)
    return "built"


def project_requirements(project: Path) -> list[str]:
    import tomllib

    data = tomllib.loads((project / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--lock", type=Path, required=True, help="constraints file that pins every version")
    parser.add_argument("--project", type=Path, help="install this project's dependencies (pyproject.toml)")
    parser.add_argument("--requirement", action="append", default=[], help="extra requirement (repeatable)")
    parser.add_argument("--system-site-packages", action="store_true")
    parser.add_argument("--offline", action="store_true", help="pip --no-index: use only what is present")
    args = parser.parse_args(argv)
    if not args.lock.is_file():
        print(f"error: lock file not found: {args.lock}", file=sys.stderr)
        return 1
    requirements = (project_requirements(args.project) if args.project else []) + args.requirement
    started = time.monotonic()
    try:
        outcome = ensure(args.venv.resolve(), args.lock, requirements, args.system_site_packages, args.offline)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"error: venv setup failed: {exc}", file=sys.stderr)
        return 1
    print(f"venv {args.venv}: {outcome} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
