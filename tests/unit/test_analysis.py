import pytest

from shared.analysis import Intent, RequestOptions, analyze
from shared.settings import Tier, load_settings

SETTINGS = load_settings()

LONG_REQUEST = (
    "Design a distributed, fault-tolerant job scheduler in Python that must support exactly-once execution, "
    "handle worker crashes without losing jobs, scale to 10k jobs per second, and include tests. Then write a "
    "migration plan from our legacy cron setup, ensuring backward compatibility and zero downtime."
)


@pytest.mark.parametrize(
    ("request_text", "intent"),
    [
        ("What is the capital of France?", Intent.read),
        ("Summarize this article in three bullet points", Intent.read),
        ("Create a REST API for user management", Intent.write),
        ("Write a Python function that reverses a string", Intent.write),
        ("Refactor the authentication module", Intent.write),
        ("Find all occurrences of TODO in the repository", Intent.search),
        ("Where is the retry policy configured?", Intent.search),
        ("Analyze the security vulnerabilities in this codebase", Intent.analyze),
        ("Compare PostgreSQL and MySQL for a write-heavy workload", Intent.analyze),
        ("Why does my worker leak memory?", Intent.analyze),
        ("Restart the nginx service on the staging server", Intent.manage),
        ("Deploy version 2.3 of the billing service to production", Intent.manage),
        ("Rotate the database credentials and revoke the old ones", Intent.manage),
        (LONG_REQUEST, Intent.write),
    ],
)
def test_intent(request_text, intent):
    assert analyze(request_text, None, None, SETTINGS).intent == intent


@pytest.mark.parametrize(
    ("request_text", "context", "tier"),
    [
        ("What is the capital of France?", None, Tier.simple),
        ("Translate 'good morning' to Spanish", None, Tier.simple),
        ("Write a haiku about autumn", None, Tier.simple),
        ("Create a REST API for user management", {"framework": "FastAPI", "database": "PostgreSQL"}, Tier.moderate),
        ("Analyze the security vulnerabilities in this codebase", None, Tier.moderate),
        (LONG_REQUEST, None, Tier.complex),
    ],
)
def test_tier(request_text, context, tier):
    assert analyze(request_text, context, None, SETTINGS).tier == tier


def test_scores_grow_with_depth_and_constraints():
    plain = analyze("Write a function that adds two numbers", None, None, SETTINGS)
    demanding = analyze(LONG_REQUEST, None, None, SETTINGS)
    assert demanding.complexity_score > plain.complexity_score + 0.3
    assert demanding.features["constraints"] >= 3
    assert demanding.features["depth_terms"] >= 3
    assert demanding.features["steps"] >= 1


def test_deterministic_and_reports_tokens():
    context = {"framework": "FastAPI", "tables": ["users", "roles"]}
    first = analyze("Create a REST API for user management", context, None, SETTINGS)
    second = analyze("Create a REST API for user management", context, None, SETTINGS)
    assert first == second
    assert first.tokens.request == 7
    assert first.tokens.context > 0
    assert first.tokens.naive_prompt > first.tokens.request + first.tokens.context


def test_tier_can_be_forced_and_large_documents_need_preprocessing():
    forced = analyze("hi", None, RequestOptions(tier=Tier.complex), SETTINGS)
    assert forced.tier == Tier.complex
    small = analyze("Summarize", None, None, SETTINGS, document="word " * 100)
    assert not small.needs_preprocessing
    big = analyze("Summarize", None, None, SETTINGS, document_tokens=SETTINGS.document_processing.max_direct_tokens + 1)
    assert big.needs_preprocessing and big.tokens.document == 100_001


def test_special_token_text_does_not_break_analysis():
    analysis = analyze("Explain what <|endoftext|> means in GPT tokenizers", None, None, SETTINGS)
    assert analysis.tokens.request > 5
