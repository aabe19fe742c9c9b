"""annofree: semantic segmentation without pixel labels (GroupViT and DenseSiam)."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Load a model from a run directory, a ``.safetensors`` weights file or a pretrained name, in eval mode.

    ``annofree.load("groupvit-gcc-yfcc")`` downloads the published weights once (see ``annofree.pretrained``).
    """
    from annofree.pretrained import load as _load

    return _load(path, device=device)


def tokenize(texts, context_length: int = 77):
    """CLIP BPE token ids: ``list[str] -> LongTensor[B, context_length]`` (see ``annofree.data.tokenizer``).

    For a loaded model use ``model.tokenize(texts)``: it gives the ids at the model's own context length (77 for
    the published weights, often less for small configs), which is what ``model.encode_text`` takes.
    """
    from annofree.data.tokenizer import tokenize as _tokenize

    return _tokenize(texts, context_length=context_length)


__all__ = ["__version__", "load", "tokenize"]
