"""The webdataset layout of image-caption shards, shared by the writer and the readers.

A shard is a tar file whose members ``KEY.jpg`` + ``KEY.txt`` (+ ``KEY.json``) form one sample: members whose
file names share the part before the first dot belong to one sample (the webdataset rule). Shards are named
``000000.tar``, ``000001.tar``, ... and addressed with brace patterns (``data/{000000..000099}.tar``).
"""

from __future__ import annotations

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the first one present in a sample is its image
CAPTION_EXTENSION = "txt"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # what a directory given as data contributes
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # caption tables: `annofree data shards` makes shards of them
MAKE_SHARDS = "make shards with `annofree data shards SRC OUT` (SRC: a folder of images with .txt captions, or a table)"


def split_member_name(name: str) -> tuple[str, str] | None:
    """A tar member's ``(sample key, lower-case extension)``; None for hidden files and names without one."""
    folder, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return None
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()
