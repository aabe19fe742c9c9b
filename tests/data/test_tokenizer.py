"""CLIP BPE tokenizer: known ids, agreement with transformers' CLIPTokenizer, padding/truncation, decoding."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import pickle
import random

import ftfy
import pytest
import torch

import annofree
from annofree.data import tokenizer as tok
from annofree.errors import UserError

# Strings that exercise every step: cleanup (ftfy, html, whitespace, case), the pre-tokeniser's classes
# (letters, single digits, punctuation runs, contractions, special tokens) and multi-byte BPE.
VARIED_TEXTS = [
    "a photo of a cat.",
    "Hello, World!!! What's up?",
    "It's 2023... don't   STOP me now; we're they'll I'd you've I'm",
    "3.14159 and 1,000,000 and 007",
    "naïve café résumé Ångström façade",
    "emoji 🐱🚀 👍🏽 👨‍👩‍👧",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp;lt; &quot;quoted&quot; &#39;x&#39;",
    "  tabs\tand\nnew\r\nlines   everywhere  ",
    "日本語のテキストと中文",
    "Ã©tÃ© mojibake â€œquotedâ€",
    "<|endoftext|> special <|startoftext|> tokens",
    "ＦＵＬＬＷＩＤＴＨ ﬁne ligature “curly” ‘single’",
    "İstanbul ǅungla ΣΊΣΥΦΟΣ straße",
    "non\u00a0breaking\u2003em\u2009thin spaces",
    "control\x00chars\x1f and\x7f delete",
    "don't-stop_me #hashtag @user http://example.com/a_b.jpg?x=1&y=2",
    "A VERY LOUD CAPTION WITH CAPITALS",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    " ".join(["a long caption that goes on"] * 30),
    "",
    "   ",
    "x",
]


def reference_clean(text: str) -> str:
    """CLIP's cleanup spelled out with ftfy and html directly; CLIPTokenizer then collapses whitespace.

    Lowercasing is done here with Python's ``str.lower`` as CLIP does: the Rust lowercasing of transformers
    differs on context-dependent letters (Greek final sigma "ΟΣ" -> "ος" in Python, "οσ" in Rust).
    """
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip().lower()


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """transformers' (Rust-backed) CLIPTokenizer built from vocab.json/merges.txt written from the same .gz file."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("clip_vocab")
    with gzip.open(tok.VOCAB_PATH, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    # The vocabulary is built here independently of annofree's code, the way CLIP describes it.
    byte_chars = list(tok.bytes_to_unicode().values())
    symbols = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


def random_texts(count: int, seed: int) -> list[str]:
    """Seeded random strings over an alphabet mixing ASCII, accents, CJK, emoji, entities and odd spaces."""
    rng = random.Random(seed)
    alphabet = [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789.,!?'&;:-_()",
        "é",
        "ü",
        "ñ",
        "漢",
        "字",
        "🙂",
        "🐶",
        "\u00a0",
        "\t",
        "\n",
        "&amp;",
        "'s",
        "'ll",
        "  ",
    ]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(count)]


def test_vocabulary_file_is_clips():
    digest = hashlib.sha256(tok.VOCAB_PATH.read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    tokenizer = tok.get_tokenizer()
    assert len(tokenizer.encoder) == tok.VOCAB_SIZE == 49408
    assert tokenizer.encoder["<|startoftext|>"] == tok.START_ID == 49406
    assert tokenizer.encoder["<|endoftext|>"] == tok.END_ID == 49407
    assert tokenizer.encoder["!"] == 0 and tokenizer.encoder["!</w>"] == 256


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        # Checked against transformers' CLIPTokenizer built from the same vocabulary (see the agreement test).
        ("a photo of a cat.", [49406, 320, 1125, 539, 320, 2368, 269, 49407]),
        ("Hello World!", [49406, 3306, 1002, 256, 49407]),
        ("a diagram", [49406, 320, 22697, 49407]),
        ("It's 3 dogs' toys", [49406, 585, 568, 274, 3255, 262, 7162, 49407]),
        ("café 🐶", [49406, 15304, 10631, 49407]),
    ],
)
def test_known_ids(text, ids):
    row = tok.tokenize(text)[0].tolist()
    assert row[: len(ids)] == ids
    assert all(value == 0 for value in row[len(ids) :])
    assert tok.encode(text) == ids[1:-1]


def test_agrees_with_transformers_clip_tokenizer(hf_tokenizer):
    texts = VARIED_TEXTS + random_texts(400, seed=0)
    for text in texts:
        expected = hf_tokenizer(reference_clean(text))["input_ids"]
        assert [tok.START_ID, *tok.encode(text), tok.END_ID] == expected, repr(text)


def test_batch_agrees_with_transformers_including_truncation(hf_tokenizer):
    texts = VARIED_TEXTS + random_texts(50, seed=1)
    batch = tok.tokenize(texts, context_length=24)
    for row, text in zip(batch.tolist(), texts, strict=True):
        expected = hf_tokenizer(reference_clean(text))["input_ids"]
        if len(expected) > 24:
            expected = [*expected[:23], tok.END_ID]
        assert row == expected + [0] * (24 - len(expected)), repr(text)


def test_fast_cleanup_path_matches_full_cleanup():
    # Plain ASCII text skips ftfy/html; it must give exactly what the full cleanup gives.
    texts = [t for t in random_texts(300, seed=2) if t.isascii()]
    texts += [
        "a\r\nb\rc",
        "A  B\tC",
        "x &amp; y",
        "&lt;p&gt;",
        "tab\x0bvertical\x0cfeed",
        "bell\x07char",
        "esc\x1b[31mred",
    ]
    for text in texts:
        expected = tok._WHITESPACE.sub(" ", reference_clean(text)).strip()
        assert tok.clean_text(text) == expected, repr(text)


def test_shape_padding_and_dtype():
    batch = tok.tokenize(["a photo of a cat.", "dog", ""])
    assert batch.shape == (3, 77) and batch.dtype == torch.long
    assert batch[1].tolist()[:3] == [tok.START_ID, *tok.encode("dog"), tok.END_ID]
    assert batch[2].tolist()[:2] == [tok.START_ID, tok.END_ID]
    assert batch[2, 2:].eq(0).all()
    # The end token is the row maximum: the text encoder pools there with argmax.
    assert batch.argmax(dim=1).tolist() == [7, 2, 1]


def test_single_string_gives_batch_of_one_and_package_level_tokenize():
    single = annofree.tokenize("a photo of a dog.")
    assert single.shape == (1, 77)
    assert torch.equal(single, tok.tokenize(["a photo of a dog."]))
    assert tok.tokenize([], context_length=5).shape == (0, 5)


def test_truncation_keeps_end_token():
    text = " ".join(["word"] * 200)
    row = tok.tokenize(text)[0]
    assert row.shape == (77,)
    assert row[0].item() == tok.START_ID and row[-1].item() == tok.END_ID
    assert row[1:-1].tolist() == tok.encode(text)[:75]
    # Exactly filling the context needs no truncation; one token more does.
    fits = " ".join(["word"] * 8)
    assert tok.tokenize(fits, context_length=10)[0].tolist() == [tok.START_ID, *[tok.encode("word")[0]] * 8, tok.END_ID]
    over = tok.tokenize(fits + " word", context_length=10)[0].tolist()
    assert over[-1] == tok.END_ID and over[1:-1] == tok.encode(fits)[:8]
    assert tok.tokenize("anything at all", context_length=2)[0].tolist() == [tok.START_ID, tok.END_ID]


def test_decode_round_trip_on_normalised_text():
    # Lowercase words separated by single spaces come back unchanged.
    for text in [
        "a photo of a cat",
        "the quick brown fox jumps over the lazy dog",
        "naïve café",
        "supercalifragilistic",
    ]:
        assert tok.decode(tok.encode(text)) == text
    # In general CLIP's decoding puts a space after every pre-token. (Special tokens typed into the text
    # are excluded: they become real start/end ids, as in CLIP, and decoding stops at an end id.)
    for text in [t for t in VARIED_TEXTS if "<|" not in t] + random_texts(100, seed=3):
        cleaned = tok.clean_text(text)
        assert tok.decode(tok.encode(text)) == " ".join(tok.pre_tokenize(cleaned)), repr(text)


def test_decode_of_padded_row_stops_at_end_token():
    rows = tok.tokenize(["a photo of a cat.", ""])
    assert tok.decode(rows[0]) == "a photo of a cat ."
    assert tok.decode(rows[1]) == ""
    with pytest.raises(UserError, match="outside the vocabulary"):
        tok.decode([320, 49408])
    with pytest.raises(UserError, match="1-D"):
        tok.decode(rows)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(UserError, match="text 1"):
        tok.tokenize(["fine", 3])
    with pytest.raises(UserError, match="context_length"):
        tok.tokenize("x", context_length=1)
    with pytest.raises(UserError, match="must be a string"):
        tok.encode(None)  # type: ignore[arg-type]


def test_bad_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("#version\na b\n")
    with pytest.raises(UserError, match="not a CLIP BPE vocabulary"):
        tok.ClipTokenizer(path)
    with pytest.raises(UserError, match="cannot read"):
        tok.ClipTokenizer(tmp_path / "missing.txt.gz")


def test_one_instance_per_process_and_bounded_word_cache():
    assert tok.get_tokenizer() is tok.get_tokenizer()
    small = tok.ClipTokenizer(word_cache_size=2)
    text = "apples bananas cherries apples bananas cherries"
    assert small.encode(text) == tok.encode(text)
    info = small.cache_info()
    assert info.maxsize == 2 and info.currsize == 2
    before = small.cache_info().hits
    small.encode("cherries cherries")
    assert small.cache_info().hits == before + 2


def test_pickles_by_reference_for_spawned_workers():
    default = pickle.loads(pickle.dumps(tok.get_tokenizer()))
    assert default is tok.get_tokenizer()
    small = pickle.loads(pickle.dumps(tok.ClipTokenizer(word_cache_size=3)))
    assert small.cache_info().maxsize == 3
    assert small.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]
