"""Third-party token chunkers to compare `shared.chunking` with (a helper for benchmarks, not a script).

Each of chonkie, semchunk and semantic-text-splitter that is importable (`pip install -e .[bench]`) gets a function
`text -> list[str]` that cuts a text into chunks of about `chunk_size` o200k_base tokens, set up the fastest way each
library documents for a tiktoken encoding:

- chonkie: `TokenChunker` (its plain token-window chunker, one encode of the whole text) over the tiktoken `Encoding`
  object itself, wrapped so it calls `encode_ordinary` (chonkie would call `encode`, which raises on special-token
  text such as "<|endoftext|>" and scans the text for it first). A string name would send chonkie to the `tokie`
  backend, which downloads "Xenova/gpt-4o" from the Hugging Face hub.
- semchunk: `chunkerify` with a plain token counter over `encode_ordinary` and `max_token_chars` given up front (what
  `chunkerify` would otherwise compute from the vocabulary on every call). The chunker is built on every call because
  `chunkerify` memoizes token counts per chunker: reusing one would time cache hits from the previous run.
- semantic-text-splitter: `TextSplitter.from_tiktoken_model("gpt-4o", ...)`, its built-in Rust tiktoken (o200k_base);
  a Python callback would be far slower. It takes no encoding name, only a model name.

semchunk and semantic-text-splitter split on semantic levels and re-count tokens many times, so they do more work
than a token-window chunker; that is the point of comparing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.tokens import DEFAULT_ENCODING, encoding  # noqa: E402

Chunker = Callable[[str], list[str]]


def _chonkie(chunk_size: int, overlap: int) -> Chunker:
    from chonkie import TokenChunker

    enc = encoding(DEFAULT_ENCODING)
    tokenizer: object = enc
    try:
        from chonkie.tokenizer import TiktokenAutoTokenizer

        class _OrdinaryTiktoken(TiktokenAutoTokenizer):
            def encode(self, text):
                return self.tokenizer.encode_ordinary(text)

            def encode_batch(self, texts):
                return self.tokenizer.encode_ordinary_batch(list(texts))

        tokenizer = _OrdinaryTiktoken(enc)
    except ImportError:  # an older or newer chonkie without this adapter: the encoding itself still works
        pass
    chunker = TokenChunker(tokenizer=tokenizer, chunk_size=chunk_size, chunk_overlap=overlap)

    def chunk(text: str) -> list[str]:
        return [c.text for c in chunker.chunk(text)]

    return chunk


def _semchunk(chunk_size: int, overlap: int) -> Chunker:
    import semchunk

    enc = encoding(DEFAULT_ENCODING)
    encode_ordinary = enc.encode_ordinary
    max_token_chars = max(len(token) for token in enc.token_byte_values())

    def count(text: str) -> int:
        return len(encode_ordinary(text))

    def chunk(text: str) -> list[str]:
        chunker = semchunk.chunkerify(count, chunk_size, max_token_chars=max_token_chars)
        return chunker(text, overlap=overlap or None)

    return chunk


def _semantic_text_splitter(chunk_size: int, overlap: int) -> Chunker:
    from semantic_text_splitter import TextSplitter

    splitter = TextSplitter.from_tiktoken_model("gpt-4o", chunk_size, overlap)
    return splitter.chunks


_LIBRARIES: dict[str, Callable[[int, int], Chunker]] = {
    "chonkie": _chonkie,
    "semchunk": _semchunk,
    "semantic-text-splitter": _semantic_text_splitter,
}


def library_chunkers(chunk_size: int, *, overlap: int = 0) -> dict[str, Chunker]:
    """A chunking function per importable library, each cutting ~`chunk_size`-token o200k_base chunks."""
    chunkers: dict[str, Chunker] = {}
    for name, make in _LIBRARIES.items():
        try:
            chunkers[name] = make(chunk_size, overlap)
        except ImportError:
            continue
    return chunkers


def time_chunkers(text: str, chunk_size: int, repeat: int = 3, *, overlap: int = 0) -> dict[str, float]:
    """Best-of-`repeat` wall seconds each importable library takes to chunk `text`."""
    timings: dict[str, float] = {}
    for name, chunk in library_chunkers(chunk_size, overlap=overlap).items():
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            chunk(text)
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    return timings
