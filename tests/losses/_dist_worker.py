"""Worker for test_distributed.py: one rank of a 2-process gloo run of the GroupViT losses.

Launched by ``python -m torch.distributed.run --nproc_per_node=2 _dist_worker.py OUT_DIR``. Each rank takes its
half of a fixed batch, computes each loss, backpropagates, averages the parameter gradients over ranks with
all_reduce (as DDP does) and writes ``OUT_DIR/rank<r>.json``: per loss, the mean loss over ranks and the averaged
gradients. The test imports :func:`build_problem` and :func:`compute_losses` to get the single-process answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from annofree.losses import image_text_contrastive_loss, multi_label_contrastive_loss, multi_label_sigmoid_loss

GLOBAL_BATCH, PROMPTS, IN_WIDTH, EMBED_WIDTH = 6, 3, 5, 4
LOSS_NAMES = ("contrastive", "multi_label", "multi_label_same_text", "multi_label_sigmoid")


class TinyTowers(nn.Module):
    """Two linear "encoders", the two logit scales and the sigmoid bias: every loss input has a parameter gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(IN_WIDTH, EMBED_WIDTH)
        self.text = nn.Linear(IN_WIDTH, EMBED_WIDTH)
        self.logit_scale = nn.Parameter(torch.tensor(1.5))
        self.multi_label_logit_scale = nn.Parameter(torch.tensor(2.0))
        self.multi_label_bias = nn.Parameter(torch.tensor(-1.0))


def build_problem() -> tuple[TinyTowers, dict[str, torch.Tensor]]:
    """The same model and global batch on every process (fixed seed, float64)."""
    torch.manual_seed(0)
    model = TinyTowers().double()
    batch = {
        "images": torch.randn(GLOBAL_BATCH, IN_WIDTH, dtype=torch.float64),
        "captions": torch.randn(GLOBAL_BATCH, IN_WIDTH, dtype=torch.float64),
        "prompts": torch.randn(GLOBAL_BATCH, PROMPTS, IN_WIDTH, dtype=torch.float64),
        # Texts shared across the two halves (7 in captions 0 and 4, 1 in captions 1 and 5), so same-text
        # positives cross ranks; -1 is padding.
        "prompt_ids": torch.tensor([[7, 2, 3], [1, 4, -1], [5, 6, 8], [9, 10, 11], [12, 7, 13], [1, 14, -1]]),
    }
    return model, batch


def compute_losses(model: TinyTowers, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each loss on the given (local or global) batch."""
    images = model.image(batch["images"])
    captions = model.text(batch["captions"])
    prompts = model.text(batch["prompts"])
    scale = model.logit_scale.exp().clamp(max=100)
    multi_scale = model.multi_label_logit_scale.exp().clamp(max=100)
    return {
        "contrastive": image_text_contrastive_loss(images, captions, scale),
        "multi_label": multi_label_contrastive_loss(images, prompts, multi_scale),
        "multi_label_same_text": multi_label_contrastive_loss(
            images, prompts, multi_scale, prompt_ids=batch["prompt_ids"], same_text_positive=True
        ),
        "multi_label_sigmoid": multi_label_sigmoid_loss(
            images, prompts, multi_scale, model.multi_label_bias, prompt_ids=batch["prompt_ids"]
        ),
    }


def flat_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient, flattened; zeros for parameters that a loss does not use."""
    return {
        name: (param.grad if param.grad is not None else torch.zeros_like(param)).flatten()
        for name, param in model.named_parameters()
    }


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, batch = build_problem()
    local = GLOBAL_BATCH // world
    local_batch = {key: value[rank * local : (rank + 1) * local] for key, value in batch.items()}

    results = {}
    for name in LOSS_NAMES:
        model.zero_grad()
        loss = compute_losses(model, local_batch)[name]
        loss.backward()
        grads = {}
        for param_name, grad in flat_grads(model).items():
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            grads[param_name] = (grad / world).tolist()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss, op=dist.ReduceOp.SUM)
        results[name] = {"loss": mean_loss.item() / world, "local_loss": loss.item(), "grads": grads}
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "results": results}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
