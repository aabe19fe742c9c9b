"""What a data loader is asked for: :class:`LoaderSpec`, shared by the engine, the methods and the readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoaderSpec:
    """Where this rank's batches come from and where the stream starts (for exact resume)."""

    data: str  # a shard pattern, a folder, ... (the method decides what it accepts)
    batch_size: int  # per rank, per micro-batch
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    seed: int = 0
    epoch: int = 0
    skip_batches: int = 0  # micro-batches of this epoch already consumed by this rank
