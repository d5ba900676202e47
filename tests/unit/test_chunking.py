"""Token chunking on real text built on this machine: the standard library's source (code), its module docstrings
and the Zen of Python (prose), and generated Unicode whose tokens split multibyte characters."""

from __future__ import annotations

import ast
import codecs
import os
import random
import time
from itertools import accumulate, pairwise
from pathlib import Path

import pytest

from shared import chunking
from shared.chunking import Chunk, chunk_text, chunks_for
from shared.settings import ChunkingSettings
from shared.tokens import encoding

STDLIB = Path(os.__file__).parent
ENC = encoding("o200k_base")
SENTENCE_ENDS = (b".", b"!", b"?", b"\n")


def _read(name: str) -> str:
    return (STDLIB / name).read_text(encoding="utf-8")


def _code() -> str:
    names = ["os.py", "argparse.py", "dataclasses.py", "typing.py", "pathlib.py", "inspect.py"]  # all ASCII
    return "".join(_read(name) for name in names)


def _docstrings(limit: int = 400_000) -> list[str]:
    """Docstrings of the standard library's modules, classes and functions (English prose), about `limit` chars."""
    docs, size = [], 0
    for path in sorted(STDLIB.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    docs.append(doc)
                    size += len(doc)
        if size > limit:
            break
    return docs


def _zen() -> str:
    tree = ast.parse(_read("this.py"))
    encoded = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    )
    return codecs.decode(encoded, "rot13")


def _prose() -> str:
    """Paragraphs of one line each, separated by blank lines: every line break is a paragraph break."""
    paragraphs = []
    for doc in [_zen(), *_docstrings()]:
        for paragraph in doc.split("\n\n"):
            line = " ".join(paragraph.split())
            if len(line) > 40 and line[-1] in ".!?:":
                paragraphs.append(line)
    return "\n\n".join(paragraphs)


def _wrapped_prose() -> str:
    return "\n\n".join([_zen(), *_docstrings()])


def _unicode() -> str:
    rng = random.Random(20240611)
    samples = [
        "日本語の文章です。東京は日本の首都です。",
        "中文文本用于测试分块。北京是中国的首都！",
        "한국어 텍스트입니다. 서울은 한국의 수도입니다.",
        "Ελληνικά κείμενα. Καλημέρα κόσμε!",
        "Русский текст. Привет, мир!",
        "עברית היא שפה שמית. שלום עולם!",
        "العربية لغة جميلة. مرحبا بالعالم!",
        "नमस्ते दुनिया। हिन्दी पाठ।",
        "ภาษาไทยเป็นภาษาที่สวยงาม",
        "naïve café résumé façade — Ångström, Øre, straße. e\u0301 a\u0300 o\u0308",
        "👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇯🇵🇫🇷 🧑🏿‍🚀 ❤️‍🔥",
    ]
    emoji = [chr(c) for c in range(0x1F300, 0x1FAFF) if chr(c).isprintable()]
    cjk = [chr(c) for c in range(0x4E00, 0x9FFF, 7)]
    rare = [chr(c) for c in range(0x20000, 0x2A6DF, 97)]  # CJK Extension B: 4-byte characters, rare in any vocabulary
    parts = []
    for i in range(1500):
        kind = i % 5
        if kind == 0:
            parts.append(rng.choice(samples))
        elif kind == 1:
            parts.append("".join(rng.choice(emoji) for _ in range(rng.randint(1, 30))))
        elif kind == 2:
            parts.append("".join(rng.choice(cjk) for _ in range(rng.randint(5, 60))) + "。")
        elif kind == 3:
            parts.append("".join(rng.choice(rare) for _ in range(rng.randint(3, 20))))
        else:
            parts.append(rng.choice(samples) + "\n")
        parts.append(rng.choice(["", " ", "\n", "\n\n", ". "]))
    return "".join(parts)


CORPORA = {"code": _code(), "prose": _prose(), "wrapped prose": _wrapped_prose(), "unicode": _unicode()}
# (chunk_size, overlap, min_chunk, max_chunk)
SIZES = [(10_000, 200, 500, 50_000), (2_000, 100, 300, 8_000), (300, 40, 100, 1_000)]


def _check(
    text: str,
    chunks: list[Chunk],
    chunk_size: int,
    overlap: int,
    min_chunk: int,
    max_chunk: int,
    *,
    replacement_ok: bool = False,
) -> int:
    """Every invariant of a chunking of `text`; returns how many overlaps a character-boundary snap changed."""
    data = text.encode("utf-8")
    tokens = ENC.encode_ordinary(text)
    assert chunks, "a non-empty text has chunks"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert (chunks[0].start_token, chunks[0].start_byte, chunks[0].start_char) == (0, 0, 0)
    assert (chunks[-1].end_token, chunks[-1].end_byte, chunks[-1].end_char) == (len(tokens), len(data), len(text))
    for c in chunks:
        piece = data[c.start_byte : c.end_byte]
        assert c.tokens == c.end_token - c.start_token > 0
        assert c.tokens <= max_chunk
        if c is not chunks[-1]:
            assert c.tokens <= chunk_size
            assert c.tokens >= min_chunk
        assert text[c.start_char : c.end_char].encode("utf-8") == piece
        assert ENC.decode_bytes(tokens[c.start_token : c.end_token]) == piece
        assert replacement_ok or "\ufffd" not in piece.decode("utf-8")
    last = chunks[-1]
    if len(chunks) == 1:
        assert len(tokens) <= max_chunk
    else:
        # a short last chunk was merged unless that would have exceeded max_chunk; a merged one is the only
        # chunk over chunk_size, by less than min_chunk
        assert last.tokens >= min_chunk or last.end_token - chunks[-2].start_token > max_chunk
        assert last.tokens <= chunk_size or last.tokens < chunk_size + min_chunk
    # coverage: the first chunk plus each next chunk without its overlap is the text, byte for byte
    rebuilt = [data[chunks[0].start_byte : chunks[0].end_byte]]
    rebuilt_text = [text[chunks[0].start_char : chunks[0].end_char]]
    snapped = 0
    for prev, nxt in pairwise(chunks):
        assert prev.start_token < nxt.start_token < prev.end_token < nxt.end_token
        assert nxt.start_byte < prev.end_byte and nxt.start_char < prev.end_char
        if nxt.start_token != prev.end_token - overlap:
            snapped += 1
            assert abs(nxt.start_token - (prev.end_token - overlap)) <= 3
        shared = data[nxt.start_byte : prev.end_byte]
        assert data[prev.start_byte : prev.end_byte].endswith(shared)
        assert data[nxt.start_byte : nxt.end_byte].startswith(shared)
        assert ENC.decode_bytes(tokens[nxt.start_token : prev.end_token]) == shared
        rebuilt.append(data[prev.end_byte : nxt.end_byte])
        rebuilt_text.append(text[prev.end_char : nxt.end_char])
    assert b"".join(rebuilt) == data
    assert "".join(rebuilt_text) == text
    return snapped


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"chunk{s[0]}")
@pytest.mark.parametrize("name", list(CORPORA))
def test_chunks_cover_the_text_exactly_within_the_limits(name, sizes):
    text = CORPORA[name]
    chunk_size, overlap, min_chunk, max_chunk = sizes
    chunks = chunk_text(text, chunk_size=chunk_size, overlap=overlap, min_chunk=min_chunk, max_chunk=max_chunk)
    snapped = _check(text, chunks, *sizes)
    if text.isascii():
        assert snapped == 0
    assert len(chunks) >= len(ENC.encode_ordinary(text)) // chunk_size


def test_the_inputs_are_what_the_tests_claim():
    tokens = {name: ENC.encode_ordinary(text) for name, text in CORPORA.items()}
    assert len(tokens["code"]) > 50_000
    assert len(tokens["prose"]) > 20_000
    assert CORPORA["code"].isascii() and not CORPORA["unicode"].isascii()
    # in the unicode text many token boundaries fall inside a character
    data = CORPORA["unicode"].encode("utf-8")
    offsets = accumulate(len(ENC.decode_single_token_bytes(t)) for t in tokens["unicode"])
    inside = sum(1 for offset in offsets if offset < len(data) and data[offset] & 0xC0 == 0x80)
    assert inside > 1000


def test_cuts_inside_characters_are_snapped_and_counted():
    text = CORPORA["unicode"]
    snapped = 0
    for chunk_size, overlap in [(50, 10), (64, 7), (97, 31), (300, 40)]:
        chunks = chunk_text(text, chunk_size=chunk_size, overlap=overlap, min_chunk=10, max_chunk=1000)
        snapped += _check(text, chunks, chunk_size, overlap, 10, 1000)
        for chunk in chunks:
            assert text[chunk.start_char : chunk.end_char].encode() == text.encode()[chunk.start_byte : chunk.end_byte]
    # the overlap moved only where the cut fell inside a character, and that happened here
    assert snapped > 10


def test_without_a_window_cuts_fall_at_exactly_chunk_size():
    text = CORPORA["code"]
    chunks = chunk_text(text, chunk_size=1000, overlap=100, min_chunk=1, max_chunk=1000, boundary_window=0)
    assert [c.tokens for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
    assert [c.start_token for c in chunks] == [900 * i for i in range(len(chunks))]


def test_a_boundary_never_makes_a_chunk_shorter_than_min_chunk():
    for name in ["prose", "unicode"]:
        text = CORPORA[name]
        chunks = chunk_text(text, chunk_size=1000, overlap=50, min_chunk=950, max_chunk=2000, boundary_window=500)
        _check(text, chunks, 1000, 50, 950, 2000)
        sizes = [c.tokens for c in chunks[:-1]]
        assert min(sizes) >= 950
        assert sum(size < 1000 for size in sizes) > len(sizes) // 2  # boundaries were still found within [950, 1000]


def test_paragraph_breaks_are_preferred_within_the_window():
    text = CORPORA["prose"]
    data = text.encode()
    tokens = ENC.encode_ordinary(text)
    offsets = [0, *accumulate(len(ENC.decode_single_token_bytes(t)) for t in tokens)]
    chunk_size, window = 2_000, 200
    chunks = chunk_text(text, chunk_size=chunk_size, overlap=100, min_chunk=300, max_chunk=8_000)
    ends = [data[: c.end_byte] for c in chunks[:-1]]
    paragraph = sum(end.endswith(b"\n\n") for end in ends)
    sentence = sum(end.endswith(SENTENCE_ENDS) for end in ends)
    assert len(ends) > 10
    assert paragraph + sentence >= 0.9 * len(ends)
    for c in chunks[:-1]:
        hard = c.start_token + chunk_size
        if b"\n\n" in data[offsets[hard - window] : offsets[hard]]:
            assert data[: c.end_byte].endswith(b"\n\n"), c
            assert b"\n\n" not in data[c.end_byte : offsets[hard]]
            assert c.tokens > chunk_size - window
    assert paragraph >= 0.5 * len(ends)


@pytest.mark.parametrize("name", ["prose", "wrapped prose", "code"])
def test_most_chunks_end_at_a_paragraph_or_sentence_end(name):
    text = CORPORA[name]
    data = text.encode()
    for chunk_size, overlap, min_chunk, max_chunk in SIZES[1:]:
        chunks = chunk_text(text, chunk_size=chunk_size, overlap=overlap, min_chunk=min_chunk, max_chunk=max_chunk)
        ends = [data[: c.end_byte] for c in chunks[:-1]]
        good = sum(end.endswith((b"\n\n", *SENTENCE_ENDS)) for end in ends)
        assert good >= 0.9 * len(ends), (chunk_size, good, len(ends))


def test_a_short_last_chunk_is_merged_into_the_previous_one():
    text = CORPORA["code"]
    n = len(ENC.encode_ordinary(text))
    # chunk_size so that the last chunk would hold under min_chunk tokens
    chunk_size, overlap = 1000, 0
    for size in range(1000, 1200):
        if 0 < n % size < 300:
            chunk_size = size
            break
    unmerged = chunk_text(
        text, chunk_size=chunk_size, overlap=overlap, min_chunk=1, boundary_window=0, max_chunk=chunk_size
    )
    merged = chunk_text(
        text, chunk_size=chunk_size, overlap=overlap, min_chunk=300, boundary_window=0, max_chunk=2 * chunk_size
    )
    assert unmerged[-1].tokens < 300
    assert len(merged) == len(unmerged) - 1
    assert merged[-1].start_token == unmerged[-2].start_token
    assert merged[-1].tokens == unmerged[-2].tokens + unmerged[-1].tokens
    # not merged when the result would exceed max_chunk
    capped = chunk_text(
        text, chunk_size=chunk_size, overlap=overlap, min_chunk=300, boundary_window=0, max_chunk=chunk_size + 1
    )
    assert [c.tokens for c in capped] == [c.tokens for c in unmerged]


def test_special_token_text_is_plain_text():
    text = ("Some text <|endoftext|> more text. <|endofprompt|>\n\n" * 400) + "<|endoftext|>"
    chunks = chunk_text(text, chunk_size=500, overlap=50, min_chunk=100)
    _check(text, chunks, 500, 50, 100, 50_000)
    tokens = ENC.encode_ordinary(text)
    assert ENC.eot_token not in tokens
    assert chunks[-1].end_token == len(tokens)


def test_empty_short_and_exact_sizes():
    assert chunk_text("") == []
    assert chunk_text("hello world") == [Chunk(0, 0, 2, 0, 11, 0, 11)]
    text = "東京 🚀 café"
    (only,) = chunk_text(text)
    assert (only.start_char, only.end_char, only.end_byte, only.tokens) == (
        0,
        len(text),
        len(text.encode()),
        len(ENC.encode_ordinary(text)),
    )
    # a text of exactly chunk_size tokens is one chunk; one token more makes two
    words = " word" * 1000
    assert len(ENC.encode_ordinary(words)) == 1000
    assert len(chunk_text(words, chunk_size=1000, overlap=10, min_chunk=1)) == 1
    two = chunk_text(words + " more", chunk_size=1000, overlap=10, min_chunk=1, boundary_window=0)
    assert [(c.start_token, c.end_token) for c in two] == [(0, 1000), (990, 1001)]
    # shorter than min_chunk: still one chunk
    assert len(chunk_text("tiny", min_chunk=500)) == 1


def test_lone_surrogates_are_chunked_as_replacement_characters():
    text = ("abc \ud800 def. " * 300) + "\udfff"
    chunks = chunk_text(text, chunk_size=100, overlap=10, min_chunk=20)
    assert chunks[-1].end_char == len(text)
    clean = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    _check(clean, chunks, 100, 10, 20, 50_000, replacement_ok=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_size": 100, "overlap": 100}, "greater than overlap"),
        ({"chunk_size": 100, "overlap": 150}, "greater than overlap"),
        ({"overlap": -1}, "overlap must be >= 0"),
        ({"chunk_size": 400, "min_chunk": 500}, "min_chunk"),
        ({"min_chunk": -1}, "min_chunk must be >= 0"),
        ({"chunk_size": 60_000}, "max_chunk"),
        ({"chunk_size": 1000, "max_chunk": 999}, "max_chunk"),
        ({"boundary_window": -1}, "boundary_window"),
        ({"chunk_size": 1000.0}, "must be an int"),
        ({"overlap": True}, "must be an int"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chunk_text("some text", **kwargs)
    with pytest.raises(ValueError, match=message):
        chunk_text("", **kwargs)


def test_chunks_for_uses_the_settings():
    text = CORPORA["code"]
    settings = ChunkingSettings(default_chunk_size=3000, overlap_size=150, min_chunk_size=400, max_chunk_size=9000)
    assert chunks_for(text, settings) == chunk_text(text, chunk_size=3000, overlap=150, min_chunk=400, max_chunk=9000)
    assert chunks_for(text, ChunkingSettings()) == chunk_text(text)
    with pytest.raises(ValueError, match="min_chunk_size <= default_chunk_size"):
        ChunkingSettings(default_chunk_size=400)  # inconsistent settings fail when loaded, not when first used


@pytest.mark.parametrize("encoding_name", ["o200k_base", "cl100k_base"])
def test_parallel_tokenization_equals_one_encode(monkeypatch, encoding_name):
    enc = encoding(encoding_name)
    tricky = "".join(
        f"{prefix}\n{word}"
        for prefix in ["", " ", "  ", ".", "./", "\r", " \n", "x", "1", "'", "\t"]
        for word in ["a", "Word", "_x", "1", "東", "é", "s", "'s", "/", " y", "\n"]
    )
    monkeypatch.setattr(chunking, "PARALLEL_MIN_CHARS", 1)
    monkeypatch.setattr(chunking, "_usable_cpus", lambda: 8)
    for text in [*CORPORA.values(), tricky * 20]:
        pieces = chunking._split_for_parallel(text, 8)
        assert "".join(pieces) == text and len(pieces) > 1
        assert chunking._encode(text, encoding_name) == enc.encode_ordinary(text)


def test_parallel_and_serial_chunking_agree(monkeypatch):
    monkeypatch.setattr(chunking, "PARALLEL_MIN_CHARS", 1 << 62)
    serial = {name: chunk_text(text, chunk_size=2000, overlap=100, min_chunk=300) for name, text in CORPORA.items()}
    monkeypatch.setattr(chunking, "PARALLEL_MIN_CHARS", 1)
    monkeypatch.setattr(chunking, "_usable_cpus", lambda: 4)
    for name, text in CORPORA.items():
        assert chunk_text(text, chunk_size=2000, overlap=100, min_chunk=300) == serial[name], name


def test_speed_sanity(capsys):
    text = CORPORA["code"] * 4
    chunk_text(text)
    started = time.perf_counter()
    chunks = chunk_text(text)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nchunk_text: {chunks[-1].end_token:,} tokens in {elapsed * 1000:.1f} ms ({len(chunks)} chunks)")
