"""The one frozen Settings object, built from command-line flags and ``TTS_*`` environment variables.

Every field is a flag (``max_batch_size`` -> ``--max-batch-size``) with an env twin
(``TTS_MAX_BATCH_SIZE``). Precedence: flag, then env, then the default here. Nothing else reads ``TTS_*``
variables (the RunPod worker reads only the SDK's own ones, to tell its local test mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from batching import BatcherConfig
from engine import EngineConfig
from server.core.aliases import AliasError, parse_pairs

ENV_PREFIX = "TTS_"


def _opt(help_text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class Settings:
    # model
    model: str = _opt("F5-TTS model name (F5TTS_v1_Base, F5TTS_Base, ...) or 'tiny' for tests",
                      default="F5TTS_v1_Base")
    ckpt_file: str = _opt("checkpoint: local .safetensors/.pt or hf://owner/repo/file; empty = released one",
                          default="")
    vocab_file: str = _opt("vocab.txt; empty = the one f5-tts ships", default="")
    vocoder_path: str = _opt("local Vocos dir (config.yaml + pytorch_model.bin); empty = hub", default="")
    device: str = _opt("auto, cpu, cuda, cuda:N", default="auto")
    dtype: str = _opt("auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16", default="auto")
    warmup: bool = _opt("run real inference and seed the scheduler's cost model before opening the port",
                        default=True)
    cost_seed_dir: str = _opt("where the cost model's startup timings are kept for the next start on the same "
                              "model, device, dtype and torch (a match skips re-timing); empty = "
                              "~/.cache/f5tts-server, off = time at every start", default="")
    default_nfe_steps: int = _opt("flow-matching steps when a request does not say", default=32)
    tiny_cache_dir: str = _opt("where the tiny profile writes its checkpoints; empty = ~/.cache", default="")
    # network
    host: str = _opt("listen address", default="0.0.0.0")
    port: int = _opt("listen port", default=8000)
    api_key: str = _opt("bearer key required on /v1/*; empty = no auth", default="")
    voices_dir: str = _opt("where uploaded voices persist; empty = memory only", default="voices")
    voices_sync_s: float = _opt("seconds between rescans of --voices-dir for voices and aliases.json that other "
                                "replicas changed (a lookup that misses reads the directory at once)", default=1.0)
    voice_aliases: str = _opt("other names for voices, NAME=VOICE,...; OpenAI's voice names (alloy, ash, ...) map "
                              "to 'default' unless mapped here or in <voices-dir>/aliases.json", default="")
    strict_params: bool = _opt("refuse unknown fields in OpenAI requests (default: ignore them and name them in "
                               "the X-Ignored-Params header)", default=False)
    cors_origins: str = _opt("browser origins allowed to call the API, comma-separated, or *; empty = no CORS",
                             default="")
    health_port: int = _opt("also answer GET /ping on this port (RunPod's PORT_HEALTH); 0 = main port only",
                            default=0)
    max_connections: int = _opt("open HTTP connections (WebSockets included); over it, idle ones are closed "
                                "first", default=1000)
    header_timeout_s: float = _opt("a connection must send a whole request within this long (also the "
                                   "keep-alive idle limit)", default=15.0)
    body_timeout_s: float = _opt("a request body must arrive within this long", default=60.0)
    # batching
    max_batch_size: int = _opt("most chunks per model batch", default=16)
    max_batch_frames: int = _opt("padded frames per batch (size x longest)", default=40_000)
    max_wait_ms: float = _opt("longest the oldest chunk waits for batch partners", default=10.0)
    max_queue: int = _opt("queued chunks before queue_full", default=256)
    max_queue_frames: int = _opt("queued mel frames before queue_full", default=600_000)
    queue_timeout_s: float = _opt("a stream's first chunk not started by then fails with timeout (later chunks "
                                  "of a playing stream never time out)", default=30.0)
    scheduler: str = _opt("request (whole batches run to completion) or step (requests join a running batch "
                          "between flow steps)", default="request")
    batch_policy: str = _opt("latency (a chunk joins a batch only where the learned cost model says it finishes "
                             "the queue sooner) or fill (fill every batch, the old policy)", default="latency")
    admission: bool = _opt("refuse a new stream at once (queue_full + retry_after_ms) when its first audio is "
                           "predicted later than --admission-ttfa-s (on: overload is refused at the door, not "
                           "after a long wait); off = only the bounded queue and --queue-timeout-s refuse",
                           default=True)
    admission_ttfa_s: float = _opt("first-audio budget for admission control, seconds", default=3.0)
    first_audio_s: float = _opt("deadline of a stream's first audio, seconds after its request (later chunks' "
                                "deadlines are when their listener runs out of audio)", default=1.0)
    # limits
    max_text_chars: int = _opt("characters per synthesize request (and per stream in total)", default=5000)
    max_spoken_chars: int = _opt("characters per request (and per stream in total) once numbers, dates and symbols "
                                 "are written out; 0 = three times --max-text-chars", default=0)
    max_append_chars: int = _opt("characters per append message", default=1000)
    max_streams_per_socket: int = _opt("ids open at once on one WebSocket", default=8)
    max_sockets: int = _opt("open WebSockets", default=256)
    max_sockets_per_client: int = _opt("open WebSockets per client address (behind a proxy every client shares "
                                       "its address: raise it, or 0 = no per-address cap)", default=64)
    max_message_bytes: int = _opt("largest WebSocket message accepted", default=65_536)
    max_upload_bytes: int = _opt("largest voice upload", default=20 * 1024 * 1024)
    max_transcript_bytes: int = _opt("UTF-8 bytes of a voice's transcript", default=1000)
    max_voices: int = _opt("uploaded voices stored at once (default not counted)", default=100)
    max_voices_bytes: int = _opt("bytes all uploaded voices may take in storage", default=200 * 1024 * 1024)
    idle_timeout_s: float = _opt("close a WebSocket with no stream and no synthesis message for this long",
                                 default=300.0)
    heartbeat_s: float = _opt("WebSocket ping interval (0 = off)", default=30.0)
    drain_delay_s: float = _opt("on SIGTERM, readiness goes off at once but new streams are still accepted for this "
                                "long, so a load balancer stops sending before any is refused (what a Kubernetes "
                                "preStop sleep is for); SIGINT skips it", default=5.0)
    shutdown_grace_s: float = _opt("on SIGTERM, after the drain delay, how long in-flight streams may finish",
                                   default=30.0)
    # observability
    latency_budget_s: float = _opt("requests slower than this count in tts_latency_budget_exceeded_total",
                                   default=3.0)
    log_format: str = _opt("text or json", default="text")
    log_level: str = _opt("debug, info, warning, error", default="info")

    @property
    def spoken_chars_limit(self) -> int:
        """--max-spoken-chars, or its default: three times --max-text-chars, which text of words stays
        under (words are spoken as given; abbreviations said in full at most double)."""
        return self.max_spoken_chars or 3 * self.max_text_chars

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model, ckpt_file=self.ckpt_file, vocab_file=self.vocab_file,
            vocoder_path=self.vocoder_path, device=self.device, dtype=self.dtype,
            tiny_cache_dir=Path(self.tiny_cache_dir) if self.tiny_cache_dir else None,
        )

    def batcher_config(self) -> BatcherConfig:
        return BatcherConfig(
            max_batch_size=self.max_batch_size, max_batch_frames=self.max_batch_frames,
            max_wait_ms=self.max_wait_ms, max_queue=self.max_queue, max_queue_frames=self.max_queue_frames,
            queue_timeout_s=self.queue_timeout_s, scheduler=self.scheduler, policy=self.batch_policy,
            admission=self.admission, admission_ttfa_s=self.admission_ttfa_s,
            first_audio_s=self.first_audio_s,
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_CONVERTERS: dict[type, Any] = {int: int, float: float, str: str, bool: _parse_bool}


def _converter(name: str, owner: type = Settings) -> Any:
    """The parser for a field's declared type; ``X | None`` parses as X."""
    hint = typing.get_type_hints(owner)[name]
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return _CONVERTERS[hint]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        """One line and status 1, like every other startup failure (argparse prints its usage block)."""
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = "python -m server") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Warm-loaded, micro-batched streaming F5-TTS server. "
                                     "Every flag has an env twin: --max-batch-size <-> TTS_MAX_BATCH_SIZE.")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [env {env}; default {f.default!r}]"
        if _converter(f.name) is _parse_bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_converter(f.name), default=None, help=help_text)
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over env over defaults. Raises SystemExit (argparse) on a malformed flag or env value."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        flag_value = getattr(args, f.name)
        if flag_value is not None:
            values[f.name] = flag_value
            continue
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            try:
                values[f.name] = _converter(f.name)(raw)
            except ValueError:
                parser.error(f"{ENV_PREFIX + f.name.upper()}={raw!r} is not a valid {f.type}")
    settings = Settings(**values)
    _validate(settings, parser)
    return settings


def _validate(settings: Settings, parser: argparse.ArgumentParser) -> None:
    positive = ["port", "max_batch_size", "max_batch_frames", "max_queue", "max_queue_frames", "max_text_chars",
                "max_append_chars", "max_streams_per_socket", "max_sockets", "max_message_bytes",
                "default_nfe_steps", "max_connections", "header_timeout_s", "body_timeout_s", "max_transcript_bytes",
                "max_voices", "max_voices_bytes"]
    for name in positive:
        if getattr(settings, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 < settings.port <= 65535 or not 0 <= settings.health_port <= 65535:
        parser.error("--port and --health-port must be between 1 and 65535 (0: no health port)")
    choices = {"scheduler": ("request", "step"), "batch_policy": ("latency", "fill"), "log_format": ("text", "json")}
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            parser.error(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")
    if settings.admission_ttfa_s <= 0 or settings.first_audio_s <= 0:
        parser.error("--admission-ttfa-s and --first-audio-s must be positive")
    if settings.max_spoken_chars < 0:
        parser.error("--max-spoken-chars must not be negative (0: three times --max-text-chars)")
    if settings.voices_sync_s <= 0 or settings.drain_delay_s < 0:
        parser.error("--voices-sync-s must be positive and --drain-delay-s not negative")
    try:
        parse_pairs(settings.voice_aliases)
    except AliasError as exc:
        parser.error(f"--voice-aliases: {exc}")
