"""CLIP's byte-level BPE tokenizer, giving exactly the ids of OpenAI CLIP / open_clip.

Pipeline for one text (as CLIP does it):

1. cleanup: ``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse whitespace, lowercase;
2. pre-tokenisation with CLIP's regex into words, digits, punctuation runs and English contractions;
3. each pre-token's UTF-8 bytes are mapped to printable unicode characters (``bytes_to_unicode``) and
   merged by the BPE ranks of ``bpe_simple_vocab_16e6.txt.gz``; the last symbol carries ``</w>``;
4. symbols -> ids: 256 byte symbols, the same 256 with ``</w>``, one id per merge, then
   ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.

Speed matters because data-loader workers tokenize every caption: the vocabulary is read once per process
(lazily, :func:`get_tokenizer`), the regexes are compiled at import, BPE results are cached per word in a
bounded LRU cache, and plain ASCII text without ``&`` or control characters skips ``ftfy`` and ``html``
(they provably leave such text unchanged).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import ftfy
import regex
import torch

from annofree.errors import UserError

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
START_ID = 49406
END_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
END_OF_WORD = "</w>"
# CLIP keeps the first 49152 - 256 - 2 merge lines, so that bytes, bytes+</w>, merges and the two
# special tokens add up to 49408 ids.
NUM_MERGES = 49152 - 256 - 2
# Distinct words in a caption corpus follow Zipf's law: a few tens of thousands cover nearly all tokens.
WORD_CACHE_SIZE = 65_536

# CLIP's pre-tokenisation pattern (special tokens, contractions, letter runs, single digits, other runs).
_PRE_TOKEN_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
# CLIP collapses whitespace with the `regex` module, whose \s (Unicode White_Space) differs from `re`'s.
_WHITESPACE = regex.compile(r"\s+")
# Text made only of printable ASCII (minus '&') plus tab/newline/carriage return is left unchanged by
# ftfy.fix_text (its fixes touch only non-ASCII, control characters or HTML entities) and by
# html.unescape (no '&'); anything else takes the full cleanup.
_NEEDS_FULL_CLEANUP = regex.compile(r"[^\t\n\r\x20-\x25\x27-\x7e]")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the rest (controls, space, ...) map to code points from
    256 upwards, so that BPE never sees whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    # The others get code points from 256 upwards, in byte order, after the printable ones: this order
    # defines the first 256 ids.
    for shift, byte in enumerate(byte for byte in range(256) if byte not in mapping):
        mapping[byte] = chr(256 + shift)
    return mapping


def clean_text(text: str) -> str:
    """CLIP's text cleanup: ftfy fix, HTML unescape (twice), strip, collapse whitespace, lowercase."""
    if _NEEDS_FULL_CLEANUP.search(text) is not None:
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    text = _WHITESPACE.sub(" ", text.strip()).strip()
    return text.lower()


def pre_tokenize(text: str) -> list[str]:
    """CLIP's pre-tokens of already cleaned text (what BPE then splits into sub-words)."""
    return _PRE_TOKEN_PATTERN.findall(text)


def read_merges(path: str | Path = VOCAB_PATH) -> list[tuple[str, str]]:
    """The merge rules CLIP uses: the first ``NUM_MERGES`` lines after the header of the gzipped file."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the CLIP BPE vocabulary {path}: {error}") from error
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(merge) != 2 for merge in merges):
        raise UserError(f"{path} is not a CLIP BPE vocabulary (expected {NUM_MERGES} merge lines of two symbols)")
    return merges  # type: ignore[return-value]


class ClipTokenizer:
    """CLIP's BPE tokenizer; build it once per process (see :func:`get_tokenizer`), it caches per word."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH, word_cache_size: int = WORD_CACHE_SIZE) -> None:
        self.vocab_path = Path(vocab_path)
        self.word_cache_size = word_cache_size
        merges = read_merges(vocab_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        symbols += [symbol + END_OF_WORD for symbol in symbols]
        symbols += ["".join(merge) for merge in merges]
        symbols += [START_TOKEN, END_TOKEN]
        self.encoder: dict[str, int] = {symbol: index for index, symbol in enumerate(symbols)}
        self.decoder: dict[int, str] = dict(enumerate(symbols))
        if len(self.encoder) != VOCAB_SIZE or self.encoder[START_TOKEN] != START_ID:
            raise UserError(f"{vocab_path} gives {len(self.encoder)} distinct tokens, expected {VOCAB_SIZE}")
        self.merge_ranks: dict[tuple[str, str], int] = {merge: rank for rank, merge in enumerate(merges)}
        # byte value -> its unicode character, as a list: indexing a list is faster than a dict lookup.
        self._byte_chars = [self.byte_encoder[byte] for byte in range(256)]
        self._special_ids = {START_TOKEN: (START_ID,), END_TOKEN: (END_ID,)}
        # A bounded per-instance cache: lru_cache is implemented in C and thread-safe.
        self._word_ids = functools.lru_cache(maxsize=word_cache_size)(self._word_ids_uncached)

    # -- BPE ------------------------------------------------------------------------------------------
    def bpe(self, word: str) -> list[str]:
        """Split one pre-token, given as byte-unicode characters, into its BPE symbols (last one ends ``</w>``)."""
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        ranks = self.merge_ranks
        while len(symbols) > 1:
            # The adjacent pair with the lowest merge rank is merged everywhere it occurs (left to right).
            best_rank, best_pair = None, None
            for pair in itertools.pairwise(symbols):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            first, second = best_pair
            merged: list[str] = []
            index = 0
            while index < len(symbols):
                if index < len(symbols) - 1 and symbols[index] == first and symbols[index + 1] == second:
                    merged.append(first + second)
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        return symbols

    def _word_ids_uncached(self, pre_token: str) -> tuple[int, ...]:
        special = self._special_ids.get(pre_token)
        if special is not None:
            return special
        byte_chars = self._byte_chars
        word = "".join([byte_chars[byte] for byte in pre_token.encode("utf-8")])
        encoder = self.encoder
        return tuple(encoder[symbol] for symbol in self.bpe(word))

    # -- public API -----------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens (cleanup included)."""
        if not isinstance(text, str):
            raise UserError(f"text to tokenize must be a string, got {type(text).__name__}: {text!r:.80}")
        word_ids = self._word_ids
        ids: list[int] = []
        for pre_token in _PRE_TOKEN_PATTERN.findall(clean_text(text)):
            ids.extend(word_ids(pre_token))
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of token ids: a leading start token is skipped, decoding stops at the first end token.

        So a padded row of :meth:`tokenize` decodes to its text. Word ends become spaces, as in CLIP, so
        ``decode(encode(text))`` is ``" ".join(pre_tokenize(clean_text(text)))``.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise UserError(f"decode expects a 1-D sequence of ids, got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        pieces: list[str] = []
        for position, token_id in enumerate(ids):
            token_id = int(token_id)
            if token_id == END_ID:
                break
            if token_id == START_ID and position == 0:
                continue
            symbol = self.decoder.get(token_id)
            if symbol is None:
                raise UserError(
                    f"token id {token_id} at position {position} is outside the vocabulary [0, {VOCAB_SIZE})"
                )
            pieces.append(symbol)
        # Every pre-token ends in "</w>" and none contains it, so splitting there gives whole UTF-8 words.
        byte_decoder = self.byte_decoder
        words = "".join(pieces).split(END_OF_WORD)
        return " ".join(
            bytes([byte_decoder[char] for char in word]).decode("utf-8", errors="replace") for word in words
        ).strip()

    def tokenize(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """``LongTensor[B, context_length]``: start token, ids, end token, zero padding.

        Too long texts are truncated so that the last position still holds the end token (as open_clip).
        A single string gives a batch of one.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence):
            raise UserError(f"texts to tokenize must be a string or a list of strings, got {type(texts).__name__}")
        if not isinstance(context_length, int) or context_length < 2:
            raise UserError(f"context_length must be an integer >= 2 (start and end token), got {context_length!r}")
        rows: list[list[int]] = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise UserError(f"text {index} to tokenize is not a string but {type(text).__name__}: {text!r:.80}")
            ids = [START_ID, *self.encode(text)]
            if len(ids) >= context_length:
                ids = ids[: context_length - 1]
            ids.append(END_ID)
            ids.extend([0] * (context_length - len(ids)))
            rows.append(ids)
        if not rows:
            return torch.zeros(0, context_length, dtype=torch.long)
        return torch.tensor(rows, dtype=torch.long)

    __call__ = tokenize

    def __reduce__(self):
        # Pickled by reference to its file: spawned data-loader workers reload the vocabulary (or reuse their
        # process-wide instance) instead of unpickling tables and the cache wrapper, which cannot be pickled.
        return _restore_tokenizer, (str(self.vocab_path), self.word_cache_size)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the per-word BPE cache."""
        return self._word_ids.cache_info()


@functools.cache
def get_tokenizer() -> ClipTokenizer:
    """The process-wide tokenizer, built on first use (each data-loader worker process builds its own once)."""
    return ClipTokenizer()


def _restore_tokenizer(vocab_path: str, word_cache_size: int) -> ClipTokenizer:
    if Path(vocab_path) == VOCAB_PATH and word_cache_size == WORD_CACHE_SIZE:
        return get_tokenizer()
    return ClipTokenizer(vocab_path, word_cache_size)


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP token ids ``LongTensor[B, context_length]`` (see :meth:`ClipTokenizer.tokenize`)."""
    return get_tokenizer().tokenize(texts, context_length=context_length)


def encode(text: str) -> list[int]:
    """CLIP token ids of ``text`` without start/end tokens."""
    return get_tokenizer().encode(text)


def decode(ids: Iterable[int] | torch.Tensor) -> str:
    """Text of CLIP token ids (see :meth:`ClipTokenizer.decode`)."""
    return get_tokenizer().decode(ids)


__all__ = [
    "CONTEXT_LENGTH",
    "END_ID",
    "START_ID",
    "VOCAB_PATH",
    "VOCAB_SIZE",
    "ClipTokenizer",
    "bytes_to_unicode",
    "clean_text",
    "decode",
    "encode",
    "get_tokenizer",
    "pre_tokenize",
    "tokenize",
]
