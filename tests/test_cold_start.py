"""Cold start: the serving process imports no training code, and its startup phases count from the
process's own start.

The import checks run in fresh interpreters: the test process has imported whatever other tests needed.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from observability import Metrics
from observability.startup import Phases, StartupClock, process_age
from server.core.boot import prepare
from server.core.settings import Settings
from tests.conftest import free_port, server_env, wait_ready
from text.normalize import SUPPORTED_LANGUAGES, _compiled

ROOT = Path(__file__).resolve().parent.parent

# Training-only (f5-tts's trainer and dataset, and what they import) or only for paths a Vocos model
# serving non-Chinese text never takes. Any of these in a server process costs seconds of every start.
FORBIDDEN = (
    "f5_tts.model.trainer", "f5_tts.model.dataset", "wandb", "datasets", "accelerate", "pandas", "pyarrow",
    "transformers", "pytorch_lightning", "matplotlib", "librosa", "numba", "scipy.signal", "scipy.integrate",
    "scipy.stats", "einx", "sympy", "torch._dynamo", "pypinyin", "huggingface_hub", "httpx", "lameenc",
)

SERVE_ONE = """
import json, sys
import server.__main__, server.app, server.runpod.main
after_import = sorted(m for m in {forbidden!r} if m in sys.modules)
from engine import Engine, EngineConfig, SynthesisItem
from pathlib import Path
engine = Engine.load(EngineConfig(model="tiny", device="cpu", tiny_cache_dir=Path({cache!r})))
audio = engine.synthesize([SynthesisItem("Hello there.", engine.default_voice(), nfe_steps=2, seed=1)])[0]
after_serving = sorted(m for m in {forbidden!r} if m in sys.modules)
from engine.f5 import convert_char_to_pinyin
chinese = convert_char_to_pinyin(["你好"])[0]
print(json.dumps({{"after_import": after_import, "after_serving": after_serving, "samples": len(audio),
                  "chinese": chinese, "pypinyin_loaded": "pypinyin" in sys.modules}}))
"""


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_serving_process_imports_no_training_code(tiny_cache: Path) -> None:
    result = json.loads(run_python(SERVE_ONE.format(forbidden=FORBIDDEN, cache=str(tiny_cache))).splitlines()[-1])
    assert result["after_import"] == [], "imported by the server's modules"
    assert result["after_serving"] == [], "imported while loading the model or synthesising English"
    assert result["samples"] > 0
    # Deferred, not dropped: Chinese text still becomes pinyin, importing pypinyin on first use.
    assert result["chinese"] == [" ", "ni2", " ", "hao3"] and result["pypinyin_loaded"]  # tone sandhi


@pytest.mark.slow
def test_f5_package_names_still_resolve() -> None:
    out = run_python(
        "import engine.f5 as f5, f5_tts.model as m, sys\n"
        "from f5_tts.model import CFM, DiT\n"
        "print(CFM is f5.CFM, DiT is f5.DiT, 'f5_tts.model.trainer' in sys.modules, hasattr(m, 'Nope'))\n"
        "import librosa.filters, einx\n"  # the real modules, for anyone who imports them afterwards
        "print(callable(librosa.filters.mel), type(einx).__name__, hasattr(einx, '__file__'))\n")
    assert out.split() == ["True", "True", "False", "False", "True", "module", "True"]


@pytest.mark.slow
def test_process_age_counts_from_the_process_start() -> None:
    out = run_python("import time; time.sleep(0.5)\nfrom observability.startup import process_age\n"
                     "print(process_age())")
    assert 0.5 <= float(out) < 60
    own = process_age()
    assert own is not None and own > 0


def test_clock_without_an_entry_point_has_no_import_phase() -> None:
    clock = StartupClock()
    before = time.perf_counter()
    assert clock.import_seconds() is None and clock.begin() >= before
    clock.entered()
    imported = clock.import_seconds()
    assert imported is not None and imported > 0 and clock.begin() < before


def test_startup_phases_are_exported_once_known() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, process_collectors=False)
    assert metrics.startup_finished({"load": 0.5, "warmup": 1.0, "total": 2.0}) == {"load": 0.5, "warmup": 1.0,
                                                                                  "total": 2.0}
    assert registry.get_sample_value("tts_startup_seconds", {"phase": "import"}) is None
    metrics.startup_finished({"import": 3.0, "load": 0.5, "total": 5.0})
    assert registry.get_sample_value("tts_startup_seconds", {"phase": "import"}) == 3.0
    assert registry.get_sample_value("tts_startup_seconds", {"phase": "total"}) == 5.0


def test_phases_are_contiguous() -> None:
    clock = StartupClock()
    phases = Phases(clock)
    time.sleep(0.02)
    phases.mark("load")
    time.sleep(0.01)
    phases.mark("warmup")
    phases.mark("load")  # a phase met again adds up
    done = phases.finished()
    assert done["load"] >= 0.02 and done["warmup"] >= 0.01
    assert done["load"] + done["warmup"] == pytest.approx(done["total"], abs=1e-9)


@pytest.mark.slow
async def test_prepare_accounts_for_every_second_and_keeps_its_seed(
        test_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In process, warm-up on: the phases sum to the total (within 5 %), and a second start on the same
    model reads the cost seed the first one timed; another step count is another key, timed anew."""
    caplog.set_level(logging.INFO, logger="server.core.boot")
    settings = test_settings.replace(warmup=True, max_batch_size=2, cost_seed_dir=str(tmp_path / "seeds"))
    _compiled.cache_clear()
    for expected, changed in (("timed", settings), ("kept", settings),
                              ("timed", settings.replace(default_nfe_steps=6))):
        caplog.clear()
        metrics = Metrics(CollectorRegistry(), process_collectors=False)
        runtime = await prepare(changed, metrics)
        await runtime.batcher.close(drain=False)
        runtime.voices.close()
        seconds = {p: metrics.registry.get_sample_value("tts_startup_seconds", {"phase": p})
                   for p in ("setup", "load", "voices", "warmup", "seed", "ready", "total")}
        assert all(v is not None for v in seconds.values()), seconds
        parts = sum(v for p, v in seconds.items() if p != "total")  # type: ignore[misc]
        assert abs(parts - seconds["total"]) <= 0.05 * seconds["total"], seconds  # type: ignore[operator]
        warm = next(r for r in caplog.records if r.getMessage() == "model warm")
        assert warm.seed == expected  # type: ignore[attr-defined]
        # the normaliser's rules are compiled in the warm-up (~0.1 s), not by the first request
        assert _compiled.cache_info().currsize == len(SUPPORTED_LANGUAGES)
    assert len(list((tmp_path / "seeds").glob("cost-seed-*.json"))) == 2


@pytest.mark.slow
async def test_spawned_server_total_matches_process_start_to_ready(tiny_cache: Path, tmp_path: Path) -> None:
    port = free_port()
    started = time.perf_counter()
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
             "--log-format", "json"], cwd=ROOT, env=server_env(tiny_cache), stdout=log,
            stderr=subprocess.STDOUT, text=True)
        try:
            await wait_ready(proc, port)
            external = time.perf_counter() - started
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        finally:
            proc.terminate()
            proc.wait(30)
    phases = {p: float(v) for p, v in re.findall(r'^tts_startup_seconds\{phase="(\w+)"\} (\S+)$', text, re.M)}
    assert {"import", "setup", "load", "voices", "warmup", "seed", "total"} <= set(phases)
    parts = sum(v for p, v in phases.items() if p != "total")
    assert abs(parts - phases["total"]) <= 0.05 * phases["total"]  # every second is in a phase
    # Polled every 0.1 s: the server's own total is at most that poll (plus scheduling) short of ours.
    assert external - 1.0 <= phases["total"] <= external + 0.02
    log_lines = (tmp_path / "server.log").read_text().splitlines()
    line = next(json.loads(s) for s in log_lines if '"msg":"startup"' in s)
    assert line["total_seconds"] == pytest.approx(phases["total"], abs=0.001)
