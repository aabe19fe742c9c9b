"""Caption processing for GroupViT's multi-label loss: nouns of a caption, put into CLIP prompt templates.

GroupViT (Xu et al. 2022) tags each caption, keeps its nouns, samples up to K distinct ones and puts each
into a random CLIP ImageNet prompt template; short captions are padded with the raw caption so that every
image gets exactly K prompts. The official code tags with nltk, whose data must be downloaded at run time;
here the tagger is textblob's port of the pattern tagger, whose lexicon ships inside the textblob package,
so nothing is ever downloaded (data-loader workers may have no network at all).

Everything here is cheap enough to run in data-loader workers: the tagger loads once per process (call
:func:`preload` before workers fork so they share it) and noun lists are cached per caption, since
captions repeat from epoch to epoch.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Collection, Sequence

import regex

from annofree.errors import UserError

# CLIP's 80 ImageNet prompt templates, in CLIP's order (openai/CLIP, Prompt_Engineering_for_ImageNet).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
# The 7-template ensemble GroupViT evaluates ImageNet with (its "subset", after CLIP's notebook, whose
# second template reads "the" where GroupViT's reads "a").
SUBSET_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
# The single prompt GroupViT uses for class names in zero-shot segmentation.
SEGMENTATION_TEMPLATE = "a photo of a {}."
# The official template sets by their names (NVlabs/GroupViT datasets/imagenet_template.py ``template_meta``).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "full": PROMPT_TEMPLATES,
    "subset": SUBSET_TEMPLATES,
    "simple": (SEGMENTATION_TEMPLATE,),
}

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
# The official GroupViT code keeps these verb tags as well (keep_verbs=True).
VERB_TAGS = frozenset({"VB", "VBD", "VBG", "VBN", "VBP", "VBZ"})
PLURAL_TAGS = frozenset({"NNS", "NNPS"})
BASE_VERB_TAGS = frozenset({"VB", "VBP"})
NOUN_PHRASE_TAGS = frozenset({"DT", "JJ", "PRP$", "CD"})
NOUN_CACHE_SIZE = 65_536

# A kept word starts with a letter and holds only letters, marks, digits, hyphens and apostrophes: this
# drops punctuation that the tagger calls NN (a stray quote) as well as URLs and file names.
_WORD = regex.compile(r"\p{L}[\p{L}\p{M}\p{N}'\-]*")
# Typographic apostrophes confuse the tagger's tokenizer ("children’s" -> "’" as a noun).
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@functools.cache
def _tagger():
    """textblob's offline pattern tagger and singulariser, imported on first use (importing nltk takes ~2 s)."""
    from textblob.en import tag
    from textblob.en.inflect import singularize

    return tag, singularize


def preload() -> None:
    """Load the tagger and its lexicon now, e.g. in the main process before data-loader workers fork."""
    tag, _ = _tagger()
    tag("a photo of a cat")


@functools.lru_cache(maxsize=NOUN_CACHE_SIZE)
def _nouns(caption: str, keep_verbs: bool) -> tuple[str, ...]:
    tag, singularize = _tagger()
    keep = NOUN_TAGS | VERB_TAGS if keep_verbs else NOUN_TAGS
    nouns: dict[str, None] = {}  # an ordered set: first appearance wins
    previous = ""
    for word, pos in tag(caption.translate(_APOSTROPHES)):
        # The tagger calls some nouns base-form verbs ("a red cross", "the cross" -> VB); a verb cannot follow
        # a determiner, adjective, possessive or number, so such a word is taken as the noun it is.
        misread = pos in BASE_VERB_TAGS and previous in NOUN_PHRASE_TAGS
        previous = pos
        if (pos not in keep and not misread) or _WORD.fullmatch(word) is None:
            continue
        word = word.lower()
        if pos in PLURAL_TAGS:
            word = singularize(word)
        nouns.setdefault(word, None)
    return tuple(nouns)


def extract_nouns(caption: str, keep_verbs: bool = False) -> list[str]:
    """The distinct nouns of ``caption``, lowercased and singular, in order of first appearance.

    Tags NN, NNS, NNP and NNPS are kept (plus VB* with ``keep_verbs``, as the official GroupViT code does);
    adjectives such as colour words in "a red car" are not nouns. Results are cached per caption.
    """
    if not isinstance(caption, str):
        raise UserError(f"caption must be a string, got {type(caption).__name__}: {caption!r:.80}")
    return list(_nouns(caption, bool(keep_verbs)))


def prompt_nouns(caption: str, stop_nouns: Collection[str] = ()) -> list[str]:
    """The nouns GroupViT's multi-label loss may put into prompts: :func:`extract_nouns` of ``caption`` without
    ``stop_nouns`` (lowercase singular, as extracted; the GroupViT config's ``data.stop_nouns``). Training and
    ``annofree data check`` both use this, so the check counts what training will see."""
    return [noun for noun in extract_nouns(caption) if noun not in stop_nouns]


def sample_prompts(
    caption: str,
    k: int,
    rng: random.Random,
    templates: Sequence[str] = PROMPT_TEMPLATES,
    keep_verbs: bool = False,
) -> list[str]:
    """Exactly ``k`` prompts for ``caption``: up to ``k`` distinct nouns, each in a random template.

    Nouns are sampled without replacement; when the caption has fewer than ``k`` nouns the rest are the
    raw caption itself (as in the official code). ``rng`` makes it reproducible per worker and sample.
    """
    if not isinstance(k, int) or k < 0:
        raise UserError(f"number of prompts k must be a non-negative integer, got {k!r}")
    if not templates:
        raise UserError("templates must not be empty")
    if k == 0:
        return []
    nouns = extract_nouns(caption, keep_verbs=keep_verbs)
    chosen = rng.sample(nouns, min(k, len(nouns)))
    prompts = [rng.choice(templates).format(noun) for noun in chosen]
    prompts.extend([caption] * (k - len(prompts)))
    return prompts


__all__ = [
    "NOUN_TAGS",
    "PROMPT_TEMPLATES",
    "SEGMENTATION_TEMPLATE",
    "SUBSET_TEMPLATES",
    "TEMPLATE_SETS",
    "VERB_TAGS",
    "extract_nouns",
    "preload",
    "prompt_nouns",
    "sample_prompts",
]
