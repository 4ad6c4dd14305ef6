"""Checkpoints load in every released format; broken ones fail with one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import Engine, EngineConfig, ModelLoadError, SynthesisItem, Voice
from engine.loader import load_vocab, load_vocos, read_state_dict, uninitialised_parameters
from engine.models import model_spec
from engine.tiny import ensure_tiny_model


@pytest.fixture(scope="module")
def reference(engine: Engine, voice_en: Voice) -> np.ndarray:
    return engine.synthesize([SynthesisItem("Round trip.", voice_en, nfe_steps=4, seed=3)])[0]


def synth_with(config: EngineConfig, voice: Voice) -> np.ndarray:
    engine = Engine.load(config)
    return engine.synthesize([SynthesisItem("Round trip.", engine.attach(voice), nfe_steps=4, seed=3)])[0]


def ema_state(tiny_cache: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ensure_tiny_model(tiny_cache).ckpt))


def test_tiny_writes_release_formats(tiny_cache: Path) -> None:
    paths = ensure_tiny_model(tiny_cache)
    keys = set(load_file(str(paths.ckpt)))
    assert {"initted", "step"} <= keys
    assert all(k.startswith("ema_model.") for k in keys - {"initted", "step"})
    assert (paths.vocoder_dir / "config.yaml").is_file()
    assert (paths.vocoder_dir / "pytorch_model.bin").is_file()
    assert load_vocab(str(paths.vocab))[1] == 2545


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt-ema", "pt-plain", "safetensors-plain"])
def test_checkpoint_round_trip(fmt: str, tmp_path: Path, tiny_config: EngineConfig, tiny_cache: Path,
                               voice_en: Voice, reference: np.ndarray) -> None:
    ema = ema_state(tiny_cache)
    plain = {k.removeprefix("ema_model."): v for k, v in ema.items() if k not in ("initted", "step")}
    if fmt == "pt-ema":
        path = tmp_path / "model.pt"
        torch.save({"ema_model_state_dict": ema, "step": 10}, path)
    elif fmt == "pt-plain":
        path = tmp_path / "model.pt"
        torch.save({"model_state_dict": plain}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(plain, str(path))
    config = EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache, ckpt_file=str(path))
    assert np.array_equal(synth_with(config, voice_en), reference)


@pytest.mark.slow
def test_only_the_ema_weights_are_read(tmp_path: Path, tiny_cache: Path, voice_en: Voice,
                                       reference: np.ndarray) -> None:
    """A training-style file holds the online weights beside the EMA ones; the EMA set alone is read."""
    ema = ema_state(tiny_cache)
    online = {k.removeprefix("ema_model."): torch.zeros(3) for k in ema if k.startswith("ema_model.")}
    path = tmp_path / "training.safetensors"
    save_file({**ema, **online}, str(path))
    assert set(read_state_dict(path)) == {k.removeprefix("ema_model.") for k in online}
    config = EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache, ckpt_file=str(path))
    assert np.array_equal(synth_with(config, voice_en), reference)


def test_weights_arrive_in_the_target_dtype_in_memory_of_their_own(tiny_cache: Path) -> None:
    state = read_state_dict(ensure_tiny_model(tiny_cache).ckpt, torch.device("cpu"), torch.bfloat16)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.bfloat16}
    fp32 = read_state_dict(ensure_tiny_model(tiny_cache).ckpt)
    # Copied out of the file's memory map into allocator memory (64-byte aligned, as CPU kernels expect).
    assert all(v.data_ptr() % 64 == 0 for v in fp32.values())
    engine = Engine.load(EngineConfig(model="tiny", device="cpu", dtype="bfloat16", tiny_cache_dir=tiny_cache))
    tensors = [*engine.cfm.parameters(), *engine.cfm.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert {t.dtype for t in engine.cfm.parameters()} == {torch.bfloat16}
    assert {t.dtype for t in engine.vocoder.parameters()} == {torch.float32}


def test_uninitialised_parameters_leaves_init_as_it_found_it() -> None:
    original = torch.nn.init.kaiming_uniform_
    with pytest.raises(RuntimeError), uninitialised_parameters():
        assert torch.nn.init.kaiming_uniform_ is not original
        raise RuntimeError("build failed")
    assert torch.nn.init.kaiming_uniform_ is original
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4).weight
    torch.manual_seed(0)
    assert torch.equal(torch.nn.Linear(4, 4).weight, a)  # initialisation works again afterwards


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, tiny_cache: Path) -> None:
    data = ensure_tiny_model(tiny_cache).ckpt.read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cannot read checkpoint .*broken\.safetensors"):
        Engine.load(EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache, ckpt_file=str(broken)))


def test_mismatched_checkpoint_is_a_clear_error(tmp_path: Path, tiny_cache: Path) -> None:
    ema = ema_state(tiny_cache)
    key = "ema_model.transformer.proj_out.weight"
    ema[key] = torch.zeros(ema[key].shape[0], ema[key].shape[1] + 1)
    del ema["ema_model.transformer.proj_out.bias"]
    path = tmp_path / "other.safetensors"
    save_file(ema, str(path))
    config = EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache, ckpt_file=str(path))
    with pytest.raises(ModelLoadError, match=r"does not fit the architecture: 1 shape mismatches .*1 missing"):
        Engine.load(config)


def test_real_architecture_rejects_tiny_weights(tiny_cache: Path) -> None:
    ckpt = ensure_tiny_model(tiny_cache).ckpt
    config = EngineConfig(model="F5TTS_v1_Small", device="cpu", ckpt_file=str(ckpt))
    with pytest.raises(ModelLoadError, match="shape mismatches"):
        Engine.load(config)


def test_missing_files_and_unknown_model(tmp_path: Path, tiny_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"checkpoint file not found: .*nope\.pt"):
        Engine.load(EngineConfig(model="tiny", tiny_cache_dir=tiny_cache, ckpt_file=str(tmp_path / "nope.pt")))
    with pytest.raises(ModelLoadError, match=r"unknown model 'F5TTS_v9'.*F5TTS_v1_Base"):
        model_spec("F5TTS_v9")
    with pytest.raises(ModelLoadError, match="vocoder config file not found"):
        load_vocos(str(tmp_path), torch.device("cpu"))
    bad_vocab = tmp_path / "vocab.txt"
    bad_vocab.write_text("a\n \n")
    with pytest.raises(ModelLoadError, match="space as its first token"):
        load_vocab(str(bad_vocab))
    # A device this machine lacks, whichever machine runs the test (no vacuous branch on GPU machines).
    missing, message = ("cuda", "CUDA is not available") if not torch.cuda.is_available() else \
        (f"cuda:{torch.cuda.device_count()}", "CUDA device")
    with pytest.raises(ModelLoadError, match=message):
        Engine.load(EngineConfig(model="tiny", device=missing, tiny_cache_dir=tiny_cache))
    with pytest.raises(ModelLoadError, match="unknown device 'gpu0'"):
        Engine.load(EngineConfig(model="tiny", device="gpu0", tiny_cache_dir=tiny_cache))


@pytest.mark.slow
def test_offline_hub_is_a_clear_error(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE and an empty cache, loading the released model says exactly that."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = ("from engine import Engine, EngineConfig\n"
            "Engine.load(EngineConfig(model='F5TTS_v1_Base', device='cpu'))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert proc.returncode != 0
    assert "ModelLoadError: cannot fetch F5TTS_v1_Base/model_1250000.safetensors from hub repo SWivid/F5-TTS" \
        in proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr
