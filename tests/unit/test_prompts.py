from shared.prompts import NAIVE_SYSTEM_PROMPT, naive_user_prompt, render_context, system_prompt, user_prompt
from shared.tokens import count_tokens

CONTEXT = {
    "framework": "FastAPI",
    "database": "PostgreSQL",
    "auth": {"method": "JWT", "expiry_minutes": 30},
    "entities": ["User", "Role", "Permission"],
    "rate_limit": None,
    "audit": True,
}


def test_generated_prompt_is_shorter_than_a_naive_dump_and_keeps_all_context():
    request = "Create a REST API for user management with role-based access control"
    compact = system_prompt("write", "moderate") + user_prompt(request, CONTEXT)
    naive = NAIVE_SYSTEM_PROMPT + naive_user_prompt(request, CONTEXT)
    assert count_tokens(compact) < 0.6 * count_tokens(naive)
    for value in ["FastAPI", "PostgreSQL", "JWT", "30", "User", "Role", "Permission", "None", "True"]:
        assert value in compact
    for key in ["framework", "database", "auth.method", "auth.expiry_minutes", "entities", "rate_limit", "audit"]:
        assert f"{key}: " in compact
    assert request in compact


def test_context_rendering_is_flat_and_compact():
    assert render_context({"a": {"b": 1}, "c": ["x", "y"], "d": [{"e": 1}]}) == 'a.b: 1\nc: x, y\nd: [{"e":1}]'


def test_system_prompts_differ_per_intent_and_tier():
    prompts = {
        system_prompt(i, t)
        for i in ["read", "write", "search", "analyze", "manage"]
        for t in ["simple", "moderate", "complex"]
    }
    assert len(prompts) == 15
    assert all(count_tokens(p) < 30 for p in prompts)


def test_document_is_fenced_once_at_the_end():
    prompt = user_prompt("Summarize", {"lang": "en"}, document="Body text.")
    assert prompt.endswith("Document:\n<<<\nBody text.\n>>>")
