"""DenseSiam trained on unlabelled images (Zhang et al., ECCV 2022), in two modes.

``mode: pretrain`` (the paper's dense pre-training)
    Two random views of each image. Global SimSiam loss on avg-pooled res5; PixSim at a ``grid_size`` x
    ``grid_size`` grid of points inside the overlap of the two crops (overlap grid sampling, pairs without
    overlap masked out); RegionSim on those points: the soft masks ``softmax(z)`` pool the encoder features of
    the overlap into region embeddings, so region k of one view covers the same points as region k of the other.
``mode: segment`` (the released unsupervised segmentation variant)
    View 1 is a random crop + flip of the image, view 2 the whole image; view 1's crop and flip are replayed on
    view 2's dense features (equivariant replay crop), so every position corresponds. PixSim with the
    cross-entropy similarity on the projector (channels = clusters), self-labelling cross-entropy against the
    argmax pseudo-labels of each view, the over-clustering auxiliary head, RegionSim from ``loss.region_start``.

Stop-gradient on every target (PixSim, auxiliary head, global branch, pseudo-labels); the region InfoNCE keeps
gradients on both sides, as the official code (its negatives prevent collapse). The views are made in
``forward`` on the training device, from a ``torch.Generator`` seeded by the batch's place in the data stream
(seed, epoch, rank, batch index), so a resumed run draws the same views as an uninterrupted one; with
``data.fixed_views`` each image's views come from (seed, its pixels) instead, the same in every epoch (the
release). The release's other choices are options too (docs/densesiam-release.md).

Logged besides the losses: ``std_pix`` / ``std_global``, SimSiam's collapse monitor (per-channel std of the
L2-normalised projections times sqrt(channels): about 1 when healthy, 0 when collapsed), ``cluster_usage``
(segment: the share of clusters that win some pixel), ``overlap`` (pretrain: the share of view pairs that
overlap) and ``region_on``.

Config sections used here (see configs/densesiam/*.yaml):

    mode:   pretrain | segment (default segment)
    model:  DenseSiamConfig as a dict, plus backbone_weights (a torchvision ResNet state dict file to start the
            backbone from, as the release starts from ImageNet weights)
    data:   DataSection, with the mode's MODE_DATA over its defaults: image_size (images are resized and
            centre-cropped to it), view1 (a ViewConfig dict), view2 (overrides of view1 for view 2), shuffle_buffer
            (shards), fixed_views, replay
    loss:   see LOSS_DEFAULTS: weights (a weight 0 switches a branch off), similarity, grid_size, ...
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from annofree.data.image_folder import image_batches
from annofree.data.overlap import replay_crop, sample_overlap
from annofree.data.sampling import derive_seed
from annofree.data.views import TwoViews, View, ViewConfig, release_replay_boxes
from annofree.interop.backbone import load_backbone_weights
from annofree.losses.region import region_infonce
from annofree.losses.siamese import aux_loss_weights, self_label_loss, symmetric_similarity_loss
from annofree.methods.base import LoaderSpec, Method, register
from annofree.models.densesiam import DenseSiam, DenseSiamConfig
from annofree.sections import ConfigError, Section, parse_section, require, spec, unknown_key_error

MODES = ("pretrain", "segment")

# The release's photometric augmentation of each view (see annofree.data.views for the blur sigma).
_RELEASED_VIEW = {
    "size": 320,
    "scale": (0.5, 1.0),
    "brightness": 0.3,
    "contrast": 0.3,
    "saturation": 0.3,
    "hue": 0.1,
    "jitter_p": 0.8,
    "jitter_each": True,
    "grayscale_p": 0.2,
    "blur_sigma": (0.05, 1.0),
    "blur_p": 0.5,
}
# What each mode puts over DataSection's defaults (view1: over ViewConfig's; view2: over view 1).
MODE_DATA: dict[str, dict[str, Any]] = {
    "pretrain": {"image_size": 256, "view1": {}, "view2": {}},
    "segment": {
        "view1": _RELEASED_VIEW,
        "view2": {"random_crop": False, "flip_p": 0.0},  # the whole image: replay_crop covers view 1 everywhere
    },
}


@dataclass(frozen=True)
class LossOptions(Section, key="loss"):
    """The ``loss`` section resolved (the mode's defaults filled in, "auto" weights made numbers; 0 = branch off)."""

    similarity: Literal["cosine", "ce"]
    global_weight: float = spec(ge=0)
    pix_weight: float = spec(ge=0)
    region_weight: float = spec(ge=0)
    region_start: int | float = spec(ge=0)  # an int: the optimiser step; a float in [0, 1]: that fraction
    region_temperature: float = spec(gt=0)
    grid_size: int = spec(7, ge=1)
    min_overlap: float = spec(0.0, ge=0)
    aux_weight: float = spec(0.0, ge=0)
    seg_weight: float = spec(0.0, ge=0)
    seg_reweight: Literal["frequency", "inverse"] | None = None
    seg_target: Literal["self", "cross"] = "self"

    def __post_init__(self):
        start = self.region_start
        require(isinstance(start, int) or start <= 1, "region_start",
                "a step (an integer >= 0) or a fraction in [0, 1]", start)  # fmt: skip

    def region_start_step(self, total_steps: int) -> int:
        if isinstance(self.region_start, float):
            return math.ceil(self.region_start * total_steps)
        return self.region_start


# Each mode's loss keys with their defaults (those shared with LossOptions are read off its fields).
_COMMON_LOSS = {
    "global_weight": 0.0,
    "pix_weight": 1.0,
    "region_weight": 0.1,
    "region_start": 0.8,  # an int: the optimiser step; a float in [0, 1]: that fraction of train.steps
    "region_temperature": 0.1,
}
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {
        **_COMMON_LOSS,
        "similarity": "cosine",
        "global_weight": 1.0,  # without the global branch the paper saw collapse
        "region_start": 0.5,
        "grid_size": LossOptions.grid_size,  # K: K x K points in the overlap
        "min_overlap": LossOptions.min_overlap,  # pixels; narrower overlaps count as none
    },
    "segment": {
        **_COMMON_LOSS,
        "similarity": "ce",
        "pix_weight": "auto",  # with the auxiliary head: ln K_aux / (ln K_aux + ln K), else 1
        "aux_weight": "auto",  # ln K / (ln K_aux + ln K)
        "seg_weight": 1.0,
        "seg_reweight": "frequency",  # null | frequency (the release's rebalance_seg) | inverse
        "seg_target": LossOptions.seg_target,  # self: each view's own argmax (the release) | cross: the other view's
    },
}


@dataclass(frozen=True)
class DataSection(Section, key="data"):
    """The ``data`` section; the defaults are segment mode's, :data:`MODE_DATA` holds each mode's own."""

    image_size: int = spec(640, gt=0)
    view1: dict[str, Any] | None = None
    view2: dict[str, Any] | None = None
    shuffle_buffer: int = spec(1000, ge=0)
    # True: each image's two views are drawn once, from (seed, the image's pixels), and the same ones come back
    # every epoch and after a resume (the release draws its per-image parameters once at start-up);
    # False: new views at every step.
    fixed_views: bool = False
    # segment mode: exact: view 1's crop replayed exactly on view 2's features; release: recut on the feature
    # grid as the release does (needs data.view1.crop_law square; 3.7 px off on average at 640 px).
    replay: Literal["exact", "release"] = "exact"


class DenseSiamSections(NamedTuple):
    mode: str
    model: DenseSiamConfig
    loss: LossOptions
    data: DataSection
    views: TwoViews


def split_model_section(section: Any) -> tuple[Any, str | None]:
    """A config's ``model`` section -> (the model's own keys, ``backbone_weights``). The weights to start the
    backbone from are a training choice, kept out of the model's config (the weights file and resume check)."""
    if not isinstance(section, dict):  # not a section: the model's own check says so
        return section, None
    model = dict(section)
    path = model.pop("backbone_weights", None)
    require(path is None or isinstance(path, str), "model.backbone_weights", "a file path", path)
    return model, path


def check_mode(config: dict[str, Any]) -> str:
    mode = config.get("mode", "segment")
    require(mode in MODES, "mode", " | ".join(MODES), mode)
    return mode


def resolve_loss(config: dict[str, Any], mode: str, model: DenseSiamConfig) -> LossOptions:
    """The ``loss`` section with the mode's defaults, "auto" weights resolved and checked against the model."""
    given, defaults = config.get("loss") or {}, LOSS_DEFAULTS[mode]
    require(isinstance(given, dict), "loss", "a section (key: value lines)", given)
    for key in given:
        if key not in defaults:
            other = next((m for m in MODES if key in LOSS_DEFAULTS[m]), None)
            if other is not None:
                raise ConfigError(f"loss.{key}", f"belongs to densesiam mode {other}, not {mode}")
            raise unknown_key_error("loss", str(key), {k: None for m in MODES for k in LOSS_DEFAULTS[m]})
    loss = {**defaults, **given}
    if model.aux_dim:
        if mode == "pretrain":
            raise ConfigError("model.aux_dim", "must be 0 in pretrain mode (the over-clustering head is for segment)")
        w_main, w_aux = aux_loss_weights(model.dense_dim, model.aux_dim)
        loss["pix_weight"] = w_main if loss["pix_weight"] == "auto" else loss["pix_weight"]
        loss["aux_weight"] = w_aux if loss["aux_weight"] == "auto" else loss["aux_weight"]
    else:
        loss["pix_weight"] = 1.0 if loss["pix_weight"] == "auto" else loss["pix_weight"]
        if loss.get("aux_weight") not in (None, "auto", 0, 0.0):
            raise ConfigError("loss.aux_weight", "needs an over-clustering head (model.aux_dim > 0)")
        loss["aux_weight"] = 0.0
    options = LossOptions.from_dict(loss)
    if options.global_weight > 0 and not model.global_branch:
        raise ConfigError("loss.global_weight", "> 0 needs model.global_branch: true")
    if options.region_weight > 0 and not model.region_branch:
        raise ConfigError("loss.region_weight", "> 0 needs model.region_branch: true")
    return options


def resolve_data(config: dict[str, Any], mode: str) -> tuple[DataSection, TwoViews]:
    """The ``data`` section over the mode's defaults, and its two views (view 2 = view 1 with ``view2`` on top)."""
    given = config.get("data") or {}
    DataSection.from_dict(given)  # keys and types as written
    mode_data = MODE_DATA[mode]
    data = DataSection.from_dict({**mode_data, **given})
    view1 = {**mode_data["view1"], **(data.view1 or {})}
    view2 = {**view1, **mode_data["view2"], **(data.view2 or {})}
    views = TwoViews(parse_section(ViewConfig, view1, "data.view1"), parse_section(ViewConfig, view2, "data.view2"))
    if data.replay == "release" and views.configs[0].crop_law != "square":
        raise ConfigError("data.replay", "release needs data.view1.crop_law: square (the release's crops)")
    if data.replay == "release" and mode != "segment":
        raise ConfigError("data.replay", "is for mode segment (pretrain aligns views on the overlap grid)")
    return data, views


@register
class DenseSiamMethod(Method):
    name = "densesiam"

    sections = ("mode", "model", "data", "loss")

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> DenseSiamSections:
        mode = check_mode(config)
        model = DenseSiamConfig.from_dict(split_model_section(config.get("model"))[0])
        loss = resolve_loss(config, mode, model)
        data, views = resolve_data(config, mode)
        return DenseSiamSections(mode, model, loss, data, views)

    @classmethod
    def model_section(cls, config: dict[str, Any]) -> dict[str, Any]:
        return DenseSiamConfig.from_dict(split_model_section(config.get("model"))[0]).to_dict()

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.mode, model_config, self.loss, data, self.views = self.check_config(config)
        self.model = DenseSiam(model_config)
        backbone_weights = split_model_section(config.get("model"))[1]
        if backbone_weights:  # the release starts from an ImageNet-supervised ResNet
            load_backbone_weights(self.model.backbone, backbone_weights)
        self.image_size = data.image_size
        self.shuffle_buffer = data.shuffle_buffer
        self.fixed_views = data.fixed_views
        self.replay = data.replay
        self._carried_skips = 0
        self.region_on = self.loss.region_weight > 0 and self.loss.region_start_step(1) == 0

    def on_step(self, step: int, total_steps: int) -> None:
        # RegionSim works best switched on late (the release: the last 2 of 10 epochs).
        self.region_on = self.loss.region_weight > 0 and step >= self.loss.region_start_step(total_steps)

    def train_batches(self, spec: LoaderSpec):
        index = spec.skip_batches  # the batch's place in this rank's epoch: it seeds the views
        for batch in image_batches(spec, self.image_size, shuffle_buffer=self.shuffle_buffer):
            if batch.data is None:  # drops after the epoch's last batch: report them with the next batch
                self._carried_skips += batch.skipped
                continue
            skipped, self._carried_skips = batch.skipped + self._carried_skips, 0
            seed = derive_seed("densesiam-views", spec.seed, spec.epoch, spec.rank, index) % 2**63
            index += 1
            out = {"image": batch.data, "seed": seed, "skipped": torch.tensor(skipped, dtype=torch.long)}
            if self.fixed_views:
                out["image_seeds"] = image_seeds(batch.data, spec.seed)
            yield out

    def make_views(self, images: torch.Tensor, seed: int, image_seeds: torch.Tensor | None = None):
        """Both views of a batch in fp32 (outside autocast), from a generator seeded with ``seed``, or each image
        from its own generator seeded with ``image_seeds[b]`` (fixed views)."""
        with torch.autocast(images.device.type, enabled=False):
            if image_seeds is None:
                return self.views(images, torch.Generator().manual_seed(int(seed)))
            generators = [torch.Generator().manual_seed(int(s)) for s in image_seeds.tolist()]
            return self.views.per_image(images, generators)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        view1, view2 = self.make_views(batch["image"], batch["seed"], batch.get("image_seeds"))
        step = self.pretrain_losses if self.mode == "pretrain" else self.segment_losses
        out = step(view1, view2)
        out["region_on"] = torch.tensor(float(self.region_on))
        if "skipped" in batch:
            out["skipped"] = batch["skipped"]
        return out

    def pretrain_losses(self, view1: View, view2: View) -> dict[str, torch.Tensor]:
        """Global SimSiam + PixSim at the overlap grid + RegionSim on the grid's soft regions."""
        model, loss = self.model, self.loss
        e1, e2 = (model.encode(model.normalize_pixels(v.images)) for v in (view1, view2))
        z1, z2 = model.projector(e1.dense), model.projector(e2.dense)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        k, dim = loss.grid_size, z1.shape[1]
        # One grid_sample per view for z, p and the encoder features together.
        s1, s2, valid = sample_overlap(
            torch.cat([z1, p1, e1.dense], 1), torch.cat([z2, p2, e2.dense], 1),
            view1.boxes, view1.flips, view2.boxes, view2.flips, k, loss.min_overlap,
        )  # fmt: skip
        (zs1, ps1, fs1), (zs2, ps2, fs2) = (s.float().split([dim, dim, s.shape[-1] - 2 * dim], -1) for s in (s1, s2))
        mask = valid[:, None].expand(-1, k * k)
        out = {"loss_pix": loss.pix_weight * symmetric_similarity_loss(ps1, zs1, ps2, zs2, loss.similarity, -1, mask)}
        out.update(self._global_losses(e1.res5, e2.res5))
        if self.region_on:
            r1 = model.region(_as_map(zs1, k), _as_map(fs1, k))
            r2 = model.region(_as_map(zs2, k), _as_map(fs2, k))
            out["loss_region"] = loss.region_weight * _region_loss(r1, r2, valid, loss.region_temperature)
        out["std_pix"] = output_std(z1)
        out["overlap"] = valid.float().mean()
        return out

    def segment_losses(self, view1: View, view2: View) -> dict[str, torch.Tensor]:
        """PixSim (CE) on replay-aligned maps + self-labelling + over-clustering head + RegionSim."""
        model, loss = self.model, self.loss
        e1, e2 = (model.encode(model.normalize_pixels(v.images)) for v in (view1, view2))
        f1 = e1.dense
        boxes1 = view1.boxes
        if self.replay == "release":  # the release recuts view 1's crop on view 2's feature grid
            boxes1 = release_replay_boxes(view1.crop_draws, e2.dense.shape[-2:], self._image_hw(view2))
        f2, inside = replay_crop(e2.dense, boxes1, view1.flips, view2.boxes, view2.flips, f1.shape[-2:])
        z1, z2 = model.projector(f1), model.projector(f2)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        sim = loss.similarity
        out = {"loss_pix": loss.pix_weight * _dense_similarity(p1, z1, p2, z2, sim, inside)}
        if loss.seg_weight > 0:
            out["loss_seg"] = loss.seg_weight * self._seg_loss(z1.float(), z2.float(), inside)
        if loss.aux_weight > 0:
            a1, a2 = model.aux_projector(f1), model.aux_projector(f2)
            pa1, pa2 = model.aux_predictor(a1), model.aux_predictor(a2)
            out["loss_aux"] = loss.aux_weight * _dense_similarity(pa1, a1, pa2, a2, sim, inside)
        out.update(self._global_losses(e1.res5, e2.res5))
        if self.region_on:
            keep = inside[:, None].to(f1.dtype)  # positions view 2 does not show pool nothing in either view
            r1, r2 = model.region(z1, f1 * keep), model.region(z2, f2 * keep)
            out["loss_region"] = loss.region_weight * _region_loss(r1, r2, None, loss.region_temperature)
        out["std_pix"] = output_std(z1)
        out["cluster_usage"] = cluster_usage(z1)
        return out

    @staticmethod
    def _image_hw(view: View) -> tuple[float, float]:
        """The source image's size, from a view that shows all of it (view 2 in segment mode)."""
        box = view.boxes[0].tolist()
        return box[3] - box[1], box[2] - box[0]

    def _seg_loss(self, z1: torch.Tensor, z2: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        reweight = self.loss.seg_reweight
        if self.loss.seg_target == "cross":  # one view's pseudo-labels supervise the other
            return 0.5 * (self_label_loss(z1, z2, reweight, inside) + self_label_loss(z2, z1, reweight, inside))
        # The release: each view against its own argmax (view 2's replayed map counts where it shows view 1).
        return 0.5 * (self_label_loss(z1, None, reweight) + self_label_loss(z2, None, reweight, inside))

    def _global_losses(self, res5_1: torch.Tensor, res5_2: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.loss.global_weight <= 0:
            return {}
        z1, p1 = self.model.global_embedding(res5_1)
        z2, p2 = self.model.global_embedding(res5_2)
        loss = symmetric_similarity_loss(p1.float(), z1.float(), p2.float(), z2.float(), "cosine", dim=1)
        return {"loss_global": self.loss.global_weight * loss, "std_global": output_std(z1)}

    def deployable(self) -> DenseSiam:
        return self.model

    def model_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()


def image_seeds(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One view seed per image ``[B]`` (int64) from ``seed`` and the image's own pixels (every 4th row and
    column, hashed), so an image gets the same views whichever epoch, rank, batch or file format brings it."""
    seeds = []
    for image in images:
        pixels = image[..., ::4, ::4].contiguous().cpu().numpy().tobytes()
        key = hashlib.blake2b(pixels, digest_size=8).hexdigest()
        seeds.append(derive_seed("densesiam-fixed-views", seed, key) % 2**63)
    return torch.tensor(seeds, dtype=torch.long)


def _dense_similarity(p1, z1, p2, z2, similarity: str, mask: torch.Tensor) -> torch.Tensor:
    """Symmetric similarity of aligned dense maps ``[B, K, h, w]`` (in fp32) over the valid positions."""
    return symmetric_similarity_loss(p1.float(), z1.float(), p2.float(), z2.float(), similarity, dim=1, mask=mask)


def _as_map(points: torch.Tensor, k: int) -> torch.Tensor:
    """Grid samples ``[B, k * k, C]`` (row-major) -> a ``[B, C, k, k]`` map."""
    return points.transpose(1, 2).reshape(points.shape[0], -1, k, k)


def _region_loss(r1, r2, valid: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Region InfoNCE of the two views' ``(z, p)``, averaged over the images whose views overlap (``valid``)."""
    (z1, p1), (z2, p2) = r1, r2
    return region_infonce(p1.float(), z1.float(), p2.float(), z2.float(), temperature, mask=valid)


def output_std(z: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """SimSiam's collapse monitor: per-channel std of the L2-normalised outputs over every sample and position,
    averaged over channels, times sqrt(channels) (about 1 for spread-out outputs, 0 when collapsed)."""
    z = F.normalize(z.detach().float(), dim=dim).movedim(dim, -1)
    channels = z.shape[-1]
    return z.reshape(-1, channels).std(dim=0).mean() * math.sqrt(channels)


def cluster_usage(logits: torch.Tensor) -> torch.Tensor:
    """The share of the ``K`` clusters (``logits [B, K, h, w]``) that are the argmax of at least one pixel."""
    k = logits.shape[1]
    counts = torch.bincount(logits.detach().argmax(dim=1).flatten(), minlength=k)
    return (counts > 0).float().mean()
