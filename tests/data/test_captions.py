"""Caption processing: CLIP prompt templates, offline noun extraction and prompt sampling for the multi-label loss."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import textwrap

import pytest

from annofree.data import captions
from annofree.data.captions import (
    PROMPT_TEMPLATES,
    SEGMENTATION_TEMPLATE,
    SUBSET_TEMPLATES,
    extract_nouns,
    sample_prompts,
)
from annofree.data.tokenizer import ClipTokenizer
from annofree.errors import UserError


def test_templates_are_clips():
    assert len(PROMPT_TEMPLATES) == 80 and len(set(PROMPT_TEMPLATES)) == 80
    assert all(template.count("{}") == 1 for template in PROMPT_TEMPLATES)
    # CLIP's order: the notebook's list starts and ends with these.
    assert PROMPT_TEMPLATES[:2] == ("a bad photo of a {}.", "a photo of many {}.")
    assert PROMPT_TEMPLATES[-1] == "a tattoo of the {}."
    assert SUBSET_TEMPLATES == (
        "itap of a {}.",
        "a bad photo of a {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    )
    assert set(SUBSET_TEMPLATES) <= set(PROMPT_TEMPLATES)
    assert SEGMENTATION_TEMPLATE == "a photo of a {}." and SEGMENTATION_TEMPLATE in PROMPT_TEMPLATES


@pytest.mark.parametrize(
    ("caption", "nouns"),
    [
        # Colour words used as adjectives are not nouns; plurals are singularised; order of appearance.
        ("A red circle and two blue squares on a white background.", ["circle", "square", "background"]),
        ("A black cat sitting on an orange sofa", ["cat", "sofa"]),
        # Duplicates after singularising collapse; "glasses" -> "glass", irregular plurals too.
        ("Two dogs and a dog near the glasses", ["dog", "glass"]),
        ("children’s toys and mice on the floor", ["child", "toy", "mouse", "floor"]),
        ("buses parked by the red-brick station", ["bus", "station"]),
        # Proper nouns are kept, lowercased.
        ("The Eiffel Tower at night", ["eiffel", "tower", "night"]),
        ("a close-up of a well-known T-shirt", ["close-up", "t-shirt"]),
        # Punctuation, URLs and empty captions give no nouns.
        ("sunset at the beach http://example.com/a.jpg !!!", ["sunset", "beach"]),
        ("", []),
        ("!!! ... ???", []),
    ],
)
def test_extract_nouns(caption, nouns):
    assert extract_nouns(caption) == nouns


def test_keep_verbs_adds_verb_tags_like_official_groupvit():
    caption = "a happy man is running in the park"
    assert extract_nouns(caption) == ["man", "park"]
    assert extract_nouns(caption, keep_verbs=True) == ["man", "is", "running", "park"]


def test_extract_nouns_is_deterministic_and_cached_results_are_not_shared():
    caption = "Two horses and a rider crossing a river under the mountains"
    first = extract_nouns(caption)
    first.append("mutated")
    captions._nouns.cache_clear()
    second = extract_nouns(caption)
    assert second == extract_nouns(caption) == ["horse", "rider", "river", "mountain"]
    assert captions._nouns.cache_info().hits >= 1
    with pytest.raises(UserError, match="caption must be a string"):
        extract_nouns(None)  # type: ignore[arg-type]


def test_sample_prompts_is_deterministic_for_a_seeded_rng():
    texts = [
        "A red circle and two blue squares on a white background.",
        "Two horses and a rider crossing a river under the mountains",
        "a dog",
    ]
    first = [sample_prompts(text, 3, random.Random(123)) for text in texts]
    again = [sample_prompts(text, 3, random.Random(123)) for text in texts]
    assert first == again
    # Different seeds give different draws (templates and nouns).
    draws = {tuple(sample_prompts(texts[1], 3, random.Random(seed))) for seed in range(20)}
    assert len(draws) > 10


def test_sample_prompts_distinct_nouns_in_templates():
    caption = "a cat, a dog, a horse, a cow, a sheep and a bird on a farm"
    nouns = extract_nouns(caption)
    assert len(nouns) == 7
    rng = random.Random(0)
    for _ in range(50):
        picked = sample_prompts(caption, 3, rng, templates=("{}",))
        assert len(picked) == 3 and len(set(picked)) == 3 and set(picked) <= set(nouns)
    prompts = sample_prompts(caption, 4, rng)
    pairs = [(t, n) for prompt in prompts for t in PROMPT_TEMPLATES for n in nouns if t.format(n) == prompt]
    assert len(pairs) == 4 and len({noun for _, noun in pairs}) == 4
    # Over many draws every noun and many templates get used (sampling covers the whole list).
    seen_nouns, seen_templates = set(), set()
    for _ in range(400):
        (prompt,) = sample_prompts(caption, 1, rng)
        seen_nouns |= {n for n in nouns if prompt.endswith((f" {n}.", f" {n} in a video game."))}
        seen_templates |= {t for t in PROMPT_TEMPLATES for n in nouns if t.format(n) == prompt}
    assert seen_nouns == set(nouns) and len(seen_templates) > 60


def test_sample_prompts_pads_with_the_raw_caption():
    caption = "A red circle and two blue squares on a white background."
    prompts = sample_prompts(caption, 5, random.Random(1))
    assert len(prompts) == 5
    assert prompts[3:] == [caption, caption]
    assert all(prompt != caption for prompt in prompts[:3])
    assert sample_prompts("!!!", 3, random.Random(1)) == ["!!!"] * 3


def test_sample_prompts_zero_and_bad_arguments():
    rng = random.Random(5)
    state = rng.getstate()
    assert sample_prompts("a dog on a sofa", 0, rng) == []
    assert rng.getstate() == state
    with pytest.raises(UserError, match="non-negative"):
        sample_prompts("a dog", -1, rng)
    with pytest.raises(UserError, match="templates"):
        sample_prompts("a dog", 2, rng, templates=())


def test_no_network_access_from_a_fresh_process(tmp_path):
    # A fresh interpreter, so that the tagger's lazy first load happens while sockets are forbidden.
    script = textwrap.dedent(
        """
        import json, random, socket, sys

        class ForbiddenSocket(socket.socket):  # a class, since ssl subclasses socket.socket at import
            def __init__(self, *args, **kwargs):
                raise RuntimeError("network access attempted")

        def forbidden(*args, **kwargs):
            raise RuntimeError("network access attempted")

        socket.socket = ForbiddenSocket
        socket.create_connection = forbidden
        socket.getaddrinfo = forbidden
        from annofree.data.captions import extract_nouns, sample_prompts

        caption = "Two dogs playing with a red ball in the snow"
        prompts = sample_prompts(caption, 3, random.Random(0))
        json.dump({"nouns": extract_nouns(caption), "prompts": prompts}, sys.stdout)
        """
    )
    # An empty NLTK_DATA makes sure no locally downloaded nltk data is needed either.
    env = {"NLTK_DATA": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["nouns"] == ["dog", "ball", "snow"]
    assert len(result["prompts"]) == 3


def test_no_network_access_in_process(monkeypatch):
    # The same pipeline as a data-loader worker runs, with caches emptied and sockets forbidden.
    def forbidden(*args, **kwargs):
        raise RuntimeError("network access attempted")

    monkeypatch.setattr(socket, "socket", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    captions._nouns.cache_clear()
    caption = "A boy riding a bicycle past two parked cars"
    prompts = sample_prompts(caption, 3, random.Random(0))
    tokens = ClipTokenizer().tokenize([caption, *prompts])
    assert extract_nouns(caption) == ["boy", "bicycle", "car"]
    assert tokens.shape == (4, 77)


@pytest.mark.parametrize(
    ("caption", "nouns"),
    [
        ("a red cross on grass", ["cross", "grass"]),  # the tagger says VB after an adjective
        ("the cross", ["cross"]),
        ("they cross the road", ["road"]),  # a real verb stays out
        ("the dogs run on the grass", ["dog", "grass"]),
    ],
)
def test_nouns_the_tagger_misreads_as_verbs_after_a_determiner_are_kept(caption, nouns):
    assert extract_nouns(caption) == nouns
