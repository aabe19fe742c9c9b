"""Training throughput and zero-shot latency of annofree's GroupViT beside transformers' GroupViTModel.

Both sides run the gcc_yfcc architecture (annofree's default ``GroupViTConfig``; transformers' default
``GroupViTConfig`` is the same network, without drop path) and do the same work per training step:
image and text forward in train mode (Gumbel hard assignment, BatchNorm batch statistics), the
image-text contrastive loss on the local batch, backward, one AdamW step. Same random inputs, same
number of threads; warm-up steps are excluded and the models alternate step by step (order swapped every
round) so that load from other processes falls on all alike.

Precision: ``--precision fp32 | bf16 | auto`` (auto: :func:`annofree.precision.resolve_precision`, bf16 where
this CPU runs it natively) for both sides (bf16 = CPU autocast). When it is not fp32, transformers also runs
in fp32 in the same rotation, so that annofree's setting is compared with transformers' fp32 too
(``vs_transformers_fp32``; the issue's target: annofree's best setting >= 3x transformers' fp32 img/s).
``--compile`` runs annofree's training forward (features + loss) through ``torch.compile``
(:func:`annofree.engine.compiled.compile_forward`, as ``train.compile``; its compiling is a warm-up step).

The zero-shot part times one 448x448 image against 5 class prompts:
- transformers: ``GroupViTModel(..., output_segmentation=True)``. Its forward has no
  ``interpolate_pos_encoding`` switch for GroupViT, so at 448 it refuses the image; it is timed at 224,
  and at 448 with its own ``GroupViTVisionEmbeddings.interpolate_pos_encoding`` forced on here.
- annofree, the same work: ``encode_groups`` + ``encode_text``, group-class affinity, grouping maps
  resized to the image and multiplied with the affinity.
- annofree, the whole pipeline (``annofree.inference.ZeroShotSegmenter``, when present): tokenising the
  prompts, text embeddings, top-5 filter, background, label map.

annofree runs at the chosen precision (bf16 autocast when chosen), transformers at that precision and in fp32.

``--json OUT`` writes the figures (``precision``, ``annofree_img_s``, ``transformers_img_s``, ``ratio``,
``transformers_fp32_img_s``, ``vs_transformers_fp32``, ``annofree_zero_shot_ms``, ``transformers_zero_shot_ms``,
``transformers_fp32_zero_shot_ms``, the medians per step, ...) and the machine (CPU model, its bf16 flags,
torch version, threads).

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--steps 6] [--warmup 2] [--threads 2]
        [--precision fp32|bf16|auto] [--compile] [--batch 8] [--latency-repeats 5] [--profile] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from annofree.engine.compiled import compile_forward
from annofree.models import GroupViT, GroupViTConfig
from annofree.precision import autocast as precision_autocast
from annofree.precision import cpu_bf16_features, resolve_precision

CLASS_NAMES = ["cat", "dog", "car", "tree", "person"]
IMAGE_SIZE = 224
ZERO_SHOT_SIZE = 448


# ----------------------------------------------------------------------------- shared pieces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per model first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="bf16: CPU autocast; auto: per CPU"
    )
    parser.add_argument("--compile", action="store_true", help="annofree's training forward through torch.compile")
    parser.add_argument("--json", metavar="OUT", help="write the figures and the machine to this JSON file")
    parser.add_argument("--batch", type=int, default=8, help="images (and captions) per step")
    parser.add_argument("--latency-repeats", type=int, default=5, help="timed zero-shot passes per variant")
    parser.add_argument(
        "--profile", action="store_true", help="profile one training step of each and print the top ops"
    )
    parser.add_argument("--skip-train", action="store_true", help="zero-shot latency only")
    parser.add_argument("--skip-latency", action="store_true", help="training throughput only")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.batch < 2 or args.latency_repeats < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --threads >= 1, --batch >= 2, --latency-repeats >= 1")
    return args


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """CPU autocast to a resolved precision (nothing for fp32)."""
    return precision_autocast(precision, "cpu")


def random_pixels(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Normalised-looking pixels ``[B, 3, size, size]``."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_batch(batch: int, size: int, context: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels and captions: start id, words, end id (the largest id), end-id padding."""
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = random_pixels(batch, size, seed)
    ids = torch.randint(1, vocab - 2, (batch, context), generator=gen)
    ids[:, 0] = vocab - 2
    for row in range(batch):
        end = int(torch.randint(5, context, (1,), generator=gen))
        ids[row, end:] = vocab - 1
    return pixels, ids


def contrastive_loss_fn() -> tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], str]:
    """annofree's image-text contrastive loss on the local batch, or a local CLIP loss if it is absent."""
    try:
        from annofree.losses.contrastive import image_text_contrastive_loss
    except ImportError:

        def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
            labels = torch.arange(len(logits), device=logits.device)
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

        return clip_loss, "local CLIP loss (benchmark)"
    return functools.partial(image_text_contrastive_loss, gather_distributed=False), "annofree.losses.contrastive"


def param_millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# ----------------------------------------------------------------------------- training steps


@dataclass
class Runner:
    """One model's training (or inference) step and the wall times of its timed runs."""

    name: str
    step: Callable[[], float]
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    first_s: float | None = None  # the first (warm-up) call: with --compile, compiling included

    def run(self, record: bool) -> None:
        start = time.perf_counter()
        value = self.step()
        elapsed = time.perf_counter() - start
        if self.first_s is None:
            self.first_s = elapsed
        if record:
            self.times.append(elapsed)
            self.values.append(value)


class OursTrainForward(torch.nn.Module):
    """annofree's training forward (features of both towers + the loss): what ``--compile`` compiles."""

    def __init__(self, model: GroupViT):
        super().__init__()
        self.model = model
        self.loss_fn, _ = contrastive_loss_fn()

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        image = self.model.image_features(pixels)
        text = self.model.text_features(ids)
        return self.loss_fn(image.float(), text.float(), self.model.scale())


def ours_train_step(model: GroupViT, pixels, ids, precision: str, compiled: bool) -> Callable[[], float]:
    forward = OursTrainForward(model)
    if compiled:
        compile_forward(forward, lambda text: print(text, file=sys.stderr), torch.device("cpu"), what="--compile")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    model.train()

    def step() -> float:
        with autocast(precision):
            loss = forward(pixels, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def theirs_train_step(hf_model, pixels, ids, precision: str) -> Callable[[], float]:
    """transformers' own training call: ``return_loss=True`` gives the same local-batch CLIP loss."""
    optimizer = torch.optim.AdamW(hf_model.parameters(), lr=1e-4, weight_decay=0.05)
    hf_model.train()

    def step() -> float:
        with autocast(precision):
            loss = hf_model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def alternate(runners: list[Runner], warmup: int, rounds: int) -> None:
    """Warm-up rounds untimed, then timed rounds; the order of the runners flips every round."""
    for index in range(warmup + rounds):
        order = runners if index % 2 == 0 else runners[::-1]
        for runner in order:
            runner.run(record=index >= warmup)


def profile_step(runner: Runner, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        runner.step()
    print(f"\n--- profile of one training step: {runner.name} ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


# ----------------------------------------------------------------------------- zero-shot latency


def prompt_ids(vocab_context: int) -> torch.Tensor:
    """Token ids of "a photo of a {class}." for the 5 classes (CLIP BPE; random ids if it is missing)."""
    prompts = [f"a photo of a {name}." for name in CLASS_NAMES]
    try:
        import annofree

        return annofree.tokenize(prompts, context_length=vocab_context)
    except (ImportError, AttributeError):
        return random_batch(len(prompts), 16, vocab_context, 49408, seed=3)[1]  # same shapes, random words


def ours_zero_shot(model: GroupViT, pixels: torch.Tensor, ids: torch.Tensor, precision: str) -> Callable[[], float]:
    """The work of transformers' output_segmentation, with annofree's model calls."""

    def step() -> float:
        with torch.no_grad(), autocast(precision):
            out = model.encode_groups(pixels)
            text = model.encode_text(ids)
            affinity = (out.group_embeds @ text.T * model.scale()).softmax(dim=-1)  # [B, G, C]
            maps = out.grouping.transpose(1, 2).reshape(pixels.shape[0], -1, *out.grid)
            maps = F.interpolate(maps, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
            logits = torch.einsum("bgc,bghw->bchw", affinity, maps)
        return float(logits.argmax(dim=1).float().mean())

    return step


def ours_pipeline(model: GroupViT, image_uint8, precision: str) -> Callable[[], float] | None:
    try:
        from annofree.inference.zero_shot import ZeroShotSegmenter
    except ImportError:
        return None

    def step() -> float:
        # tokenises + encodes the prompts; the segmenter's own precision option (its image encoder under autocast)
        segmenter = ZeroShotSegmenter(model, CLASS_NAMES, short_side=None, precision=precision)
        return float(segmenter.segment(image_uint8).label_map.mean())

    return step


def theirs_zero_shot(hf_model, pixels: torch.Tensor, ids: torch.Tensor, precision: str) -> Callable[[], float]:
    def step() -> float:
        with torch.no_grad(), autocast(precision):
            out = hf_model(input_ids=ids, pixel_values=pixels, output_segmentation=True)
        return float(out.segmentation_logits.argmax(dim=1).float().mean())

    return step


@contextlib.contextmanager
def hf_interpolating(hf_model):
    """Switch on transformers' own position-embedding interpolation, which its forward cannot pass on."""
    embeddings = hf_model.vision_model.embeddings
    embeddings.forward = functools.partial(type(embeddings).forward, embeddings, interpolate_pos_encoding=True)
    try:
        yield
    finally:
        del embeddings.forward


def hf_refuses(hf_model, pixels: torch.Tensor, ids: torch.Tensor) -> str | None:
    """The error transformers' plain forward raises at this size (None if it runs)."""
    try:
        with torch.no_grad():
            hf_model(input_ids=ids, pixel_values=pixels, output_segmentation=True)
    except (ValueError, RuntimeError) as exc:
        return str(exc).splitlines()[0]
    return None


# ----------------------------------------------------------------------------- reporting


def fmt_ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):9.1f}"


def img_s(runner: Runner, batch: int) -> float:
    return batch * len(runner.times) / sum(runner.times)


def train_benchmark(args: argparse.Namespace, ours: GroupViT, hf_model) -> dict[str, float]:
    """Training img/s of annofree (precision, --compile) and transformers (precision, and fp32 when different)."""
    pixels, ids = random_batch(args.batch, IMAGE_SIZE, ours.config.text.context_length, ours.config.text.vocab_size)
    runners = {
        "annofree": Runner("annofree", ours_train_step(ours, pixels, ids, args.precision, args.compile)),
        "transformers": Runner("transformers", theirs_train_step(hf_model, pixels, ids, args.precision)),
    }
    if args.precision != "fp32":
        runners["transformers_fp32"] = Runner("transformers fp32", theirs_train_step(hf_model, pixels, ids, "fp32"))
    _, loss_name = contrastive_loss_fn()
    print(
        f"\nTraining: batch {args.batch}, {IMAGE_SIZE}x{IMAGE_SIZE}, {args.precision}"
        f"{' (annofree compiled)' if args.compile else ''}, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} timed steps each, alternating; our loss: {loss_name}"
    )
    alternate(list(runners.values()), args.warmup, args.steps)
    print(f"{'model':<18}{'img/s':>9}{'median ms/step':>16}{'min ms':>9}{'max ms':>9}{'last loss':>11}")
    rates = {key: img_s(r, args.batch) for key, r in runners.items()}
    for key, r in runners.items():
        print(
            f"{r.name:<18}{rates[key]:9.2f}{fmt_ms(r.times):>16}{1000 * min(r.times):9.1f}"
            f"{1000 * max(r.times):9.1f}{r.values[-1]:11.4f}"
        )
    fp32_rate = rates.get("transformers_fp32", rates["transformers"])
    figures = {
        "annofree_img_s": rates["annofree"],
        "transformers_img_s": rates["transformers"],
        "ratio": rates["annofree"] / rates["transformers"],
        "transformers_fp32_img_s": fp32_rate,
        "vs_transformers_fp32": rates["annofree"] / fp32_rate,
        **{f"{key}_median_ms_per_step": 1000 * statistics.median(r.times) for key, r in runners.items()},
        "annofree_first_step_s": runners["annofree"].first_s,  # with --compile: compiling included
    }
    compiling = ", compiling" if args.compile else ""
    print(f"annofree's first step (warm-up{compiling}): {runners['annofree'].first_s:.1f} s")
    print(f"ratio annofree / transformers at {args.precision} (img/s): {figures['ratio']:.3f}")
    print(f"annofree ({args.precision}{', compiled' if args.compile else ''}) / transformers fp32: "
          f"{figures['vs_transformers_fp32']:.3f}")  # fmt: skip
    if args.profile:
        for r in runners.values():
            profile_step(r)
    return figures


def latency_benchmark(args: argparse.Namespace, ours: GroupViT, hf_model) -> dict[str, float]:
    """Zero-shot ms of one image: annofree at the precision, transformers at the precision and in fp32."""
    ours.eval()
    hf_model.eval()
    ids = prompt_ids(ours.config.text.context_length)
    theirs_precisions = [args.precision] if args.precision == "fp32" else [args.precision, "fp32"]
    print(
        f"\nZero-shot: one image, {len(CLASS_NAMES)} class prompts, {args.threads} threads, annofree "
        f"{args.precision}, transformers {' and '.join(theirs_precisions)}, median of {args.latency_repeats} "
        "(1 warm-up), alternating"
    )
    rows: list[Runner] = []
    figures: dict[str, float] = {}
    for size in (IMAGE_SIZE, ZERO_SHOT_SIZE):
        pixels = random_pixels(1, size, seed=size)
        refusal = hf_refuses(hf_model, pixels, ids)
        if refusal is not None:
            print(f"  transformers' GroupViTModel.forward refuses {size}x{size}: {refusal}")
        ours_row = Runner(f"annofree encode_groups+affinity @{size} {args.precision}", ours_zero_shot(
            ours, pixels, ids, args.precision))  # fmt: skip
        group = [ours_row]
        theirs_rows = {}
        for precision in theirs_precisions:
            plain = theirs_zero_shot(hf_model, pixels, ids, precision)
            if refusal is None:
                step, note = plain, ""
            else:

                def step(plain=plain) -> float:
                    with hf_interpolating(hf_model):
                        return plain()

                note = " (forced interp.)"
            theirs_rows[precision] = Runner(f"transformers output_segmentation @{size}{note} {precision}", step)
            group.append(theirs_rows[precision])
        image = (pixels[0].permute(1, 2, 0).sigmoid() * 255).to(torch.uint8).numpy()
        pipeline = ours_pipeline(ours, image, args.precision)
        if pipeline is not None:
            group.append(Runner(f"annofree ZeroShotSegmenter.segment @{size} {args.precision}", pipeline))
        alternate(group, 1, args.latency_repeats)
        rows.extend(group)
        if size == ZERO_SHOT_SIZE:
            figures["annofree_zero_shot_ms"] = 1000 * statistics.median(ours_row.times)
            figures["transformers_zero_shot_ms"] = 1000 * statistics.median(theirs_rows[args.precision].times)
            figures["transformers_fp32_zero_shot_ms"] = 1000 * statistics.median(theirs_rows["fp32"].times)
            figures["zero_shot_ratio"] = figures["annofree_zero_shot_ms"] / figures["transformers_zero_shot_ms"]
            if pipeline is not None:
                figures["annofree_pipeline_zero_shot_ms"] = 1000 * statistics.median(group[-1].times)
    print(f"{'variant':<66}{'median ms':>10}{'min ms':>9}")
    for r in rows:
        print(f"{r.name:<66}{fmt_ms(r.times):>10}{1000 * min(r.times):9.1f}")
    return figures


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(args: argparse.Namespace, reason: str) -> dict[str, object]:
    import transformers

    return {
        "cpu": cpu_model(),
        "cpu_bf16": cpu_bf16_features(),  # what torch reports: mkldnn_bf16, avx512_bf16, amx_tile
        "precision_reason": reason,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import transformers
    except ImportError:
        print("this benchmark needs transformers (pip install transformers)", file=sys.stderr)
        return 2
    requested = args.precision
    args.precision, reason = resolve_precision(requested, torch.device("cpu"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = GroupViT(GroupViTConfig())
    hf_model = transformers.GroupViTModel(transformers.GroupViTConfig())
    print(
        f"{cpu_model()}; torch {torch.__version__}, transformers {transformers.__version__}; precision "
        f"{requested} -> {args.precision} ({reason}); parameters: annofree {param_millions(ours):.2f}M (incl. "
        f"multi-label scale), transformers {param_millions(hf_model):.2f}M; annofree drop path "
        f"{ours.config.image.drop_path_rate} (transformers has none)"
    )
    figures: dict[str, object] = {
        "precision": args.precision,
        "requested_precision": requested,
        "compile": args.compile,
        "batch": args.batch,
        "image_size": IMAGE_SIZE,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    if not args.skip_train:
        figures.update(train_benchmark(args, ours, hf_model))
    if not args.skip_latency:
        figures.update(latency_benchmark(args, ours, hf_model))
    figures["machine"] = machine(args, reason)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
