"""Settings come from flags, then TTS_* env twins, then defaults; bad values fail clearly."""

from __future__ import annotations

from dataclasses import fields

import pytest

from server.core.settings import Settings, build_parser, load_settings


def test_defaults() -> None:
    settings = load_settings([], {})
    assert settings == Settings()
    assert settings.model == "F5TTS_v1_Base" and settings.latency_budget_s == 3.0


def test_env_twins_and_flag_precedence() -> None:
    env = {"TTS_MODEL": "tiny", "TTS_MAX_BATCH_SIZE": "8", "TTS_WARMUP": "false", "TTS_MAX_WAIT_MS": "2.5"}
    settings = load_settings(["--max-batch-size", "4"], env)
    assert (settings.model, settings.max_batch_size, settings.warmup, settings.max_wait_ms) == ("tiny", 4, False, 2.5)


def test_every_field_has_a_flag_and_env_twin() -> None:
    help_text = build_parser().format_help()
    for f in fields(Settings):
        assert "--" + f.name.replace("_", "-") in help_text
        assert "TTS_" + f.name.upper() in help_text
    for required in ("model", "ckpt_file", "vocab_file", "vocoder_path", "device", "dtype", "host", "port",
                     "max_batch_size", "max_wait_ms", "max_queue", "api_key", "voices_dir"):
        assert required in {f.name for f in fields(Settings)}


@pytest.mark.parametrize(("argv", "env"), [
    (["--max-batch-size", "zero"], {}),
    ([], {"TTS_PORT": "eighty"}),
    ([], {"TTS_WARMUP": "maybe"}),
    (["--max-batch-size", "0"], {}),
    (["--log-format", "xml"], {}),
    (["--port", "99999"], {}),
    (["--health-port", "-1"], {}),
    (["--scheduler", "fifo"], {}),
    ([], {"TTS_BATCH_POLICY": "greedy"}),
    (["--admission-ttfa-s", "0"], {}),
])
def test_bad_values_exit_with_one_line(argv: list[str], env: dict[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(argv, env)
    assert info.value.code == 1  # like every other startup failure
    err = capsys.readouterr().err
    assert "error:" in err and err.count("\n") == 1, err


def test_optional_fields_parse_by_their_type() -> None:
    """Converters come from the type hints, so ``X | None`` fields parse as X (str(f.type) did not)."""
    from dataclasses import dataclass

    from server.core import settings as module

    @dataclass(frozen=True)
    class WithOptional:
        limit: int | None = None

    assert module._converter("limit", WithOptional)("12") == 12
    assert module._converter("port")("8080") == 8080
    assert module._converter("warmup")("off") is False
