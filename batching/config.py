"""The batcher's configuration (plain data; the server builds it from its Settings)."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULERS = ("request", "step")
POLICIES = ("latency", "fill")


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int = 16
    max_batch_frames: int = 40_000
    """Padded cost cap: batch size × longest item (frames)."""
    max_wait_ms: float = 10.0
    """How long the oldest item may wait for partners when compatible items are queued."""
    max_queue: int = 256
    """Queued items (not counting the running batch)."""
    max_queue_frames: int = 600_000
    queue_timeout_s: float = 30.0
    """A stream's first chunk not started within this time fails with ``timeout`` and never reaches the
    model (later chunks of a playing stream never time out)."""
    scheduler: str = "request"
    """``request``: whole batches run to completion. ``step``: items join between flow steps."""
    policy: str = "latency"
    """``latency``: batch only where the cost model says it pays. ``fill``: fill every batch (the old policy)."""
    max_padding: float = 0.5
    """Largest share of a batch's frames that may be padding (latency policy)."""
    first_audio_s: float = 1.0
    """Deadline of a stream's first chunk, seconds after its submission (a later chunk's deadline is when
    its listener runs out of audio: ``batching.playback``)."""
    admission: bool = False
    """Refuse a stream's first chunk at once when its first audio is predicted later than ``admission_ttfa_s``
    (off: only the bounded queue refuses)."""
    admission_ttfa_s: float = 3.0
    """Seconds, submission to the first chunk's result."""
    default_batch_seconds: float = 0.5
    """The cost model's flat guess before any measurement (flat = batching looks free = fill)."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1 or self.max_batch_frames < 1:
            raise ValueError("max_batch_size, max_queue and max_batch_frames must be positive")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not 0.0 <= self.max_padding <= 1.0 or self.admission_ttfa_s <= 0 or self.first_audio_s <= 0:
            raise ValueError("max_padding must be in [0, 1], admission_ttfa_s and first_audio_s positive")
