"""Reproduce the hostile-audio attacks against a server tree: a FLAC decompression bomb, a long FLAC, WAVs
at 23 999 and 47 999 Hz, uploaded to ``POST /v1/voices`` while a synthesis request runs; then a restart
with the bomb already stored. Prints seconds to answer, the server's peak RSS (it is killed at a cap, so
an old tree cannot take the machine down) and the concurrent synthesis time.

    python -m bench.repro.hostile_audio --tree . --port 18731
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import soundfile as sf

from bench.common import server_command
from tests.test_untrusted_audio import constant_flac  # the test's bomb builder

ROOT = Path(__file__).resolve().parents[2]

CAP = 6 * 2**30


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Watch:
    """Peak RSS of a process, sampled every 20 ms; SIGKILL past ``CAP``."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.killed, self.done = pid, 0, False, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))
            if self.peak > CAP and not self.killed:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)


def start(tree: str, port: int, voices: Path, work: Path) -> tuple[subprocess.Popen[bytes], float, Watch]:
    command = server_command(port, "--device", "cpu", "--voices-dir", str(voices), "--no-warmup")
    started = time.perf_counter()
    with (work / "server.log").open("a") as log:
        proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": tree})
    watch = Watch(proc.pid)
    while proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, time.perf_counter() - started, watch


def post_voice(port: int, audio: bytes, voice_id: str) -> tuple[int, str]:
    b = "b0undary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"transcript\"\r\n\r\nSome call me\r\n--{b}\r\n"
            f"Content-Disposition: form-data; name=\"id\"\r\n\r\n{voice_id}\r\n--{b}\r\n"
            f"Content-Disposition: form-data; name=\"audio\"; filename=\"a\"\r\n\r\n").encode() + audio \
        + f"\r\n--{b}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/voices", body,
                                     {"Content-Type": f"multipart/form-data; boundary={b}"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()[:80].decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:100].decode(errors="replace")
    except OSError as exc:
        return -1, repr(exc)[:80]


def speech(port: int, out: list[str]) -> None:
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/speech", json.dumps(
        {"model": "tts-1", "input": "Hello there.", "voice": "default", "response_format": "pcm"}).encode(),
        {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            out.append(f"{time.perf_counter() - started:.2f} s")
    except OSError as exc:
        out.append(repr(exc)[:60])


def wav(rate: int) -> bytes:
    reference = ROOT / ".venv/lib/python3.11/site-packages/f5_tts/infer/examples/basic/basic_ref_en.wav"
    mono, _ = sf.read(reference, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, mono[:24000], rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def upload_case(tree: str, port: int, work: Path, name: str, data: bytes) -> None:
    proc, _, watch = start(tree, port, work / f"voices-{name}", work)
    base = rss(proc.pid)
    during: list[str] = []
    def race() -> None:  # a synthesis request 0.3 s into the upload: does the upload stall it?
        time.sleep(0.3)
        speech(port, during)

    racer = threading.Thread(target=race)
    started = time.perf_counter()
    racer.start()
    status, body = post_voice(port, data, name.replace(".", ""))
    took = time.perf_counter() - started
    racer.join()
    watch.done.set()
    print(f"{name:12s} {len(data) / 1e3:7.1f} KB -> {status} in {took:6.2f} s; RSS {base / 2**20:5.0f} MB -> "
          f"peak {watch.peak / 2**20:5.0f} MB{' (KILLED at cap)' if watch.killed else ''}; "
          f"speech during upload: {during}; {body[:60]!r}", flush=True)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def stored_bomb(tree: str, port: int, work: Path, bomb: bytes) -> None:
    voices = work / "voices-stored"
    (voices / "bomb").mkdir(parents=True)
    (voices / "bomb" / "audio").write_bytes(bomb)
    (voices / "bomb" / "voice.json").write_text('{"transcript": "Some call me"}')
    proc, boot, watch = start(tree, port, voices, work)
    watch.done.set()
    print(f"stored bomb  startup {boot:6.2f} s (ready={proc.poll() is None}); peak RSS "
          f"{watch.peak / 2**20:5.0f} MB{' (KILLED at cap)' if watch.killed else ''}", flush=True)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", default=".", help="checkout to run (e.g. a git worktree of an old commit)")
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    tree, work = str(Path(args.tree).resolve()), Path(f"/tmp/hostile-audio-{args.port}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bomb = constant_flac(6 * 3600, 48_000)
    for name, data in (("flac-6h-48k", bomb), ("flac-50m-48k", constant_flac(50 * 60, 48_000)),
                       ("wav-23999", wav(23_999)), ("wav-47999", wav(47_999))):
        upload_case(tree, args.port, work, name, data)
    stored_bomb(tree, args.port, work, bomb)


if __name__ == "__main__":
    main()
