"""What a run shows and records (rank 0 only): a progress bar, ``log.jsonl`` and TensorBoard scalars.

``OUT/log.jsonl`` gets one JSON object per log step (step, epoch, lr, each loss and metric,
grad_norm, images_per_s, elapsed_s, ...), flushed at once so that a crash loses at most the current
window. A resumed run first drops the records of steps after its checkpoint, so the file reads as
one uninterrupted run; TensorBoard purges those steps the same way. ``OUT/curves.png`` plots the log
(:meth:`RunLogger.write_curves`, called by the trainer at every checkpoint and at the end: the logger hands
the records it holds to :mod:`annofree.engine.curves`, which reads no file)::

    logger = RunLogger("runs/x", total_steps=100, tensorboard=False)
    logger.log({"step": 1, "loss": 0.7, "lr": 1e-3})
    logger.write_curves()
    logger.close()
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from annofree.folders import disk_error
from annofree.io import atomic_write

LOG_NAME = "log.jsonl"
TENSORBOARD_DIR = "tb"


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (a torn last line from a crash is ignored)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _json_value(value: Any) -> Any:
    """NaN and infinities as strings: JSON has no such numbers and a NaN loss must still be recorded."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Progress bar, JSON lines and TensorBoard for one run; does nothing on ranks other than 0."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = False,
        description: str = "train",
    ):
        self.enabled = enabled
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=description,
            unit="step",
            dynamic_ncols=True,
            disable=not enabled,
        )
        self._file = None
        self._writer = None
        self._out_dir = Path(out_dir)
        self._start_step = start_step
        self._tensorboard = tensorboard
        self._logged_since_plot = 0
        self._records: list[dict[str, Any]] = []  # as in log.jsonl (kept records of a resumed run first)

    def _open(self) -> None:
        """Open the sinks at the first record (a run refused before it logs anything leaves the files as they were).

        A resumed run first drops the records after its checkpoint (written by a session that died later).
        """
        log_path = self._out_dir / LOG_NAME
        try:
            self._out_dir.mkdir(parents=True, exist_ok=True)
            if log_path.exists():
                start = self._start_step
                kept = [r for r in read_log(log_path) if isinstance(r.get("step"), int) and r["step"] <= start]
                text = "".join(json.dumps(r) + "\n" for r in kept)
                atomic_write(log_path, lambda tmp: Path(tmp).write_text(text))
                self._records = kept
            self._file = log_path.open("a")
        except OSError as exc:
            raise disk_error(log_path, exc) from None
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked: it is slow to import

            self._writer = SummaryWriter(
                str(self._out_dir / TENSORBOARD_DIR), purge_step=self._start_step + 1 if self._start_step else None
            )

    def message(self, text: str) -> None:
        """A line above the progress bar."""
        if self.enabled:
            self.bar.write(text)

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must hold ``step``) to every sink and show its loss and lr on the bar."""
        if not self.enabled:
            return
        if self._file is None:
            self._open()
        assert self._file is not None
        written = {k: _json_value(v) for k, v in record.items()}
        try:
            self._file.write(json.dumps(written) + "\n")
            self._file.flush()
        except OSError as exc:
            raise disk_error(self._out_dir / LOG_NAME, exc) from None
        self._records.append(written)
        self._logged_since_plot += 1
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"train/{key}", value, global_step=record["step"])
            self._writer.flush()
        shown = {k: f"{record[k]:.4g}" for k in ("loss", "lr") if isinstance(record.get(k), float)}
        self.bar.set_postfix(shown, refresh=False)

    def write_curves(self) -> None:
        """``OUT/curves.png`` from the log (rank 0; nothing to do when no record came since the last plot).

        A plot that fails is reported above the progress bar and never stops the run.
        """
        if not self.enabled or self._logged_since_plot == 0:
            return
        try:
            from annofree.engine.curves import write_curves

            write_curves(self._out_dir, self._records)
            self._logged_since_plot = 0
        except Exception as exc:
            self.message(f"warning: could not draw curves.png ({type(exc).__name__}: {exc})".splitlines()[0])

    def close(self) -> None:
        self.bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
