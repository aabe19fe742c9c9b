"""The small interface between the training engine and a method (GroupViT, DenseSiam, ...).

The engine owns the loop, distribution, precision, optimiser, checkpoints and logs; a method owns its
modules, its data pipeline and the maths of one step. The engine wraps the whole method in DDP and
calls ``forward`` so that gradient synchronisation covers every trainable module.

A contrastive method splits its step in two, :meth:`Method.embed` (the network: batch -> :class:`Embedded`)
and :meth:`Method.losses` (the maths: embeddings -> named losses), so that the engine can accumulate exactly
(``optim.accum_mode: exact``): embed every micro-batch of a step without a graph, take the losses over all of
them at once, then re-embed each micro-batch with the same random draws and backward the cached embedding
gradients (feature caching, as GradCache and open_clip's ``--accum-freq``). ``forward`` is then
``embed`` + ``losses``, and a method without the split (DenseSiam) overrides ``forward`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import nn

from annofree.data.spec import LoaderSpec


class Embedded(NamedTuple):
    """What :meth:`Method.embed` gives for one micro-batch (a tuple, so DDP finds the tensors in it).

    ``samples``: per-sample tensors, first dimension the micro-batch (embeddings, prompt ids, ...); exact
    accumulation concatenates them over the micro-batches of a step. ``shared``: tensors that are the same for
    every micro-batch of a step and that the losses differentiate (e.g. the logit scale): the losses must read
    parameters only through them, never from the modules, or their gradients would bypass the second pass and
    DDP. ``metrics``: detached scalars to log (``skipped`` is summed over micro-batches, the others averaged).
    """

    samples: dict[str, torch.Tensor]
    shared: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor]


AccumMode = Literal["exact", "plain"]


class Method(nn.Module):
    """A trainable method.

    Subclasses set ``name`` and ``sections``, check their sections in ``check_config`` (typed sections,
    :mod:`annofree.sections`), build their modules in ``__init__(config)`` from the resolved config (a plain
    nested dict) and implement the three methods below.
    """

    name: ClassVar[str] = ""
    sections: ClassVar[tuple[str, ...]] = ()  # the top-level config keys it reads, besides the engine's
    # What ``optim.accum_mode: null`` means for this method; "exact" needs embed() and losses().
    accum_mode: ClassVar[AccumMode] = "plain"

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> Any:
        """Check every section the method reads (keys, types, ranges, the rules between them) without
        building anything, and return what ``__init__`` builds from. A bad value raises a one-line
        ``ConfigError`` naming its dotted key; the engine calls this before any work starts."""
        return None

    @classmethod
    def model_section(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The config's ``model`` section in full (defaults filled in): a resume compares it with the run's."""
        return dict(config.get("model") or {})

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config

    def forward(self, batch: Any, embed_only: bool = False) -> dict[str, torch.Tensor] | Embedded:
        """One micro-batch -> named scalars. Keys starting with ``loss`` are summed into the objective;
        the others are metrics, logged as they are (detach them).

        The default is ``losses(embed(batch))`` merged with the metrics; ``embed_only`` returns the
        :class:`Embedded` itself (the engine's second pass of exact accumulation, through DDP). A method
        without that split overrides ``forward(batch)``."""
        embedded = self.embed(batch)
        if embed_only:
            # DDP finds the parameters a backward reaches through the graph of its outputs: a parameter given
            # as it is (a leaf) becomes a graph node here.
            shared = {k: v.clone() if v.requires_grad and v.grad_fn is None else v for k, v in embedded.shared.items()}
            return embedded._replace(shared=shared)
        return {**self.losses(embedded), **embedded.metrics}

    def embed(self, batch: Any) -> Embedded:
        """One micro-batch -> its :class:`Embedded` (everything the losses read). Optional: see the module
        docstring."""
        raise NotImplementedError(f"{type(self).__name__} has no embed(): it trains with plain accumulation only")

    def losses(self, embedded: Embedded) -> dict[str, torch.Tensor]:
        """Named losses (keys starting with ``loss``) of the samples in ``embedded``, which may hold several
        micro-batches concatenated. Parameters are read only through ``embedded.shared``."""
        raise NotImplementedError

    @classmethod
    def has_embed_split(cls) -> bool:
        """True when the method implements embed() and losses(), which exact accumulation needs."""
        return cls.embed is not Method.embed and cls.losses is not Method.losses

    def train_batches(self, spec: LoaderSpec) -> Iterable[Any]:
        """The batches of one epoch for one rank, deterministic given (seed, epoch, rank, world_size),
        starting after ``spec.skip_batches`` micro-batches. Batches are CPU tensors (or dicts/lists of them);
        the engine moves them to the device."""
        raise NotImplementedError

    def deployable(self) -> nn.Module:
        """The model saved as weights and loaded by ``annofree.load`` (e.g. GroupViT without losses)."""
        raise NotImplementedError

    def model_config(self) -> dict[str, Any]:
        """The config that rebuilds ``deployable()`` (stored in the weights file)."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in ``named_parameters()``) to keep out of weight decay, beyond the engine's
        rule (all 1-D parameters and biases)."""
        return set()

    def on_step(self, step: int, total_steps: int) -> None:
        """Called before each optimiser step (schedules inside a method, e.g. a loss switched on late)."""


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls
