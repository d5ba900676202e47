import pytest

from shared.routing import Intent, RequestOptions, Skill, analyze
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


GREETING = "Hello! How are you today?"
TRANSLATION = "Translate 'good morning' into French"
DEFINITION = "What is a noun?"
MATH_WORD_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
CODING_TASK = "Write a Python function that returns the longest palindromic substring of a string."
LOGIC_PUZZLE = (
    "Alice, Bob and Carol each own one pet: a cat, a dog or a fish. Alice does not own the dog. "
    "Carol owns the fish only if Bob owns the cat. Bob is allergic to cats. Who owns which pet?"
)


@pytest.mark.parametrize("request_text", [MATH_WORD_PROBLEM, CODING_TASK, LOGIC_PUZZLE, LONG_REQUEST])
def test_work_a_cheap_model_falls_short_on_goes_above_the_cheapest_tier(request_text):
    analysis = analyze(request_text, None, None, SETTINGS)
    assert analysis.decision.quality_target == 0.95
    assert analysis.tier != Tier.simple, analysis.decision.reason


@pytest.mark.parametrize("request_text", [GREETING, TRANSLATION, DEFINITION, "Write a haiku about autumn"])
def test_requests_a_cheap_model_keeps_up_on_stay_on_the_cheapest_tier(request_text):
    analysis = analyze(request_text, None, None, SETTINGS)
    assert analysis.tier == Tier.simple, analysis.decision.reason


@pytest.mark.parametrize(
    ("request_text", "skill"),
    [
        (GREETING, Skill.conversation),
        (TRANSLATION, Skill.transform),
        (DEFINITION, Skill.explanation),
        (MATH_WORD_PROBLEM, Skill.math),
        (CODING_TASK, Skill.code),
        (LOGIC_PUZZLE, Skill.reasoning),
        ("Extract every company name and founding year from the following text as JSON.", Skill.extraction),
        ("Compose a short poem about the sea", Skill.writing),
        ("Who was the first president of the United States?", Skill.factual),
    ],
)
def test_skill_is_named_with_its_evidence(request_text, skill):
    analysis = analyze(request_text, None, None, SETTINGS)
    assert analysis.skill == skill
    assert analysis.skill_evidence


def test_difficulty_orders_skills_as_the_outcome_data_and_priors_do():
    easy = [analyze(text, None, None, SETTINGS).complexity_score for text in (GREETING, DEFINITION)]
    hard = [analyze(text, None, None, SETTINGS).complexity_score for text in (MATH_WORD_PROBLEM, LOGIC_PUZZLE)]
    assert max(easy) < min(hard)
    puzzle = analyze(LOGIC_PUZZLE, None, None, SETTINGS)
    assert any(item.startswith("skill reasoning") for item in puzzle.difficulty_evidence)


def test_a_higher_quality_target_never_sends_a_request_to_a_cheaper_tier():
    requests = [GREETING, TRANSLATION, DEFINITION, MATH_WORD_PROBLEM, CODING_TASK, LOGIC_PUZZLE, LONG_REQUEST]
    requests += ["What is the capital of France?", "Summarize the attached report", "Compare Redis and Memcached"]
    targets = [0.5, 0.8, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0]
    ranks = {
        text: [analyze(text, None, RequestOptions(quality_target=t), SETTINGS).tier.rank for t in targets]
        for text in requests
    }
    for text, by_target in ranks.items():
        assert by_target == sorted(by_target), f"{text!r}: tier ranks {by_target} over targets {targets}"
    totals = [sum(by_target[i] for by_target in ranks.values()) for i in range(len(targets))]
    assert totals[0] < totals[-1]


def test_the_decision_explains_itself():
    analysis = analyze(MATH_WORD_PROBLEM, None, None, SETTINGS)
    decision = analysis.decision
    assert set(decision.thresholds) == {Tier.simple, Tier.moderate}
    assert analysis.complexity_score > decision.thresholds[Tier.simple]
    assert "math request of difficulty" in decision.reason and "0.95" in decision.reason
    assert decision.expected_quality >= 0.95


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
    assert "forced by the caller" in forced.decision.reason
    small = analyze("Summarize", None, None, SETTINGS, document="word " * 100)
    assert not small.needs_preprocessing
    big = analyze("Summarize", None, None, SETTINGS, document_tokens=SETTINGS.document_processing.max_direct_tokens + 1)
    assert big.needs_preprocessing and big.tokens.document == 100_001


def test_special_token_text_does_not_break_analysis():
    analysis = analyze("Explain what <|endoftext|> means in GPT tokenizers", None, None, SETTINGS)
    assert analysis.tokens.request > 5
