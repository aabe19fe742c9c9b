"""One rank of the torchrun signal test in test_interrupt.py (not a test itself).

``signal_worker.py OUT interrupted``: writes ``OUT/pid_rank<r>`` and trains ``OUT/run`` until a signal stops it
(exiting as the command line would: the message on stderr, 128 + the signal). ``signal_worker.py OUT resume``:
resumes ``OUT/run`` to its end and trains ``OUT/whole`` uninterrupted, keeping each rank's final method state.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from toy_method import toy_config

from annofree.engine import train
from annofree.engine.interrupt import Interrupted

CONFIG = toy_config(
    optim={"accum_steps": 2, "clip_grad": 1.0},
    train={"steps": 40, "batch_size": 2, "save_every": 0, "log_every": 1},
    toy={"samples": 24, "forward_noise": 0.3, "data_noise": 0.2, "step_delay": 0.1},
)


def main(out: Path, mode: str) -> int:
    rank = int(os.environ["RANK"])
    if mode == "interrupted":
        (out / f"pid_rank{rank}").write_text(str(os.getpid()))
        try:
            train(CONFIG, out / "run", data="toy")
        except Interrupted as stopped:
            print(f"rank {rank}: {stopped}", file=sys.stderr, flush=True)
            return stopped.exit_code
        return 0
    resumed = train(CONFIG, out / "run", resume=True)
    whole = train(CONFIG, out / "whole", data="toy")
    torch.save(resumed.method.state_dict(), out / f"resumed_rank{rank}.pt")
    torch.save(whole.method.state_dict(), out / f"whole_rank{rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
