"""GroupViT through the engine on real shards: a crash and --resume give the weights of a straight run; shards
over HTTP train as the same shards on disk; a resampled weighted mixture resumes exactly."""

from __future__ import annotations

import pytest

from annofree.data.synth import SceneConfig, write_scenes
from annofree.engine.trainer import train
from annofree.methods.groupvit import GroupViTMethod
from tests.data.test_sources import ShardServer
from tests.tiny import assert_same_weights

from .test_groupvit import TINY_MODEL


def config(steps: int = 6, multi_label_form: str = "softmax") -> dict:
    return {
        "seed": 1,
        "method": "groupvit",
        "model": {**TINY_MODEL, "image": {**TINY_MODEL["image"], "drop_path_rate": 0.1}},  # forward randomness
        "data": {"image_size": 32, "num_prompts": 2, "shuffle_buffer": 16},
        "loss": {"multi_label_form": multi_label_form},  # sigmoid: a training-only bias must resume too
        "optim": {"lr": 1e-3, "warmup_steps": 2, "clip_grad": 5.0},
        "train": {"steps": steps, "batch_size": 8, "num_workers": 1, "save_every": 2, "log_every": 1,
                  "tensorboard": False, "device": "cpu"},
    }  # fmt: skip


@pytest.mark.parametrize("multi_label_form", ["softmax", "sigmoid"])
def test_groupvit_resumes_exactly_from_shards_with_workers(tmp_path, monkeypatch, multi_label_form):
    # 44 scenes in shards of 20: 5 batches of 8 per epoch, so 6 steps cross an epoch boundary.
    data = write_scenes(tmp_path / "data", train=44, val=0, cfg=SceneConfig(size=32), samples_per_shard=20,
                        workers=1, progress=False).train_pattern  # fmt: skip
    straight = train(config(multi_label_form=multi_label_form), tmp_path / "straight", data=data)
    assert straight.step == 6 and straight.epoch == 1

    def crash(self, step, total):
        if step == 5:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(GroupViTMethod, "on_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(config(multi_label_form=multi_label_form), tmp_path / "resumed", data=data)
    resumed = train(config(multi_label_form=multi_label_form), tmp_path / "resumed", data=data, resume=True)

    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    assert resumed.metrics["loss"] == straight.metrics["loss"]


def test_groupvit_trains_the_same_weights_from_http_as_from_disk(tmp_path):
    # 20 shards of 2 scenes, served from 127.0.0.1; bitwise the same weights as the shards read from disk.
    summary = write_scenes(tmp_path / "data", train=40, val=0, cfg=SceneConfig(size=32), samples_per_shard=2,
                           workers=1, progress=False)  # fmt: skip
    run_config = config(steps=3)
    run_config["train"]["num_workers"] = 0
    server = ShardServer(tmp_path / "data" / "train")
    try:
        from_http = train(run_config, tmp_path / "http", data=f"{server.url}/{{000000..000019}}.tar")
    finally:
        server.close()
    from_disk = train(run_config, tmp_path / "disk", data=summary.train_pattern)
    assert summary.train_pattern.endswith("{000000..000019}.tar")
    assert_same_weights(tmp_path / "disk", tmp_path / "http")
    assert from_http.metrics["loss"] == from_disk.metrics["loss"]


def test_a_resampled_weighted_mixture_trains_and_resumes_exactly(tmp_path, monkeypatch):
    sources = []
    for name, seed in (("a", 0), ("b", 1)):
        summary = write_scenes(tmp_path / name, train=20, val=0, cfg=SceneConfig(size=32), samples_per_shard=5,
                               workers=1, progress=False, seed=seed)  # fmt: skip
        sources.append(summary.train_pattern)
    data = "::".join(sources)
    run_config = config(steps=4)
    run_config["data"].update(resampled=True, samples_per_epoch=24, source_weights=[1, 3])  # 3 batches of 8 an epoch
    run_config["train"]["num_workers"] = 0  # (workers: tests/data/test_sampling.py)
    straight = train(run_config, tmp_path / "straight", data=data)
    assert straight.step == 4 and straight.epoch == 1

    def crash(self, step, total):
        if step == 3:  # the checkpoint of step 2 is mid-epoch
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(GroupViTMethod, "on_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(run_config, tmp_path / "resumed", data=data)
    train(run_config, tmp_path / "resumed", data=data, resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
