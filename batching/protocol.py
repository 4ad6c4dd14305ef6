"""What the batcher needs from a model. The engine satisfies it; tests use small fakes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")
ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
OutT_co = TypeVar("OutT_co", covariant=True)


class BatchModel(Protocol[ItemT_contra, OutT_co]):
    def synthesize(self, items: Sequence[ItemT_contra]) -> Sequence[OutT_co]:
        """Blocking: one output per item, in order. Runs in the batcher's worker thread."""
        ...

    def cost(self, item: ItemT_contra) -> int:
        """The item's padded length (e.g. frames); a batch costs size × its longest item."""
        ...

    def batch_key(self, item: ItemT_contra) -> Hashable:
        """Items may share a batch only when their keys are equal (same steps, cfg, sway...)."""
        ...


class BatchObserver(Protocol):
    """Metric hooks, all called on the event loop thread."""

    def queue_depth(self, items: int, frames: int) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None: ...

    def rejected(self, reason: str) -> None: ...


@runtime_checkable
class CostObserver(Protocol):
    """Optional observer hook (checked with isinstance, so older observers need not have it)."""

    def predicted_batch_seconds(self, by_size: Mapping[int, float]) -> None:
        """The cost model's predicted seconds per batch, by batch size, at the typical length."""
        ...


class NullObserver:
    def queue_depth(self, items: int, frames: int) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass
