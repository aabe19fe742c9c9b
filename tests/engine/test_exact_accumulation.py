"""Exact accumulation (``optim.accum_mode: exact``): K micro-batches in one process train as K ranks would.

The reference is the distributed run itself: 4 gloo processes of one micro-batch each, and 2 processes of 2,
give the loss and gradients of 1 process accumulating 4, with Gumbel noise, drop path, BatchNorm and every
multi-label loss form on. Plain accumulation stays what it was: the mean of the micro-batches' own gradients.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from annofree.data.synth import SceneConfig, write_scenes
from annofree.engine import distributed
from annofree.engine.config import resolve_engine_config
from annofree.engine.logging import read_log
from annofree.engine.trainer import _Run, _Window, objective, train
from annofree.errors import UserError
from annofree.methods import get_method
from annofree.methods.groupvit import GroupViTMethod
from annofree.weights import read_weights
from tests.torchrun import run_torchrun

from . import exact_worker as problem

WORKER = Path(__file__).with_name("exact_worker.py")
RELATIVE = 1e-5  # the brief's bound on every parameter's gradient


def _torchrun(world: int, out: Path) -> list[dict]:
    """The worker's results per rank: ``results[rank][(variant, dtype)]``."""
    run_torchrun(WORKER, world, out, timeout=300)
    return [
        {key: torch.load(out / f"{key[0]}_{key[1]}_w{world}_rank{rank}.pt", weights_only=True) for key in CASES}
        for rank in range(world)
    ]


CASES = [(variant, dtype) for dtype in problem.DTYPES for variant in problem.VARIANTS]


def _assert_same_gradients(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: str, what: str):
    """The gradients agree within RELATIVE: in float64 parameter by parameter, in float32 in norm over them all.

    Some gradients are zero by symmetry (a bias before a normalisation, a key bias under a softmax): only rounding
    noise, below 1e-12 of the whole gradient's norm in float64 (the others are above 1e-7 of it); they must stay
    that small. In float32 the rounding noise alone, of order 1e-6 of the whole norm (the single process differs
    that much between 1 and 2 threads), exceeds RELATIVE of the smallest parameters' own gradients, so there
    each parameter's error is held within RELATIVE of the whole norm, and all of them together too.
    """
    assert got.keys() == expected.keys(), f"{what}: parameters with a gradient differ"
    total = torch.stack([value.double().norm() for value in expected.values()]).norm().item()
    errors = {name: (got[name].double() - value.double()).norm().item() for name, value in expected.items()}
    if dtype == "float32":
        whole = math.sqrt(sum(e * e for e in errors.values()))
        assert whole <= RELATIVE * total, f"{what}: the gradient differs by {whole / total:.2e} of its norm"
        worst = max(errors, key=errors.get)
        assert errors[worst] <= RELATIVE * total, f"{what}: {worst} differs by {errors[worst] / total:.2e} of the norm"
        return
    zero_by_symmetry = 0
    for name, value in expected.items():
        scale = value.norm().item()
        if scale <= 1e-12 * total:
            zero_by_symmetry += 1
            assert got[name].norm().item() <= 1e-12 * total, f"{what}: {name} should have no gradient"
            continue
        assert errors[name] <= RELATIVE * scale, f"{what}: {name} differs by {errors[name] / scale:.2e} of its norm"
    assert zero_by_symmetry < len(expected) // 5, f"{what}: {zero_by_symmetry} parameters without a gradient"


@pytest.fixture(scope="module")
def single_process() -> dict[tuple[str, str], dict]:
    """One process accumulating all 4 micro-batches (K = 4), per variant and precision."""
    return {(name, dtype): problem.exact_step(problem.VARIANTS[name], 0, 1, dtype) for name, dtype in CASES}


@pytest.mark.parametrize("world", [4, 2])
def test_one_process_accumulating_k_micro_batches_equals_k_ranks(tmp_path, single_process, world):
    ranks = _torchrun(world, tmp_path)
    for (name, dtype), single in single_process.items():
        what = f"{name} in {dtype}, {world} ranks"
        assert set(single["grads"]) == set(single["params"]), f"{what}: parameters left without a gradient"
        # The engine logs the mean of the ranks' losses: each rank's is over its own rows against all columns.
        for key in ["loss", *(k for k in single["outputs"] if k.startswith("loss"))]:
            mean = sum((r[name, dtype]["loss"] if key == "loss" else r[name, dtype]["outputs"][key]) for r in ranks)
            expected = single["loss"] if key == "loss" else single["outputs"][key]
            assert mean / world == pytest.approx(expected, rel=RELATIVE), f"{what}: {key}"
        skipped = sum(rank[name, dtype]["outputs"]["skipped"] for rank in ranks)
        assert skipped == single["outputs"]["skipped"] == 2  # micro-batches 1 and 3 report one skip each
        for rank, result in enumerate(ranks):
            _assert_same_gradients(result[name, dtype]["grads"], single["grads"], dtype, f"{what}, rank {rank}")


def test_the_step_is_not_a_plain_one(single_process):
    """The equality above is not trivially met by per-micro-batch losses: plain accumulation differs."""
    run = problem.build_run({}, problem.MICRO_BATCHES, mode="plain")
    for index in range(problem.MICRO_BATCHES):
        run.forward_backward(problem.micro_batch(run, index), last_micro_batch=index == problem.MICRO_BATCHES - 1)
    plain = {name: p.grad for name, p in run.method.named_parameters()}
    exact = single_process["softmax", "float32"]["grads"]
    differs = [name for name in exact if (plain[name] - exact[name]).norm() > 1e-2 * exact[name].norm()]
    assert len(differs) > len(exact) // 2


def test_at_initialisation_the_image_text_loss_is_near_ln_of_the_batch_it_scores(single_process):
    exact = single_process["softmax", "float32"]["outputs"]["loss_itc"]
    run = problem.build_run({}, problem.MICRO_BATCHES, mode="plain")
    plain = [
        run.forward_backward(problem.micro_batch(run, i), last_micro_batch=False)[0]["loss_itc"].item()
        for i in range(problem.MICRO_BATCHES)
    ]
    plain_mean = sum(plain) / len(plain)
    step_batch = problem.MICRO_BATCHES * problem.BATCH
    print(f"image-text loss at init: exact {exact:.3f} (ln {step_batch} = {math.log(step_batch):.3f}), "
          f"plain {plain_mean:.3f} (ln {problem.BATCH} = {math.log(problem.BATCH):.3f})")  # fmt: skip
    # Within ln 1.5 of ln(the batch scored), which are ln 4 apart (measured: exact 3.77, plain 2.14; the random
    # embeddings of a micro-batch are centred by the projection's BatchNorm, those of others are not).
    assert abs(exact - math.log(step_batch)) < math.log(1.5)
    assert abs(plain_mean - math.log(problem.BATCH)) < math.log(1.5)


def test_batchnorm_statistics_move_once_per_micro_batch():
    run = problem.build_run({}, problem.MICRO_BATCHES)
    batches = [problem.micro_batch(run, i) for i in range(problem.MICRO_BATCHES)]
    reference = problem.build_run({}, problem.MICRO_BATCHES)  # the same initial weights
    with torch.no_grad():
        for i, batch in enumerate(batches):
            with reference.micro_batch_rng(problem.STEP, i):
                reference.method(batch, embed_only=True)
    run.exact_step(batches, problem.STEP)
    expected = dict(reference.method.named_buffers())
    tracked = [name for name in expected if name.endswith("num_batches_tracked")]
    assert tracked and all(int(expected[name]) == problem.MICRO_BATCHES for name in tracked)
    for name, value in run.method.named_buffers():
        torch.testing.assert_close(value, expected[name], msg=lambda m, n=name: f"{n}: {m}")


def test_plain_mode_averages_the_micro_batches_own_gradients():
    """optim.accum_mode: plain is the old accumulation: the gradient of the mean of the micro-batches' losses."""
    run = problem.build_run({}, problem.MICRO_BATCHES, mode="plain")
    assert not run.exact
    batches = [problem.micro_batch(run, i) for i in range(problem.MICRO_BATCHES)]
    reference = problem.build_run({}, problem.MICRO_BATCHES, mode="plain")
    params = [p for p in reference.method.parameters() if p.requires_grad]
    expected = [torch.zeros_like(p) for p in params]
    torch.manual_seed(11)
    for batch in batches:  # each micro-batch's own gradient, on its own
        grads = torch.autograd.grad(objective(reference.method(batch), "groupvit"), params, allow_unused=True)
        for total, grad in zip(expected, grads, strict=True):
            total += grad / len(batches) if grad is not None else 0
    torch.manual_seed(11)  # the same draws of Gumbel noise and drop path
    for i, batch in enumerate(batches):
        run.forward_backward(batch, last_micro_batch=i == len(batches) - 1)
    got = {name: p.grad for name, p in run.method.named_parameters() if p.requires_grad}
    names = [name for name, p in reference.method.named_parameters() if p.requires_grad]
    _assert_same_gradients(got, dict(zip(names, expected, strict=True)), "float32", "plain")


def test_the_method_default_and_a_method_without_the_split():
    groupvit, densesiam = get_method("groupvit"), get_method("densesiam")
    assert groupvit.accum_mode == "exact" and groupvit.has_embed_split()
    assert densesiam.accum_mode == "plain" and not densesiam.has_embed_split()
    assert problem.build_run({}, 2, mode=None).exact
    from annofree.engine.config import check_method_config

    config = resolve_engine_config({"method": "densesiam", "optim": {"accum_mode": "exact"}, "train": {"steps": 1}})
    with pytest.raises(UserError, match=r"^config key optim\.accum_mode: exact needs embed\(\)") as caught:
        check_method_config(config, densesiam)
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match=r"optim\.accum_mode"):
        resolve_engine_config({"optim": {"accum_mode": "exactly"}, "train": {"steps": 1}})


def test_an_exact_step_counts_in_the_log_as_its_micro_batches():
    window = _Window()
    outputs = {"loss_itc": torch.tensor(3.5), "logit_scale": torch.tensor(14.0), "skipped": torch.tensor(2.0)}
    window.add_micro_batch(outputs, torch.tensor(3.5), count=4)
    window.add_micro_batch({**outputs, "loss_itc": torch.tensor(2.5)}, torch.tensor(2.5), count=4)
    assert window.micro_batches == 8  # images/s counts every micro-batch of the step
    assert window.means() == {"loss_itc": 3.0, "loss": 3.0, "logit_scale": 14.0}  # per-step values as they were
    assert window.take_skipped() == 4  # the step's skips, already summed over its micro-batches


def _run_config(steps: int) -> dict:
    model = {**problem.MODEL, "embed_dim": 16}
    return {
        "seed": 1,
        "method": "groupvit",
        "model": model,
        "data": {"image_size": 32, "num_prompts": 2, "shuffle_buffer": 8},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "clip_grad": 5.0, "accum_steps": 3},  # exact: groupvit's default
        "train": {"steps": steps, "batch_size": 4, "num_workers": 0, "save_every": 2, "log_every": 1,
                  "tensorboard": False, "device": "cpu", "precision": "fp32"},
    }  # fmt: skip


def test_an_exact_run_trains_saves_and_resumes_exactly_across_an_epoch_boundary(tmp_path, monkeypatch, capsys):
    # 22 scenes: 5 micro-batches of 4 per epoch (the last 2 dropped), 3 per step: steps 2 and 4 take micro-batches
    # from two epochs. The crash comes after the checkpoint at step 2 (one micro-batch into epoch 1).
    data = write_scenes(tmp_path / "data", train=22, val=0, cfg=SceneConfig(size=32), samples_per_shard=11,
                        workers=1, progress=False).train_pattern  # fmt: skip
    capsys.readouterr()
    straight = train(_run_config(5), tmp_path / "straight", data=data)
    assert (straight.step, straight.epoch) == (5, 2)
    shown = capsys.readouterr()
    assert "global batch 12 (4 x 1 x 3, exact: every sample a negative of every other)" in shown.out + shown.err
    log = read_log(tmp_path / "straight" / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5] and all(math.isfinite(r["loss"]) for r in log)

    def crash(self, step, total):
        if step == 3:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(GroupViTMethod, "on_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(_run_config(5), tmp_path / "resumed", data=data)
    resumed = train(_run_config(5), tmp_path / "resumed", data=data, resume=True)

    a, _, _ = read_weights(tmp_path / "straight")
    b, _, _ = read_weights(tmp_path / "resumed")
    initial = _Run(resolve_engine_config(_run_config(5)), GroupViTMethod, distributed.setup("cpu"))
    initial = initial.method.deployable().state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["img_encoder.patch_embed.proj.weight"], initial["img_encoder.patch_embed.proj.weight"])
    assert resumed.metrics["loss"] == straight.metrics["loss"]
