"""Pack a finished GroupViT run into the small checkpoint that ``annofree demo`` starts from.

``make reproduce-demo`` trains ``configs/groupvit/demo_pretrain.yaml`` from scratch and then packs its run with
this module into ``reproduce_out/checkpoint/``; the repository commits that folder as
``src/annofree/demo/weights/groupvit/``. Packing changes how the weights are stored, not what they compute:

* every tensor is stored in half precision (the model is loaded back into float32);
* the rows of the text encoder's token embedding that never received a gradient are zeroed. They are words
  that no training caption or prompt used: almost all of CLIP's 49,408 tokens, and three quarters of the
  weights. A row that never got a gradient holds its random initialisation (shrunk by weight decay); zeros
  let git store the file in a few MB instead of 16. Such words carry no meaning for this model either way.

The run's resolved config, training log, scores and segmenter settings (``inference.json``, which
``annofree segment`` and ``annofree.load`` use) are copied beside the weights, so the folder is a run directory
that ``annofree.load``, ``annofree segment --weights`` and ``train.init_weights`` accept.

    python -m annofree.demo.checkpoint RUN_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from annofree.engine.checkpoint import CONFIG_NAME, has_state, load_state
from annofree.engine.config import OptimSection, load_config
from annofree.engine.optim import build_optimizer
from annofree.errors import UserError
from annofree.inference.settings import SETTINGS_NAME, ZeroShotSettings
from annofree.io import atomic_write
from annofree.methods import get_method
from annofree.weights import WEIGHTS_NAME, read_weights, save_state, write_stored_settings

TOKEN_EMBEDDING = "text_encoder.token_embedding.weight"
COPIED = (CONFIG_NAME, "log.jsonl", "results.json", SETTINGS_NAME)  # results.json: the run's own scores


def trained_token_rows(run_dir: str | Path) -> torch.Tensor:
    """``[vocab]`` bool: the token-embedding rows that received a gradient during the run.

    Read from the optimiser state (AdamW's second moment is exactly zero on a row whose gradient always was);
    the optimiser is rebuilt from the run's config, so that its parameters line up with the saved state.
    """
    if not has_state(run_dir):
        raise UserError(f"{run_dir}: no training state, so the token rows that were trained are unknown")
    config = load_config(Path(run_dir) / CONFIG_NAME, defaults=None)
    method = get_method(config["method"])(config)
    optim = OptimSection.from_dict(config["optim"])
    optimizer = build_optimizer(method, optim, lr=optim.lr, no_weight_decay=method.no_weight_decay())
    optimizer.load_state_dict(load_state(run_dir)["optimizer"])
    param = dict(method.named_parameters())[f"model.{TOKEN_EMBEDDING}"]
    if "exp_avg_sq" not in optimizer.state[param]:
        raise UserError(f"{run_dir}: the optimiser kept no second moment of the token embedding (not AdamW?)")
    return optimizer.state[param]["exp_avg_sq"].abs().sum(dim=1) > 0


def pack_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write the packed checkpoint of ``run_dir`` into ``out_dir``; returns what was kept."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state, method, model_config = read_weights(run_dir)
    if method != "groupvit":
        raise UserError(f"{run_dir}: a {method} run; only GroupViT runs are packed")
    keep = trained_token_rows(run_dir)
    state[TOKEN_EMBEDDING] = state[TOKEN_EMBEDDING] * keep[:, None].to(state[TOKEN_EMBEDDING].dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    half = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    save_state(out_dir / WEIGHTS_NAME, half, method, model_config)
    for name in COPIED:
        if (run_dir / name).is_file():
            atomic_write(out_dir / name, lambda tmp, source=run_dir / name: shutil.copyfile(source, tmp))
    if not (run_dir / SETTINGS_NAME).is_file():
        demo_settings(run_dir, out_dir)
    return {"token_rows_kept": int(keep.sum()), "token_rows": int(keep.numel())}


def demo_settings(run_dir: Path, out_dir: Path) -> None:
    """``inference.json`` for a demo run that predates it, from the settings its ``results.json`` was scored with
    (a demo run learned from synthetic scenes only); nothing when the run has no such scores."""
    try:
        evaluation = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["evaluation"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    settings = {key: value for key, value in evaluation.items() if key != "classes"}
    write_stored_settings(out_dir, ZeroShotSettings.from_dict(settings), synthetic=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        kept = pack_run(args.run_dir, args.out_dir)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"packed {args.run_dir} into {args.out_dir}: {kept['token_rows_kept']} of {kept['token_rows']} token rows")


if __name__ == "__main__":
    main()
