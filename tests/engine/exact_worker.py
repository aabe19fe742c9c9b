"""The exact-accumulation problem of test_exact_accumulation.py, and one rank of its torchrun runs (not a test).

Every layout trains the same 4 global micro-batches of 8 image-caption pairs for one optimiser step through the
engine's own :meth:`annofree.engine.trainer._Run.exact_step`: rank ``r`` of ``W`` gets the micro-batches
``r * K .. r * K + K - 1`` with ``K = 4 / W``. Launched as
``python -m torch.distributed.run --nproc_per_node=W exact_worker.py OUT_DIR``, each rank saves, per loss
variant and precision, its local loss, outputs and (DDP-averaged) gradients as
``OUT_DIR/<variant>_<dtype>_w<W>_rank<r>.pt``. float64 (the whole model) shows the maths exact, parameter by
parameter; float32 is what training runs.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annofree.engine import distributed
from annofree.engine.config import resolve_engine_config
from annofree.engine.trainer import _Run
from annofree.methods import get_method
from annofree.methods.groupvit import make_sample
from tests.tiny import tiny_groupvit_section

MICRO_BATCHES, BATCH = 4, 8  # global micro-batches of one step, samples in each
STEP = 3  # the step the noise is drawn for (any; not 0, so that the step takes part in the seed)
# embed_dim 256 as the published model: at initialisation the image-text loss is then close to ln(batch).
MODEL = tiny_groupvit_section(image={"drop_path_rate": 0.2, "gumbel": True, "hard_assignment": True}, embed_dim=256)
# The loss forms exact accumulation must get right (each with Gumbel noise, drop path and BatchNorm).
VARIANTS = {
    "softmax": {},
    "softmax_same_text_patch_tokens": {"same_text_positive": True, "patch_token_weight": 0.5},
    "sigmoid": {"multi_label_form": "sigmoid", "patch_token_weight": 0.5},
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
WORDS = ["circle", "square", "star", "heart", "ring", "dog", "cat", "tree"]  # few nouns: many same-text prompts


def config(loss: dict[str, Any], accum_steps: int, mode: str = "exact") -> dict[str, Any]:
    return resolve_engine_config(
        {
            "seed": 5,
            "method": "groupvit",
            "model": MODEL,
            "data": {"image_size": 32, "num_prompts": 2},
            "loss": loss,
            "optim": {"accum_steps": accum_steps, "accum_mode": mode},
            "train": {"steps": 10, "batch_size": BATCH, "device": "cpu", "precision": "fp32"},
        }
    )


def build_run(loss: dict[str, Any], accum_steps: int, mode: str = "exact") -> _Run:
    cfg = config(loss, accum_steps, mode)
    return _Run(cfg, get_method("groupvit"), distributed.setup("cpu"))


def micro_batch(run: _Run, index: int) -> dict[str, torch.Tensor]:
    """Global micro-batch ``index``: the same samples whichever rank draws it."""
    rng = np.random.default_rng(index)
    samples = []
    for i in range(BATCH):
        nouns = rng.choice(WORDS, 3, replace=False)
        caption = f"a {nouns[0]} and a {nouns[1]} next to a {nouns[2]}"
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        rng_i = random.Random(index * 1000 + i)
        samples.append(make_sample(run.method.sample_options, f"{index}-{i}", image, caption, rng_i))
    batch = {name: torch.stack([s[name] for s in samples]) for name in samples[0]}
    return {**batch, "skipped": torch.tensor(index % 2)}


def exact_step(loss: dict[str, Any], rank: int, world: int, dtype: str = "float32") -> dict[str, Any]:
    """One exact step of this rank's micro-batches -> its local loss, outputs and gradients."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])  # the model is built and runs in it; the losses stay float32
    try:
        accum = MICRO_BATCHES // world
        run = build_run(loss, accum)
        batches = [micro_batch(run, rank * accum + i) for i in range(accum)]
        outputs, objective = run.exact_step(batches, STEP)
    finally:
        torch.set_default_dtype(default)
    params = dict(run.method.named_parameters())
    return {
        "loss": objective.item(),
        "outputs": {k: float(v.detach()) for k, v in outputs.items()},
        "grads": {name: p.grad.detach().clone() for name, p in params.items() if p.grad is not None},
        "params": [name for name, p in params.items() if p.requires_grad],
    }


def main(out: Path) -> None:
    env = distributed.setup("cpu")
    for dtype in DTYPES:
        for name, loss in VARIANTS.items():
            result = exact_step(loss, env.rank, env.world_size, dtype)
            torch.save(result, out / f"{name}_{dtype}_w{env.world_size}_rank{env.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
