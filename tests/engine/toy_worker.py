"""One rank of the torchrun test in test_distributed.py (not a test itself).

Launched as ``python -m torch.distributed.run --nproc_per_node=2 toy_worker.py OUT_DIR``; the script's own
folder is on ``sys.path``, so importing ``toy_method`` registers the toy method in each worker. The first run
lets ``train`` create the process group from torchrun's environment; the later runs reuse it. Each run saves
this rank's final method state as ``OUT_DIR/<run>_rank<r>.pt`` for the test to compare.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from toy_method import NOISY_RUN, PLAIN_RUN, toy_config

from annofree.engine import train


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])

    def keep(name: str, result) -> None:
        torch.save(result.method.state_dict(), out / f"{name}_rank{rank}.pt")

    keep("plain", train(toy_config(**PLAIN_RUN), out / "plain", data="toy"))
    keep("noisy", train(toy_config(**NOISY_RUN), out / "noisy", data="toy"))
    crashing = toy_config(**{**NOISY_RUN, "toy": {**NOISY_RUN["toy"], "crash_at": 6}})
    try:
        train(crashing, out / "resumed", data="toy")
    except RuntimeError as error:
        assert "toy crash" in str(error), error
    else:
        raise AssertionError("the crashing run did not crash")
    keep("resumed", train(toy_config(**NOISY_RUN), out / "resumed", data="toy", resume=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
