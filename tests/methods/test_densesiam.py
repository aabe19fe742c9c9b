"""DenseSiam's method: both modes' losses, stop-gradient, the RegionSim switch, config errors, and a tiny run
through the engine on a folder of PNGs with an exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import annofree
from annofree.cli import main as cli_main
from annofree.data.views import View
from annofree.engine.trainer import train
from annofree.errors import UserError
from annofree.methods.densesiam import DenseSiamMethod, image_seeds, output_std
from annofree.models import DenseSiam
from annofree.weights import read_weights

TINY_MODEL = {"dense_dim": 6, "aux_dim": 10, "fpn_channels": 16, "dense_hidden": 16, "dense_pred_hidden": 8,
              "region_dim": 8}  # fmt: skip
TINY_GLOBAL = {"global_branch": True, "global_dim": 16, "global_hidden": 16, "global_pred_hidden": 4}


def method(mode: str = "segment", model=None, loss=None, seed: int = 0) -> DenseSiamMethod:
    torch.manual_seed(seed)
    if model is None:
        model = TINY_MODEL if mode == "segment" else {**TINY_MODEL, "aux_dim": 0, **TINY_GLOBAL}
    config = {"mode": mode, "model": model, "data": {"image_size": 40, "view1": {"size": 32}}, "loss": loss or {}}
    return DenseSiamMethod(config)


def batch(seed: int = 5, n: int = 4) -> dict:
    images = torch.randint(0, 256, (n, 3, 40, 40), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return {"image": images, "seed": seed, "skipped": torch.tensor(0)}


def total(out: dict) -> torch.Tensor:
    return sum(value for key, value in out.items() if key.startswith("loss"))


def test_segment_mode_losses_and_metrics() -> None:
    m = method(loss={"region_start": 0})
    out = m(batch())
    assert set(out) == {"loss_pix", "loss_seg", "loss_aux", "loss_region", "std_pix", "cluster_usage", "region_on",
                        "skipped"}  # fmt: skip
    assert all(torch.isfinite(v).all() and v.ndim == 0 for v in out.values())
    assert m.loss.pix_weight == pytest.approx(np.log(10) / (np.log(10) + np.log(6)))  # "auto" weights
    total(out).backward()
    assert all(p.grad is not None for p in m.model.region.parameters())


def test_pretrain_mode_losses_and_metrics() -> None:
    m = method("pretrain", loss={"grid_size": 3, "region_start": 0})
    out = m(batch())
    assert set(out) == {"loss_pix", "loss_global", "std_global", "loss_region", "std_pix", "overlap", "region_on",
                        "skipped"}  # fmt: skip
    assert all(torch.isfinite(v).all() for v in out.values())
    assert -1.0 <= out["loss_pix"].item() <= 1.0  # negative cosine
    total(out).backward()
    assert m.model.backbone.conv1.weight.grad.abs().sum() > 0


def test_views_come_from_the_batch_seed() -> None:
    m = method()
    first, again, other = m(batch(seed=5)), m(batch(seed=5)), m({**batch(seed=5), "seed": 6})
    assert torch.equal(first["loss_pix"], again["loss_pix"])
    assert not torch.equal(first["loss_pix"], other["loss_pix"])


def _zero_last_layer(*predictors) -> None:
    """p = the last layer's bias: constant, so no gradient can flow into z through the prediction side."""
    with torch.no_grad():
        for predictor in predictors:
            predictor[-1].weight.zero_()


@pytest.mark.parametrize("mode", ["segment", "pretrain"])
def test_no_gradient_reaches_the_target_branch(mode: str) -> None:
    loss = {"region_weight": 0.0, "seg_weight": 0.0} if mode == "segment" else {"region_weight": 0.0, "grid_size": 3}
    m = method(mode, loss=loss)
    model = m.model
    _zero_last_layer(model.predictor, *(h for h in (model.aux_predictor, model.global_predictor) if h is not None))
    out = m(batch())
    total(out).backward()
    # The losses are live (the predictions' biases get gradients) ...
    assert model.predictor[-1].bias.grad.abs().sum() > 0
    # ... but the only path into the encoder left is through the targets, and it is cut.
    for name in ("backbone", "fpn", "projector", "aux_projector", "global_projector"):
        module = getattr(model, name)
        if module is not None:
            assert all(p.grad is None or not p.grad.any() for p in module.parameters()), name


@pytest.mark.parametrize("target", ["self", "cross"])
def test_segmentation_pseudo_labels_come_from_the_configured_view(target: str) -> None:
    """``loss.seg_target``: each view against its own argmax (the release) or against the other view's."""
    m = method(loss={"seg_target": target, "seg_reweight": None})
    g = torch.Generator().manual_seed(3)
    z1, z2 = (torch.randn(2, 6, 4, 4, generator=g, requires_grad=True) for _ in range(2))
    inside = torch.ones(2, 4, 4, dtype=torch.bool)
    inside[:, 0] = False  # view 2 does not show view 1's top row
    labels1, labels2 = z1.detach().argmax(1), z2.detach().argmax(1)
    assert (labels1 != labels2).any()

    def ce(logits, labels, mask=None):
        per = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return per.mean() if mask is None else per[mask].mean()

    if target == "cross":
        expected = 0.5 * (ce(z1, labels2, inside) + ce(z2, labels1, inside))
    else:
        expected = 0.5 * (ce(z1, labels1) + ce(z2, labels2, inside))
    got = m._seg_loss(z1, z2, inside)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # The pseudo-labels carry no gradient: the loss's gradient is exactly that of plain CE to fixed labels.
    (grad_got,) = torch.autograd.grad(got, z1)
    (grad_expected,) = torch.autograd.grad(expected, z1)
    assert torch.allclose(grad_got, grad_expected, atol=1e-7)


def test_region_sim_switches_on_at_the_configured_step() -> None:
    m = method(loss={"region_start": 0.5})
    assert not m.region_on
    m.on_step(4, 10)
    out = m(batch())
    assert "loss_region" not in out and float(out["region_on"]) == 0.0
    total(out).backward()
    assert all(p.grad is None for p in m.model.region.parameters())
    m.on_step(5, 10)
    out = m(batch())
    assert "loss_region" in out and float(out["region_on"]) == 1.0
    by_step = method(loss={"region_start": 3})
    by_step.on_step(2, 100)
    assert not by_step.region_on
    by_step.on_step(3, 100)
    assert by_step.region_on
    assert method(loss={"region_start": 0}).region_on
    assert not method(loss={"region_weight": 0, "region_start": 0}).region_on


def test_pairs_without_overlap_give_finite_zero_losses() -> None:
    m = method("pretrain", loss={"grid_size": 3, "region_start": 0})
    images = torch.rand(2, 3, 32, 32)
    flips = torch.tensor([False, True])
    left = View(images, torch.tensor([[0.0, 0.0, 10.0, 40.0]] * 2), flips)
    right = View(images.flip(-1), torch.tensor([[20.0, 0.0, 40.0, 40.0]] * 2), flips)
    out = m.pretrain_losses(left, right)
    assert float(out["overlap"]) == 0.0
    assert out["loss_pix"].item() == 0.0 and out["loss_region"].item() == 0.0
    total(out).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_collapse_monitor() -> None:
    spread = torch.randn(512, 64)
    assert output_std(spread) == pytest.approx(1.0, abs=0.05)
    assert float(output_std(torch.ones(512, 64) + 1e-3 * spread)) < 0.01
    assert output_std(torch.randn(4, 64, 8, 8)) == pytest.approx(1.0, abs=0.05)  # channels on dim 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "finetune"}, r"config key mode: must be pretrain \| segment"),
        ({"loss": {"grid_size": 3}}, r"config key loss\.grid_size: belongs to densesiam mode pretrain, not segment"),
        ({"loss": {"grid_sise": 3}}, r"unknown config key loss\.grid_sise \(did you mean loss\.grid_size\?\)"),
        ({"mode": "pretrain", "model": {"aux_dim": 16}}, r"model\.aux_dim: must be 0 in pretrain"),
        ({"loss": {"global_weight": 1.0}}, "needs model.global_branch"),
        ({"loss": {"region_start": 1.5}}, "region_start"),
        ({"model": {"aux_dim": 0}, "loss": {"aux_weight": 0.5}}, "needs an over-clustering head"),
        (
            {"data": {"view1": {"sise": 3}}},
            r"unknown config key data\.view1\.sise \(did you mean data\.view1\.size\?\)",
        ),
        ({"model": {"backbone": "vgg"}}, r"config key model\.backbone: must be resnet18 \| resnet50"),
    ],
)
def test_config_errors_are_clear(config: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DenseSiamMethod({"model": TINY_MODEL, **config})


# --- through the engine --------------------------------------------------------------------------------------


def write_images(folder, count: int, size: int = 40) -> None:
    """Blobs on noise, some in a subfolder (the reader is recursive)."""
    rng = np.random.default_rng(0)
    for index in range(count):
        image = rng.integers(0, 80, (size, size + 8, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        image[y : y + size // 2, x : x + size // 2] = rng.integers(120, 255, 3)
        target = folder / ("sub" if index % 3 == 0 else "") / f"img{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)


# The release's own laws (configs/densesiam/cocostuff27_segment.yaml), at the tiny scale.
RELEASE_DATA = {"fixed_views": True, "replay": "release",
                "view1": {"size": 32, "crop_law": "square", "antialias": False, "blur_law": "release"}}  # fmt: skip


def run_config(steps: int = 4, release: bool = False) -> dict:
    return {
        "seed": 2,
        "method": "densesiam",
        "mode": "segment",
        "model": TINY_MODEL,
        "data": {"image_size": 40, **(RELEASE_DATA if release else {"view1": {"size": 32}})},
        "loss": {"region_start": 3},  # switched on after the resume point
        "optim": {"name": "sgd", "lr": 0.05, "min_lr": 0.05, "weight_decay": 1e-4, "decay_all": release},
        "train": {"steps": steps, "batch_size": 4, "num_workers": 0, "save_every": 2, "log_every": 1,
                  "tensorboard": False, "device": "cpu"},
    }  # fmt: skip


def fixed_method(**data) -> DenseSiamMethod:
    torch.manual_seed(0)
    return DenseSiamMethod({"mode": "segment", "model": TINY_MODEL, "data": {"image_size": 40, **RELEASE_DATA, **data}})


def test_fixed_views_follow_the_image_not_the_batch_or_epoch() -> None:
    m = fixed_method()
    images = batch(n=4)["image"]
    seeds = image_seeds(images, 2)
    assert torch.equal(seeds, image_seeds(images.clone(), 2)) and len(set(seeds.tolist())) == 4
    assert not torch.equal(seeds, image_seeds(images, 3))  # the run's seed counts
    first, _ = m.make_views(images, 101, seeds)
    again, _ = m.make_views(images[[3, 1]], 977, seeds[[3, 1]])  # another step's batch: other order, other seed
    assert torch.equal(first.images[[3, 1]], again.images) and torch.equal(first.boxes[[3, 1]], again.boxes)
    fresh, _ = m.make_views(images, 101)  # without the per-image seeds: the batch's own draw
    assert not torch.equal(fresh.boxes, first.boxes)


def test_release_replay_runs_and_needs_square_crops() -> None:
    out = fixed_method()({**batch(), "image_seeds": torch.arange(4)})
    assert torch.isfinite(total(out))
    with pytest.raises(UserError, match=r"data\.replay"):
        fixed_method(view1={"size": 32})


@pytest.mark.parametrize("release", [False, True], ids=["annofree", "release-options"])
def test_training_run_and_exact_resume(tmp_path, monkeypatch, release: bool) -> None:
    # 12 images in batches of 4: 3 batches an epoch, so the resume (from step 2) starts mid-epoch and the
    # 4 steps cross an epoch boundary.
    data = tmp_path / "images"
    write_images(data, count=12)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(run_config(release=release)))
    straight_dir = tmp_path / "straight"
    assert cli_main(["train", "densesiam", "--config", str(config_file), "--data", str(data),
                     "--out", str(straight_dir)]) == 0  # fmt: skip

    original = DenseSiamMethod.on_step

    def crash(self, step, total):
        if step == 3:  # after the checkpoint at step 2, before RegionSim switches on
            raise RuntimeError("simulated crash")
        original(self, step, total)

    with monkeypatch.context() as patch:
        patch.setattr(DenseSiamMethod, "on_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(run_config(release=release), tmp_path / "resumed", data=str(data))
    resumed = train(run_config(release=release), tmp_path / "resumed", data=str(data), resume=True)
    assert resumed.step == 4 and resumed.epoch == 1
    assert resumed.metrics["region_on"] == 1.0 and "loss_region" in resumed.metrics

    a, method_name, _ = read_weights(straight_dir)
    b, _, _ = read_weights(tmp_path / "resumed")
    assert method_name == "densesiam" and a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name

    model = annofree.load(straight_dir)
    assert isinstance(model, DenseSiam)
    assert model.segment_clusters(torch.rand(1, 3, 40, 48)).shape == (1, 40, 48)
