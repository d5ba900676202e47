import random

from shared.compression import Strategy, choose_strategy
from shared.extractive import SEPARATOR, chunk_stats, query_terms, select, split_passages, topic_segments
from shared.routing import analyze
from shared.settings import load_settings
from shared.tokens import count_tokens

WORDS = (
    "alpha beta gamma delta epsilon zeta theta iota kappa lambda omicron sigma tau upsilon phi chi psi omega "
    "river mountain forest valley ocean desert island glacier canyon meadow"
).split()


def filler(rng: random.Random, paragraphs: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))) + "." for _ in range(paragraphs)]


def document_with_needles(seed: int = 1) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    paragraphs = filler(rng, 400)
    needles = [
        f"The vault code for the {colour} lighthouse is {rng.randint(1000, 9999)}."
        for colour in ("crimson", "amber", "cobalt", "violet")
    ]
    for needle in needles:
        paragraphs.insert(rng.randrange(len(paragraphs)), needle)
    return "\n\n".join(paragraphs), needles


def stats_of(text: str, query: str, parts: int = 4):
    data = text.encode()
    step = len(data) // parts
    cuts = [0]
    for i in range(1, parts):  # cut on paragraph starts, as the chunker does
        cuts.append(data.index(b"\n\n", i * step) + 2)
    cuts.append(len(data))
    spans = zip(cuts, cuts[1:], strict=False)
    return [chunk_stats(i, data[a:b].decode(), a, query_terms(query)) for i, (a, b) in enumerate(spans)]


def test_passages_cover_the_text_contiguously():
    text, _ = document_with_needles()
    spans = split_passages(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert max(end - start for start, end in spans) <= 1300


def test_query_terms_drop_stopwords():
    assert query_terms("What is the vault code for the cobalt lighthouse?") == ["vault", "code", "cobalt", "lighthouse"]


def test_selection_finds_the_needle_keeps_order_and_fits_the_budget():
    text, needles = document_with_needles()
    data = text.encode()
    query = "What is the vault code for the cobalt lighthouse?"
    stats = stats_of(text, query)
    chosen = select(stats, query_terms(query), budget=600)
    kept = [data[p.start_byte : p.end_byte].decode() for p in chosen]
    assert any(needles[2] in passage for passage in kept)
    assert [p.start_byte for p in chosen] == sorted(p.start_byte for p in chosen)
    assert sum(p.tokens for p in chosen) + len(chosen) * count_tokens(SEPARATOR) <= 600
    best = max(chosen, key=lambda p: p.score)
    assert needles[2] in data[best.start_byte : best.end_byte].decode()


def test_without_query_terms_the_selection_spreads_over_the_document():
    text, _ = document_with_needles()
    stats = stats_of(text, "")
    chosen = select(stats, [], budget=2000)
    starts = [p.start_byte for p in chosen]
    assert len(chosen) >= 4
    assert starts[0] == 0 and starts[-1] > len(text.encode()) // 2


def test_topic_segments_cut_where_vocabulary_changes():
    from collections import Counter

    cooking = [Counter("flour sugar butter oven bake dough".split()) for _ in range(4)]
    sailing = [Counter("sail wind mast harbour keel tide".split()) for _ in range(4)]
    assert topic_segments(cooking + sailing) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_semantic_selection_covers_every_topic():
    topics = {
        "cooking": "flour sugar butter oven bake dough recipe whisk",
        "sailing": "sail wind mast harbour keel tide anchor rudder",
        "astronomy": "star galaxy nebula telescope orbit planet comet quasar",
    }
    rng = random.Random(3)
    paragraphs = [
        " ".join(rng.choice(words.split()) for _ in range(60)) + "." for words in topics.values() for _ in range(12)
    ]
    text = "\n\n".join(paragraphs)
    stats = [chunk_stats(0, text, 0, [])]
    chosen = select(stats, [], budget=400, by_topic=True)
    kept = " ".join(text.encode()[p.start_byte : p.end_byte].decode() for p in chosen)
    assert all(any(word in kept for word in words.split()) for words in topics.values())


def test_strategy_choice():
    settings = load_settings()
    summary = analyze("Summarize this report", None, None, settings)
    lookup = analyze("Find the clause about termination", None, None, settings)
    design = analyze("Write a migration plan from this spec", None, None, settings)
    assert choose_strategy(None, summary, "Summarize this report", True)[0] is Strategy.hierarchical
    assert choose_strategy(None, lookup, "Find the clause about termination", True)[0] is Strategy.extractive
    assert choose_strategy(None, design, "Write a migration plan from this spec", True)[0] is Strategy.hybrid
    fallback, why = choose_strategy("hierarchical", summary, "Summarize this report", llm_available=False)
    assert fallback is Strategy.extractive and "no preprocessor model is usable" in why
    assert choose_strategy("semantic", summary, "x", False)[0] is Strategy.semantic


def test_preprocessing_worst_case_covers_every_chunk_summary():
    from shared.compression import Preprocessing, summaries_cost_usd, summary_tokens_per_chunk

    settings = load_settings()
    work = Preprocessing(
        document_id="d" * 64,
        strategy=Strategy.hierarchical,
        query="q",
        budget=20_000,
        cache_key="k",
        llm_chain=["gemini-2.0-flash", "gpt-4.1-nano"],
    )
    cost = summaries_cost_usd(work, 1_000_000, settings, worst_case=True)
    chunks = -(-1_000_000 // 9_800)
    floor = (1_000_000 * 0.10 + chunks * summary_tokens_per_chunk(20_000, chunks) * 0.40) / 1e6
    assert cost >= floor
    extractive = work.model_copy(update={"strategy": Strategy.extractive})
    assert summaries_cost_usd(extractive, 1_000_000, settings, worst_case=True) == 0.0
