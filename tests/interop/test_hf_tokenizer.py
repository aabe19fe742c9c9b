"""The HF export's tokenizer files: ``CLIPTokenizer`` and ``AutoProcessor`` give annofree's token ids.

transformers' ``CLIPTokenizer`` (tokenizers-backed) normalises with NFC, whitespace collapsing and lowercasing
only. annofree (as OpenAI CLIP and open_clip) also runs ``ftfy.fix_text`` and ``html.unescape`` and lowercases
with Python's ``str.lower``. On the corpus below the ids differ exactly for three classes of text, each named
by a predicate here and checked to be the whole explanation:

1. text that ``ftfy.fix_text`` or ``html.unescape`` change: HTML entities (``&amp;``), curly quotes and
   apostrophes (ftfy straightens them: ``don’t`` is ``don 't`` for annofree, ``don ’ t`` for transformers),
   mojibake, full-width letters, ligatures, control characters;
2. an upper-case Greek sigma that ends a word: ``str.lower`` makes it final (``ς``), the tokenizers library
   lowercases character by character (``σ``);
3. the special tokens written in the text (``<|endoftext|>``, any case): annofree turns them into the start and
   end ids, transformers spells them out, because the export sets ``split_special_tokens``. Without it the pad
   token ``"!"`` (id 0: annofree pads with zeros) would be matched as a special token wherever a text has an
   exclamation mark, a far commoner text.

Everything else (punctuation, digits, contractions, accents, CJK, emoji, odd whitespace, truncation of long
captions) gives equal ids.
"""

from __future__ import annotations

import html
import random
import unicodedata

import ftfy
import pytest
import regex
import torch

import annofree.data.tokenizer as annofree_tokenizer
from annofree.data.tokenizer import END_ID, tokenize
from annofree.interop.hf import save_hf_checkpoint
from tests.tiny import tiny_groupvit

transformers = pytest.importorskip("transformers")

CAPTIONS = [
    "a photo of a cat.",
    "Two dogs playing in the snow",
    "A man riding a bike down a city street.",
    "sunset over the ocean with palm trees",
    "an old red barn in a field of wheat",
    "Close-up of a bee on a sunflower!",
    "children playing football in the park (summer 2019)",
    "The Eiffel Tower at night, Paris",
    "a bowl of ramen with egg and green onions",
    "black-and-white portrait of a woman",
    "kitchen interior: white cabinets, marble counters & wood floor",
    "a cup of coffee on a wooden table",
    "aerial view of a highway interchange",
    "a plate of pasta; fresh basil on top",
    "Snow-capped mountains reflected in a lake",
    "a little girl blowing out candles on her 5th birthday cake",
    "3 cats sleeping on a sofa",
    "vintage car from the 1960s parked outside a diner",
    "a person holding an umbrella in the rain",
    "fireworks over the city skyline on new year's eve",
    "I'm so happy we're here, they'd love it and you've seen it, we'll go, it's done, can't wait",
    "price: $5.99 (50% off!!!)",
    "email me at someone@example.com or visit https://example.com/a_b?x=1&y=2",
    "#sunset #beach @photographer",
    "What is this?! ... I don't know...",
    'he said "hello" -- and left',
    "a-b_c/d\\e|f~g`h^i",
    "1234567890 0.5 1,000,000",
    "MiXeD CaSe WoRdS",
    "   leading and trailing spaces   ",
]
UNICODE = [
    "café au lait à Paris",
    "naïve Zürich façade São Paulo",
    "東京の猫",
    "北京烤鸭 很好吃",
    "한국어 문장입니다",
    "ひらがな と カタカナ",
    "Москва зимой",
    "αβγ δέλτα λόγος",
    "μια φωτογραφία της θάλασσας",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ภาษาไทย",
    "a cat 🐱 and a dog 🐶",
    "thumbs up 👍🏽 family 👨‍👩‍👧",
    "∑ x² ≤ ∞ ± √2",
    "€10 £5 ¥100 25°C",
    "cafe\u0301 (combining accent)",
    "zero\u200bwidth space",
    "no\u00a0break space",
    "ideographic\u3000space",
    "thin\u2009space",
    "tabs\tand\nnewlines\r\nhere",
    "multiple     spaces",
    "İstanbul",
    "Straße groß",
    "ΑΘΗΝΑ",
    "Ελλάδα",
]
# Class 1: what ftfy.fix_text or html.unescape change.
CLEANUP = [
    "Tom &amp; Jerry",
    "&lt;b&gt;bold&lt;/b&gt;",
    "it&#39;s raining",
    "rock &amp;amp; roll",
    "Don’t stop",
    "“quoted” text",
    "‘single’ quotes",
    "cafÃ© mojibake",
    "ﬁne ligature",
    "ＡＢＣ full width",
    "bell\x07char",
    "control\x1cchars\x85here",
]
# Class 2: an upper-case sigma ending a word.
FINAL_SIGMA = ["ΟΔΟΣ ΣΟΦΙΑ", "ΚΟΣΜΟΣ", "Ο ΗΛΙΟΣ ΛΑΜΠΕΙ"]
# Class 3: the special tokens written in the text.
SPECIALS = ["<|endoftext|> x", "a <|startoftext|> b", "<|ENDOFTEXT|>"]

_POOL = [*" ".join(CAPTIONS + UNICODE).split(), ",", ".", "!", "?", "'s", "-", "(", ")", "42", "7", "🙂", "ß", "Æ"]


def _corpus() -> list[str]:
    rng = random.Random(0)
    long = [" ".join(rng.sample(CAPTIONS, 10)) for _ in range(25)]  # past 77 tokens: truncated
    variants = [f(c) for c in CAPTIONS for f in (str.upper, str.title, lambda c: c + "!!!", lambda c: f"({c})")]
    mixed = [" ".join(rng.choice(_POOL) for _ in range(rng.randint(1, 30))) for _ in range(150)]
    return [
        *CAPTIONS,
        *UNICODE,
        *long,
        *variants,
        *mixed,
        *CLEANUP,
        *FINAL_SIGMA,
        *SPECIALS,
        "",
    ]


def _cleanup_changes(text: str) -> bool:
    """Class 1: annofree's ftfy / html steps change the text (beyond the NFC that both apply)."""
    return html.unescape(html.unescape(ftfy.fix_text(text))) != unicodedata.normalize("NFC", text)


def _final_sigma(text: str) -> bool:
    """Class 2: ``str.lower`` makes a final sigma that character-wise lowercasing does not."""
    return "ς" in text.lower() and "ς" not in text


def _special_in_text(text: str) -> bool:
    """Class 3: ``<|startoftext|>`` or ``<|endoftext|>`` written in the text, in any case."""
    return regex.search(r"<\|(?:startoftext|endoftext)\|>", text, flags=regex.IGNORECASE) is not None


def _transformers_normalisation(text: str) -> str:
    """What CLIPTokenizer does before pre-tokenising: NFC, whitespace collapsed, each character lowercased."""
    collapsed = annofree_tokenizer._WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return "".join(character.lower() for character in collapsed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The HF export of a tiny model with CLIP's vocabulary (context length 16)."""
    model = tiny_groupvit()
    return save_hf_checkpoint(model, tmp_path_factory.mktemp("hf")), model


def test_the_export_carries_the_tokenizer_files(exported) -> None:
    directory, _ = exported
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (directory / name).is_file(), name


@pytest.mark.parametrize("context_length", [None, 77], ids=["model_context", "clip_context"])
def test_clip_tokenizer_gives_annofree_ids(exported, context_length: int | None) -> None:
    directory, model = exported
    tokenizer = transformers.CLIPTokenizer.from_pretrained(directory)
    assert tokenizer.model_max_length == model.config.text.context_length == 16
    length = context_length or model.config.text.context_length
    texts = _corpus()
    assert len(texts) >= 300
    kwargs = {"max_length": context_length} if context_length else {}
    theirs = torch.tensor(tokenizer(texts, padding="max_length", truncation=True, **kwargs)["input_ids"])
    ours = tokenize(texts, context_length=length)
    assert theirs.shape == ours.shape == (len(texts), length)
    explained = [_cleanup_changes(t) or _final_sigma(t) or _special_in_text(t) for t in texts]
    same = [bool(torch.equal(a, b)) for a, b in zip(theirs, ours, strict=True)]
    unexplained = [t for t, e, s in zip(texts, explained, same, strict=True) if not e and not s]
    assert not unexplained, unexplained[:5]
    assert sum(same) >= 280  # the classes are the exception
    long = [i for i, t in enumerate(texts) if len(annofree_tokenizer.encode(t)) > length - 2]
    assert len(long) >= 20 and all(same[i] or explained[i] for i in long)
    assert all(ours[i, -1] == END_ID and theirs[i, -1] == END_ID for i in long)  # truncated, end token kept


def test_the_differing_classes_come_from_the_cleanup_and_the_lowercasing_only(exported, monkeypatch) -> None:
    """With annofree's cleanup replaced by transformers' normalisation, classes 1 and 2 give transformers' ids."""
    directory, _ = exported
    tokenizer = transformers.CLIPTokenizer.from_pretrained(directory)
    texts = [t for t in _corpus() if (_cleanup_changes(t) or _final_sigma(t)) and not _special_in_text(t)]
    assert len(texts) >= len(CLEANUP) + len(FINAL_SIGMA)
    theirs = torch.tensor(tokenizer(texts, padding="max_length", truncation=True, max_length=77)["input_ids"])
    assert not torch.equal(theirs, tokenize(texts, context_length=77))
    monkeypatch.setattr(annofree_tokenizer, "clean_text", _transformers_normalisation)
    assert torch.equal(theirs, tokenize(texts, context_length=77))


@pytest.mark.parametrize("text", SPECIALS)
def test_special_tokens_in_the_text_are_special_for_annofree_only(exported, text: str) -> None:
    directory, _ = exported
    tokenizer = transformers.CLIPTokenizer.from_pretrained(directory)
    ours = tokenize(text, context_length=77)[0].tolist()
    theirs = tokenizer(text)["input_ids"]
    specials = {annofree_tokenizer.START_ID, END_ID}
    assert specials & set(ours[1 : ours.index(0) - 1])
    assert not specials & set(theirs[1:-1])  # BPE pieces of the spelt-out string


def test_exclamation_marks_are_text_not_padding(exported) -> None:
    directory, _ = exported
    tokenizer = transformers.CLIPTokenizer.from_pretrained(directory)
    texts = ["a!", "!!!", "stop! now!!"]
    ours = tokenize(texts, context_length=16)
    assert torch.equal(torch.tensor(tokenizer(texts, padding="max_length", truncation=True)["input_ids"]), ours)


def test_auto_processor_loads_the_export_with_both_sides(exported) -> None:
    directory, model = exported
    processor = transformers.AutoProcessor.from_pretrained(directory)
    texts = CAPTIONS + UNICODE
    out = processor(text=texts, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(out["input_ids"], tokenize(texts, context_length=model.config.text.context_length))
    image = (torch.rand(40, 56, 3) * 255).to(torch.uint8).numpy()
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    size = model.config.image.img_size
    assert pixels.shape == (1, 3, size, size)
    assert list(processor.image_processor.image_mean) == pytest.approx(list(model.config.pixel_mean))


def test_unpadded_calls_give_the_ids_without_padding(exported) -> None:
    directory, _ = exported
    tokenizer = transformers.CLIPTokenizer.from_pretrained(directory)
    row = tokenize("a photo of a cat.", context_length=16)[0].tolist()
    assert tokenizer("a photo of a cat.")["input_ids"] == row[: row.index(END_ID) + 1]


def test_a_model_without_clip_vocabulary_gets_no_tokenizer_files(tmp_path) -> None:
    directory = save_hf_checkpoint(tiny_groupvit(vocab_size=50), tmp_path / "hf")
    assert not (directory / "vocab.json").exists() and not (directory / "tokenizer_config.json").exists()
    assert (directory / "config.json").is_file()
