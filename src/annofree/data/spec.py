"""What a data loader is asked for: :class:`LoaderSpec`, shared by the engine, the methods and the readers."""

from __future__ import annotations

from dataclasses import dataclass

from annofree.errors import UserError


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

    def check(self) -> None:
        """Refuse a spec no reader can serve (every reader calls this before any work)."""
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if self.skip_batches < 0:
            raise ValueError(f"skip_batches must be >= 0, got {self.skip_batches}")
