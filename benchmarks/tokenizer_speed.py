"""Captions per second of annofree's CLIP tokenizer, and time per caption of the multi-label caption pipeline.

    .venv/bin/python benchmarks/tokenizer_speed.py [--captions 20000] [--k 3]

Captions are synthetic but varied: words drawn with a Zipf-like law from the English lexicon that ships
with textblob (so the word-cache hit rate is realistic), mixed with digits, punctuation, accents, emoji,
HTML entities and capitals. "cold" is a fresh tokenizer (empty per-word BPE cache), "warm" is a second
pass over the same captions. The caption pipeline is what a GroupViT data-loader worker does per sample:
extract_nouns (uncached) + sample_prompts + tokenize([caption, *prompts]).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import regex

from annofree.data import captions as caption_lib
from annofree.data.tokenizer import ClipTokenizer

_SLOT = regex.compile(r"\{(\w)\}")


def lexicon_words(tags: set[str]) -> list[str]:
    """Lowercase words of textblob's bundled lexicon (Brill's tagger) with one of ``tags``, without repeats."""
    import textblob.en

    path = Path(textblob.en.__file__).with_name("en-lexicon.txt")
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith(";") and parts[1] in tags and parts[0].isalpha():
            words.append(parts[0].lower())
    return list(dict.fromkeys(words))


def synthetic_captions(count: int, seed: int = 0) -> list[str]:
    """``count`` varied captions, like alt-texts: a few frequent words, a long tail of rare ones."""
    rng = random.Random(seed)
    nouns, adjectives, verbs = lexicon_words({"NN"}), lexicon_words({"JJ"}), lexicon_words({"VBG"})
    for words in (nouns, adjectives, verbs):
        rng.shuffle(words)

    def zipf(words: list[str]) -> str:
        # Rank r is drawn with probability ~ 1/r: a handful of common words, a long tail.
        return words[min(int(len(words) ** rng.random()) - 1, len(words) - 1)]

    extras = ["2", "1998", "3.5", "!", "...", ",", "&amp;", "café", "naïve", "🐶", "—", "(photo)", "It's", "don't"]
    patterns = [
        "a {a} {n} {v} on the {n}",
        "{A} {n} and two {n}s near a {a} {n}.",
        "close-up of the {n} {v} in {n}, {x}",
        "{x} {N} {v} with {a} {n} {x}",
        "photo of my {n}   at the {n}!!",
    ]
    fillers = {
        "a": lambda: zipf(adjectives),
        "A": lambda: zipf(adjectives).capitalize(),
        "n": lambda: zipf(nouns),
        "N": lambda: zipf(nouns).upper(),
        "v": lambda: zipf(verbs),
        "x": lambda: rng.choice(extras),
    }
    # Each slot is filled independently, so repeated slots in a pattern get different words.
    return [_SLOT.sub(lambda slot: fillers[slot.group(1)](), rng.choice(patterns)) for _ in range(count)]


def rate(run, count: int) -> tuple[float, float]:
    """(items per second, seconds) of ``run()`` over ``count`` items."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return count / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=3, help="prompts per caption in the caption pipeline")
    parser.add_argument("--batch", type=int, default=256, help="captions per tokenize() call")
    args = parser.parse_args()

    texts = synthetic_captions(args.captions)
    print(f"{len(texts)} captions, {len(set(texts))} distinct, e.g. {texts[0]!r}, {texts[1]!r}")

    start = time.perf_counter()
    tokenizer = ClipTokenizer()
    print(f"vocabulary load: {1000 * (time.perf_counter() - start):.0f} ms (once per process)")

    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    def tokenize_all() -> None:
        for batch in batches:
            tokenizer.tokenize(batch)

    cold, cold_s = rate(tokenize_all, len(texts))
    info = tokenizer.cache_info()
    print(f"tokenize cold cache: {cold:,.0f} captions/s ({cold_s:.2f} s; {info.currsize} distinct words cached)")
    warm, warm_s = rate(tokenize_all, len(texts))
    print(f"tokenize warm cache: {warm:,.0f} captions/s ({warm_s:.2f} s)")

    single = texts[: min(len(texts), 5000)]
    one, _ = rate(lambda: [tokenizer.tokenize(text) for text in single], len(single))
    print(f"tokenize one caption per call (warm): {one:,.0f} captions/s")

    start = time.perf_counter()
    caption_lib.preload()
    print(f"tagger load: {1000 * (time.perf_counter() - start):.0f} ms (once per process, or before workers fork)")
    rng = random.Random(0)
    pipeline_texts = texts[: min(len(texts), 5000)]

    def caption_pipeline() -> None:
        for text in pipeline_texts:
            prompts = caption_lib.sample_prompts(text, args.k, rng)
            tokenizer.tokenize([text, *prompts])

    per_second, seconds = rate(caption_pipeline, len(pipeline_texts))
    print(
        f"extract_nouns + sample_prompts(k={args.k}) + tokenize({args.k + 1} texts), noun cache cold: "
        f"{1000 * seconds / len(pipeline_texts):.3f} ms/caption ({per_second:,.0f} captions/s)"
    )
    per_second, seconds = rate(caption_pipeline, len(pipeline_texts))
    print(
        f"same, noun cache warm (repeated captions): {1000 * seconds / len(pipeline_texts):.3f} ms/caption "
        f"({per_second:,.0f} captions/s)"
    )


if __name__ == "__main__":
    main()
