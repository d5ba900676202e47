"""Extractive compression: keep the passages that matter for the query, in document order, under a token budget.

It needs no LLM. A document is cut into passages (paragraphs, merged when short and split when long); each chunk
task reports its passages' sizes and the frequencies of the query's terms (a few KB per chunk); the reduce step
scores every passage with BM25 over the whole document's statistics and takes the best until the budget is full,
then adds their neighbours for context. Without an informative query it keeps an even spread of the document.
The semantic strategy uses the same statistics plus topic segments (TextTiling-style cuts where the vocabulary of
adjacent passages stops overlapping) and takes passages round-robin across segments, so every topic is covered.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from pydantic import BaseModel

from shared.tokens import count_tokens

PASSAGE_TARGET_CHARS = 600  # about 150 tokens of English or code
SEPARATOR = "\n[…]\n"
_TERM = re.compile(r"[a-z0-9][a-z0-9_]+")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_LINE = re.compile(r"(?<=[.!?])\s+|\n")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to was what when where "
    "which who why will with do does did can could should would about into than then there these those their "
    "them they we you your our us me my he she his her not no yes all any each some such only own same so too "
    "very just also if else but while during before after above below up down out off over under again further "
    "once here both few more most other being been were am let find list show tell give please document text "
    "summarize summarise summary explain describe".split()
)
_BM25_K1, _BM25_B = 1.2, 0.75


class Passage(BaseModel):
    start_byte: int
    end_byte: int
    tokens: int
    words: int


class ChunkStats(BaseModel):
    """What one chunk task reports: small enough for a broker message."""

    chunk: int
    passages: list[tuple[int, int, int, int]]  # start_byte, end_byte, tokens, words
    matches: dict[int, dict[str, int]]  # passage index within the chunk -> query term -> frequency
    segments: list[int]  # topic segment number of each passage, local to the chunk


class Selected(BaseModel):
    start_byte: int
    end_byte: int
    tokens: int
    score: float


def terms_of(text: str) -> list[str]:
    return [term for term in _TERM.findall(text.lower()) if term not in _STOPWORDS]


def query_terms(query: str) -> list[str]:
    return list(dict.fromkeys(terms_of(query)))[:48]


def split_passages(text: str) -> list[tuple[int, int]]:
    """Contiguous (start, end) character spans covering `text`: paragraphs, short ones merged, long ones split."""
    spans: list[tuple[int, int]] = []
    start = 0
    for gap in _PARAGRAPH.finditer(text):
        spans.extend(_split_long(text, start, gap.end()))
        start = gap.end()
    if start < len(text):
        spans.extend(_split_long(text, start, len(text)))
    merged: list[tuple[int, int]] = []
    for span in spans:
        if merged and (span[1] - merged[-1][0] <= PASSAGE_TARGET_CHARS or span[1] - span[0] < 80):
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return merged


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    if end - start <= 2 * PASSAGE_TARGET_CHARS:
        return [(start, end)]
    pieces, piece_start = [], start
    for cut in _LINE.finditer(text, start, end):
        if cut.end() - piece_start >= PASSAGE_TARGET_CHARS:
            pieces.append((piece_start, cut.end()))
            piece_start = cut.end()
    while end - piece_start > 2 * PASSAGE_TARGET_CHARS:  # no sentence or line break: cut by length
        pieces.append((piece_start, piece_start + PASSAGE_TARGET_CHARS))
        piece_start += PASSAGE_TARGET_CHARS
    pieces.append((piece_start, end))
    return pieces


def chunk_stats(chunk: int, text: str, base_byte: int, terms: list[str]) -> ChunkStats:
    """Passages of one chunk's text (which starts at `base_byte` of the document) and their query-term counts."""
    wanted = set(terms)
    passages, matches, vectors = [], {}, []
    byte = base_byte
    for start, end in split_passages(text):
        body = text[start:end]
        size = len(body.encode("utf-8"))
        words = terms_of(body)
        counts = Counter(words)
        hits = {term: counts[term] for term in wanted if term in counts}
        if hits:
            matches[len(passages)] = hits
        passages.append((byte, byte + size, count_tokens(body), max(1, len(words))))
        vectors.append(counts)
        byte += size
    return ChunkStats(chunk=chunk, passages=passages, matches=matches, segments=topic_segments(vectors))


def topic_segments(vectors: list[Counter]) -> list[int]:
    """Segment number per passage: a new segment starts where adjacent passages' vocabularies diverge most."""
    if len(vectors) < 3:
        return [0] * len(vectors)
    similarity = [_cosine(vectors[i], vectors[i + 1]) for i in range(len(vectors) - 1)]
    mean = sum(similarity) / len(similarity)
    spread = math.sqrt(sum((s - mean) ** 2 for s in similarity) / len(similarity))
    cut_below = mean - spread / 2
    segments, current = [0], 0
    for i, value in enumerate(similarity):
        is_valley = (
            value < cut_below
            and (i == 0 or value <= similarity[i - 1])
            and (i == len(similarity) - 1 or value <= similarity[i + 1])
        )
        current += is_valley
        segments.append(current)
    return segments


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    dot = sum(count * b[term] for term, count in a.items() if term in b)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def select(stats: list[ChunkStats], terms: list[str], budget: int, by_topic: bool = False) -> list[Selected]:
    """The passages to keep, in document order, whose tokens plus separators fit `budget`."""
    stats = sorted(stats, key=lambda s: s.chunk)
    passages = [Passage(start_byte=p[0], end_byte=p[1], tokens=p[2], words=p[3]) for s in stats for p in s.passages]
    if not passages:
        return []
    scores = _bm25(stats, passages, terms)
    if by_topic:
        segments = [(s.chunk, segment) for s in stats for segment in s.segments]
        order = _round_robin(segments, scores)
    else:
        ranked = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: -scores[i])
        order = _with_neighbours(ranked, len(passages)) + _spread(len(passages))
    chosen: set[int] = set()
    separator = count_tokens(SEPARATOR)
    used = 0
    for index in order:
        if index in chosen:
            continue
        cost = passages[index].tokens + separator
        if used + cost <= budget:
            chosen.add(index)
            used += cost
    return [
        Selected(start_byte=p.start_byte, end_byte=p.end_byte, tokens=p.tokens, score=round(scores[i], 4))
        for i, p in enumerate(passages)
        if i in chosen
    ]


def _bm25(stats: list[ChunkStats], passages: list[Passage], terms: list[str]) -> list[float]:
    scores = [0.0] * len(passages)
    if not terms:
        return scores
    document_frequency: Counter = Counter()
    for s in stats:
        for hits in s.matches.values():
            document_frequency.update(hits.keys())
    total = len(passages)
    average = sum(p.words for p in passages) / total
    offset = 0
    for s in stats:
        for local, hits in s.matches.items():
            index = offset + int(local)
            norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * passages[index].words / average)
            for term, tf in hits.items():
                idf = math.log(1 + (total - document_frequency[term] + 0.5) / (document_frequency[term] + 0.5))
                scores[index] += idf * tf * (_BM25_K1 + 1) / (tf + norm)
        offset += len(s.passages)
    return scores


def _with_neighbours(ranked: list[int], count: int) -> list[int]:
    """Best passages first, then each one's neighbours in the same order: matches first, their context next."""
    around = [j for i in ranked for j in (i - 1, i + 1) if 0 <= j < count]
    return ranked + around


def _spread(count: int) -> list[int]:
    """Indices that cover the document evenly at any prefix length: 0, n/2, n/4, 3n/4, ..."""
    order, seen, step = [], set(), count
    while step >= 1:
        for index in range(0, count, step):
            if index not in seen:
                seen.add(index)
                order.append(index)
        step //= 2
    return order


def _round_robin(segments: list[tuple[int, int]], scores: list[float]) -> list[int]:
    """One passage per topic segment per round, best segments and best passages first."""
    members: dict[tuple[int, int], list[int]] = {}
    for index, segment in enumerate(segments):
        members.setdefault(segment, []).append(index)
    for indices in members.values():  # best passage first; the segment's opening passage breaks ties
        indices.sort(key=lambda i: (-scores[i], i))
    ranked = sorted(members.values(), key=lambda indices: (-sum(scores[i] for i in indices), indices[0]))
    order = []
    for round_ in range(max(len(indices) for indices in ranked)):
        order.extend(indices[round_] for indices in ranked if round_ < len(indices))
    return order
