"""GroupViT trained on image-caption pairs (Xu et al., CVPR 2022).

One step: encode the images, the captions and K noun prompts per caption; the loss is the image-text
contrastive loss plus the multi-label contrastive loss between each image and its caption's prompts
(``loss.multi_label_weight``), both over the global batch. Only images and captions are read: no masks.
The step is split into ``embed`` (the encoders: embeddings, logit scales, metrics) and ``losses`` (the maths on
the embeddings), so that exact accumulation (``optim.accum_mode: exact``, the default here) takes the losses over
every micro-batch of an optimiser step at once (docs/large-batch.md).

Config sections used here (see configs/groupvit/*.yaml):

    model:  GroupViTConfig as a nested dict (image, text, embed_dim, proj_hidden_dim, ...), plus
            grad_checkpointing (a training switch, not part of the model: kept out of its config)
    data:   image_size, crop_scale, crop_ratio, flip, num_prompts, templates (full | subset | simple), shuffle_buffer,
            stop_nouns (nouns never used as prompts); resampled, samples_per_epoch, source_weights (shards drawn
            with replacement, epochs of samples_per_epoch samples, '::'-separated sources mixed by weight:
            annofree.data.sampling)
    loss:   multi_label_weight, same_text_positive, multi_label_form (softmax | sigmoid), patch_token_weight

``loss.multi_label_form: sigmoid`` swaps the paper's softmax multi-label loss for the pairwise sigmoid form
(:func:`~annofree.losses.multi_label_sigmoid.multi_label_sigmoid_loss`), with a learned bias that belongs
to the training method (it is saved with the training state, not with the deployable model). Prompts of the
same noun are always positives of each other's images there, whatever ``same_text_positive`` says. That loss
is a sum over every prompt of the batch (as SigLIP's), so it is two orders of magnitude larger than the image-text
loss and dominates the update; ``loss.multi_label_weight`` rescales it.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch

from annofree.data.captions import TEMPLATE_SETS, prompt_nouns
from annofree.data.sampling import ShardSampling, derive_seed
from annofree.data.sources import SOURCE_SEPARATOR, split_outside_braces
from annofree.data.stream import image_text_batches
from annofree.data.tokenizer import get_tokenizer
from annofree.data.transforms import random_resized_crop
from annofree.losses.contrastive import image_text_contrastive_loss
from annofree.losses.multi_label import multi_label_contrastive_loss
from annofree.losses.multi_label_sigmoid import multi_label_sigmoid_loss
from annofree.methods.base import Embedded, LoaderSpec, Method, register
from annofree.models import GroupViT, GroupViTConfig
from annofree.sections import ConfigError, Section, require, spec

NO_IDENTITY = -1  # prompt id of a caption standing in for a missing noun: never "the same text" as another
MULTI_LABEL_FORMS = ("softmax", "sigmoid")
# Start of the sigmoid form's bias: most (image, prompt) pairs are negatives, so the logits start well below 0
# (SigLIP starts at -10 for batches of 32k; with 64 captions of 3 prompts, about one pair in 10 to 20 is positive).
SIGMOID_BIAS_INIT = -5.0


@dataclass(frozen=True)
class SampleOptions:
    """What a data-loader worker needs to turn (image, caption) into a training sample (picklable)."""

    image_size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip: bool
    num_prompts: int
    templates: str
    context_length: int
    stop_nouns: frozenset[str] = frozenset()  # nouns that name nothing to see ("photo", "year"): never prompts


def make_sample(options: SampleOptions, key: str, image: np.ndarray, caption: str, rng: random.Random) -> dict:
    """One training sample: augmented image (uint8 CHW), caption tokens, K prompt tokens and prompt ids."""
    pixels = random_resized_crop(image, options.image_size, rng, options.crop_scale, options.crop_ratio, options.flip)
    nouns = prompt_nouns(caption, options.stop_nouns)
    chosen = rng.sample(nouns, min(options.num_prompts, len(nouns)))
    templates = TEMPLATE_SETS[options.templates]
    prompts = [rng.choice(templates).format(noun) for noun in chosen]
    # Identity of a prompt = its noun, so that "a photo of a circle." and "a drawing of a circle." are
    # the same text when loss.same_text_positive is on.
    ids = [derive_seed("noun", noun) >> 1 for noun in chosen]
    missing = options.num_prompts - len(chosen)
    prompts += [caption] * missing  # as the reference: the caption stands in for missing nouns
    ids += [NO_IDENTITY] * missing
    tokenizer = get_tokenizer()
    return {
        "image": torch.from_numpy(pixels).permute(2, 0, 1).contiguous(),
        "text": tokenizer.tokenize([caption], options.context_length)[0],
        "prompts": tokenizer.tokenize(prompts, options.context_length),
        "prompt_ids": torch.tensor(ids, dtype=torch.long),
    }


@dataclass(frozen=True)
class DataSection(Section, key="data"):
    """The ``data`` section (see the module docstring)."""

    image_size: int | None = spec(None, gt=0)  # None: the model's model.image.img_size
    crop_scale: tuple[float, float] = spec((0.08, 1.0), gt=0, le=1)  # crop area as a fraction of the image's
    crop_ratio: tuple[float, float] = spec((3 / 4, 4 / 3), gt=0)
    flip: bool = True
    num_prompts: int = spec(3, ge=0)
    templates: str = "full"
    shuffle_buffer: int = spec(1000, ge=0)
    stop_nouns: tuple[str, ...] | None = None  # lowercase singular nouns, as extracted, never used as prompts
    # Shards drawn with replacement, forever (annofree.data.sampling); an epoch is then samples_per_epoch samples
    # over all ranks (required with resampled: logging, and where a resume re-reads from).
    resampled: bool = False
    samples_per_epoch: int | None = spec(None, gt=0)
    source_weights: tuple[float, ...] | None = spec(None, gt=0)  # one per '::'-separated source of the data

    def __post_init__(self):
        require(self.crop_scale[0] <= self.crop_scale[1], "crop_scale", "[low, high] with low <= high",
                list(self.crop_scale))  # fmt: skip
        require(self.crop_ratio[0] <= self.crop_ratio[1], "crop_ratio", "[low, high] with low <= high",
                list(self.crop_ratio))  # fmt: skip
        require(self.templates in TEMPLATE_SETS, "templates", " | ".join(TEMPLATE_SETS), self.templates)
        words = self.stop_nouns or ()
        require(all(word.strip() for word in words), "stop_nouns", "a list of words", list(words))
        require(
            not self.resampled or self.samples_per_epoch is not None,
            "samples_per_epoch",
            "set with resampled: true (the samples of an epoch, over all ranks)",
            self.samples_per_epoch,
        )
        require(
            self.resampled or self.samples_per_epoch is None,
            "samples_per_epoch",
            "null unless resampled: true (an epoch otherwise reads every shard once)",
            self.samples_per_epoch,
        )
        require(
            self.resampled or self.source_weights is None,
            "source_weights",
            "null unless resampled: true (an epoch otherwise reads every shard once)",
            self.source_weights,
        )

    @property
    def sampling(self) -> ShardSampling:
        return ShardSampling(self.resampled, self.source_weights, self.samples_per_epoch)


@dataclass(frozen=True)
class LossSection(Section, key="loss"):
    """The ``loss`` section (see the module docstring)."""

    multi_label_weight: float = spec(1.0, ge=0)
    same_text_positive: bool = False
    multi_label_form: str = "softmax"
    patch_token_weight: float = spec(0.0, ge=0)

    def __post_init__(self):
        require(self.multi_label_form in MULTI_LABEL_FORMS, "multi_label_form", " | ".join(MULTI_LABEL_FORMS),
                self.multi_label_form)  # fmt: skip


@dataclass(frozen=True)
class ModelTraining(Section, key="model"):
    """Keys of the ``model`` section that change how a training step runs, not the model. They are kept out of
    the model's config, so the weights file, conversions and the resume check never see them."""

    # Recompute each transformer and grouping block in the backward pass: a step's activation memory is set
    # by one block, for about one more forward pass of compute; the gradients are the same (models/recompute.py).
    grad_checkpointing: bool = False


def split_model_section(section: Any) -> tuple[Any, ModelTraining]:
    """A config's ``model`` section -> (the model's own keys, the training switches among them, checked)."""
    if not isinstance(section, Mapping):  # not a section: the model's own check says so
        return section, ModelTraining()
    model = dict(section)
    switches = {field.name: model.pop(field.name) for field in fields(ModelTraining) if field.name in model}
    return model, ModelTraining.from_dict(switches)


class GroupViTSections(NamedTuple):
    model: GroupViTConfig
    data: DataSection
    loss: LossSection
    training: ModelTraining


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([s[name] for s in samples]) for name in samples[0]}


@register
class GroupViTMethod(Method):
    name = "groupvit"

    sections = ("model", "data", "loss")
    accum_mode = "exact"  # every sample of a step's micro-batches is a negative of every other (docs/large-batch.md)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> GroupViTSections:
        model_keys, training = split_model_section(config.get("model"))
        model = GroupViTConfig.from_dict(model_keys)
        data = DataSection.from_dict(config.get("data"))
        train_data = (config.get("train") or {}).get("data")
        if data.source_weights is not None and isinstance(train_data, str) and train_data.strip():
            sources = len(split_outside_braces(train_data, SOURCE_SEPARATOR))
            require(len(data.source_weights) == sources, "data.source_weights",
                    f"one weight per '{SOURCE_SEPARATOR}'-separated source of train.data ({sources})",
                    list(data.source_weights))  # fmt: skip
        loss = LossSection.from_dict(config.get("loss"))
        if (loss.multi_label_weight or loss.patch_token_weight) and data.num_prompts < 1:
            raise ConfigError("data.num_prompts", "must be >= 1 when loss.multi_label_weight or "
                              "loss.patch_token_weight > 0 (they compare images with prompts)")  # fmt: skip
        return GroupViTSections(model, data, loss, training)

    @classmethod
    def model_section(cls, config: dict[str, Any]) -> dict[str, Any]:
        return GroupViTConfig.from_dict(split_model_section(config.get("model"))[0]).to_dict()

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        model, data, loss, training = self.check_config(config)
        self.model = GroupViT(model)
        self.model.set_grad_checkpointing(training.grad_checkpointing)
        self.sample_options = SampleOptions(
            image_size=data.image_size or model.image.img_size,
            crop_scale=data.crop_scale,
            crop_ratio=data.crop_ratio,
            flip=data.flip,
            num_prompts=data.num_prompts,
            templates=data.templates,
            context_length=model.text.context_length,
            stop_nouns=frozenset(word.strip().lower() for word in data.stop_nouns or ()),
        )
        self.shuffle_buffer = data.shuffle_buffer
        self.sampling = data.sampling
        self._carried_skips = 0
        self.multi_label_weight = loss.multi_label_weight
        self.same_text_positive = loss.same_text_positive
        self.multi_label_form = loss.multi_label_form
        self.patch_token_weight = loss.patch_token_weight
        if self.multi_label_form == "sigmoid":
            self.multi_label_bias = torch.nn.Parameter(torch.tensor(SIGMOID_BIAS_INIT))

    def train_batches(self, spec: LoaderSpec):
        sample_fn = functools.partial(make_sample, self.sample_options)
        for batch in image_text_batches(spec, sample_fn, collate, self.shuffle_buffer, sampling=self.sampling):
            if batch.data is None:  # drops after the epoch's last batch: report them with the next batch
                self._carried_skips += batch.skipped
                continue
            skipped, self._carried_skips = batch.skipped + self._carried_skips, 0
            yield {**batch.data, "skipped": torch.tensor(skipped, dtype=torch.long)}

    def embed(self, batch: dict[str, torch.Tensor]) -> Embedded:
        model = self.model
        pixels = model.normalize_pixels(batch["image"].float() / 255)
        encoded = model.img_encoder(pixels)
        image = model.img_projector(encoded.tokens.mean(dim=1))
        use_prompts = self.multi_label_weight > 0 or self.patch_token_weight > 0
        texts = torch.cat([batch["text"][:, None], batch["prompts"]], 1) if use_prompts else batch["text"][:, None]
        text = model.text_features(texts)  # captions and prompts share one BatchNorm pass
        samples = {"image": image, "text": text[:, 0]}
        shared = {"scale": model.scale()}
        if use_prompts:
            samples.update(prompts=text[:, 1:], prompt_ids=batch["prompt_ids"])
            shared["multi_label_scale"] = model.scale(multi_label=True)
            if self.multi_label_form == "sigmoid":
                shared["multi_label_bias"] = self.multi_label_bias
        if self.patch_token_weight:
            # Not in the paper: the multi-label loss on the image's most prompt-like patch tokens (max over
            # tokens), through the same head. The tokens are what segments are made of; this makes them
            # nameable from the first steps instead of only through the pooled segments (docs/learning.md).
            samples["patch_tokens"] = model.img_projector(encoded.patch_tokens.amax(dim=1))
        metrics = {"logit_scale": model.scale().detach()}
        if self.multi_label_form == "sigmoid":
            metrics["multi_label_bias"] = self.multi_label_bias.detach()
        if encoded.soft_assignments:  # a model without grouping stages has none
            metrics["assign_entropy"] = assignment_entropy(encoded.soft_assignments[-1]).detach()
        for stage, assignment in enumerate(encoded.soft_assignments, start=1):
            metrics[f"group_usage_{stage}"] = group_usage(assignment).detach()
        metrics["skipped"] = batch["skipped"]
        return Embedded(samples, shared, metrics)

    def losses(self, embedded: Embedded) -> dict[str, torch.Tensor]:
        samples = embedded.samples
        out = {"loss_itc": image_text_contrastive_loss(samples["image"].float(), samples["text"].float(),
                                                       embedded.shared["scale"])}  # fmt: skip
        if self.multi_label_weight:
            loss = self.multi_label_loss(samples["image"], samples["prompts"], embedded)
            out["loss_multi_label"] = self.multi_label_weight * loss
        if self.patch_token_weight:
            loss = self.multi_label_loss(samples["patch_tokens"], samples["prompts"], embedded)
            out["loss_patch_tokens"] = self.patch_token_weight * loss
        return out

    def multi_label_loss(self, image: torch.Tensor, prompts: torch.Tensor, embedded: Embedded) -> torch.Tensor:
        scale, prompt_ids = embedded.shared["multi_label_scale"], embedded.samples["prompt_ids"]
        if self.multi_label_form == "sigmoid":
            bias = embedded.shared["multi_label_bias"]
            return multi_label_sigmoid_loss(image.float(), prompts.float(), scale, bias, prompt_ids=prompt_ids)
        return multi_label_contrastive_loss(
            image.float(),
            prompts.float(),
            scale,
            prompt_ids=prompt_ids,
            same_text_positive=self.same_text_positive,
        )

    def deployable(self) -> GroupViT:
        return self.model

    def model_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def no_weight_decay(self) -> set[str]:
        # Position embeddings and group tokens are learned queries, not weights to shrink (as the reference).
        keys = ("pos_embed", "group_token", "positional_embedding")
        return {name for name, _ in self.named_parameters() if any(key in name for key in keys)}


def group_usage(assignment: torch.Tensor) -> torch.Tensor:
    """Mean over images of the entropy of the share of tokens each group takes (``[B, G, N]`` soft
    assignment), divided by log G: 1 = tokens spread evenly over the groups, 0 = every token in one
    group (group collapse: one segment per image, so zero-shot segmentation cannot work).

    Logged from the training forward, where a flat soft assignment scores near 1 even when its argmax
    picks the same group for every token: eval-mode collapse shows only in the argmax groups, which
    ``benchmarks/probe_groupvit.py`` counts (docs/learning.md)."""
    groups = assignment.shape[1]
    if groups < 2:
        return assignment.new_zeros(())
    share = assignment.float().mean(dim=2).clamp_min(1e-9)  # [B, G]
    return -(share * share.log()).sum(dim=1).mean() / np.log(groups)


def assignment_entropy(assignment: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the soft token-to-group assignment ``[B, G, N]`` (over groups), divided by log G:
    1 = every token spread evenly over the groups, 0 = every token in one group."""
    groups = assignment.shape[1]
    if groups < 2:
        return assignment.new_zeros(())
    p = assignment.float().clamp_min(1e-9)
    return -(p * p.log()).sum(dim=1).mean() / np.log(groups)
