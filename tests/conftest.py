from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Engine, EngineConfig, Voice
from tests.audio import EN_TRANSCRIPT, ZH_TRANSCRIPT, chinese_clip, encode, english_clip


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache per test run, so the tiny profile's writer is exercised every time."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_config(tiny_cache: Path) -> EngineConfig:
    return EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def engine(tiny_config: EngineConfig) -> Iterator[Engine]:
    yield Engine.load(tiny_config)


@pytest.fixture(scope="session")
def voice_en(engine: Engine) -> Voice:
    samples, rate = english_clip(1.0)
    return engine.prepare_voice("en", encode(samples, rate), EN_TRANSCRIPT)


@pytest.fixture(scope="session")
def voice_zh(engine: Engine) -> Voice:
    samples, rate = chinese_clip(1.0)
    return engine.prepare_voice("zh", encode(samples, rate), ZH_TRANSCRIPT)
