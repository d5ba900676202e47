"""The official openai client, pointed at the running API, gets completions, streams and model lists."""

from __future__ import annotations

import openai
import pytest
import redis

from shared.settings import get_settings, load_settings


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url=f"{str(api.base_url).rstrip('/')}/v1", api_key="unused", max_retries=0)


def test_models_lists_auto_and_the_catalog(client):
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert ids[0] == "auto" and set(ids[1:]) == set(load_settings().models)
    # the catalog's fields ride along, as `orchestrator models --json` shows them
    entries = {entry.name: entry.model_dump() for entry in load_settings().catalog.entries()}
    for model in models[1:]:
        extra = model.model_extra
        assert extra == {key: value for key, value in entries[model.id].items() if key not in {"name", "provider"}}
    mini = next(model for model in models if model.id == "gpt-4o-mini").model_extra
    assert (mini["input_usd_per_mtok"], mini["output_usd_per_mtok"], mini["tier"]) == (0.15, 0.6, "moderate")
    assert mini["price_source"].startswith("genai-prices ") and mini["context_window"] == 128_000


def test_a_model_is_retrieved_by_name(client):
    assert (client.models.retrieve("claude-3-5-haiku-20241022").owned_by, client.models.retrieve("auto").id) == (
        "anthropic",
        "auto",
    )
    older = client.models.retrieve("gpt-4-turbo")  # outside the catalog, priced by the library
    assert older.owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-9")
    assert error.value.code == "model_not_found"


def test_auto_completion_with_usage_and_savings_headers(client, start_worker, wire_servers):
    start_worker()
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "What is a noun?"},
        ],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.model == "gemini-2.0-flash" == raw.headers["x-orchestrator-model"]
    assert completion.choices[0].message.content.startswith("[gemini-2.0-flash] What is a noun?")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert float(raw.headers["x-orchestrator-savings-usd"]) > 0
    assert float(raw.headers["x-orchestrator-cost-usd"]) < float(raw.headers["x-orchestrator-baseline-cost-usd"])
    prompt = wire_servers["google"].requests[-1].body["contents"][-1]["parts"][0]["text"]
    assert "instructions: Answer in French." in prompt and "user: Hi\nassistant: Bonjour" in prompt
    assert wire_servers["google"].requests[-1].body["generationConfig"]["maxOutputTokens"] == 50


def test_a_named_model_is_honoured(client, start_worker, wire_servers):
    start_worker()
    completion = client.chat.completions.create(
        model="claude-3-5-haiku-20241022", messages=[{"role": "user", "content": "Define entropy"}]
    )
    assert completion.model == "claude-3-5-haiku-20241022"
    assert wire_servers["anthropic"].requests[-1].model == "claude-3-5-haiku-20241022"


def test_unknown_model_is_an_openai_style_error(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert error.value.code == "model_not_available" and "unknown model(s) gpt-9" in error.value.message


@pytest.mark.distributed
def test_streaming_relays_the_providers_pieces(client, start_worker, wire_servers):
    start_worker()
    stream = client.chat.completions.create(
        model="auto",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a haiku about autumn leaves falling"}],
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    answer = "[gemini-2.0-flash] Write a haiku about autumn leaves falling"
    assert "".join(pieces) == answer
    assert len(pieces) == len(answer.split())  # relayed piece by piece, as the provider streamed them
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert wire_servers["google"].requests[-1].path.endswith(":streamGenerateContent?alt=sse")


def test_an_answer_cut_at_max_tokens_finishes_with_length(client, start_worker, wire_servers):
    start_worker()
    completion = client.chat.completions.create(
        model="auto", max_tokens=3, messages=[{"role": "user", "content": "What is a verb?"}]
    )
    assert completion.choices[0].message.content == "[gemini-2.0-flash] What is"
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 3
    chunks = list(
        client.chat.completions.create(
            model="claude-3-5-haiku-20241022",
            max_tokens=2,
            stream=True,
            messages=[{"role": "user", "content": "What is the capital of Chile?"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[claude-3-5-haiku-20241022] What"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


@pytest.mark.parametrize(
    ("asked", "param"),
    [
        ({"n": 2}, "n"),
        (
            {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]},
            "tools",
        ),
        (
            {"functions": [{"name": "get_weather", "parameters": {"type": "object"}}], "function_call": "auto"},
            "functions",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "object"}},
                }
            },
            "response_format",
        ),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ],
)
def test_a_parameter_beyond_one_text_choice_is_refused_by_name(client, redis_env, asked, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], **asked)
    assert error.value.code == "unsupported_parameter" and error.value.param == param
    assert param in error.value.message
    assert redis.Redis.from_url(redis_env).keys(f"{get_settings().redis_prefix}job:*") == []  # nothing submitted


def test_an_image_is_refused_rather_than_unseen(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="auto",
            messages=[
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
            ],
        )
    assert error.value.code == "unsupported_content" and error.value.param == "messages.1.content"
    assert "not image_url" in error.value.message


def test_the_default_of_a_refusable_parameter_is_served(client, start_worker):
    start_worker()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    for asked in (
        {"n": 1, "logprobs": False, "response_format": {"type": "text"}, "modalities": ["text"]},
        {"tools": []},
        {"tools": tools, "tool_choice": "none"},
    ):
        completion = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Define entropy"}], **asked
        )
        assert completion.choices[0].message.content == "[gemini-2.0-flash] Define entropy"


def test_stop_sequences_reach_the_provider(client, start_worker, wire_servers):
    start_worker()
    client.chat.completions.create(model="auto", stop="\n\n", messages=[{"role": "user", "content": "Define entropy"}])
    assert wire_servers["google"].requests[-1].body["generationConfig"]["stopSequences"] == ["\n\n"]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="auto", stop=["a", "b", "c", "d", "e"], messages=[{"role": "user", "content": "Define entropy"}]
        )
    assert error.value.param == "stop" and "options.stop: List should have at most 4 items" in error.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "narrator", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),  # fits no member of the union
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": 5}, "stop"),
    ],
)
def test_a_body_that_does_not_validate_is_an_openai_style_400(client, body, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="auto", **body)
    assert error.value.status_code == 400 and error.value.param == param
    assert error.value.body["message"].startswith(f"{param}: ")


def test_other_routes_keep_their_validation_errors(api):
    response = api.post("/v1/jobs", json={"request": ""})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "request"]


def test_each_member_of_a_union_says_what_it_wanted(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert error.value.body["message"] == (
        "messages.0.content: Input should be a valid string (str); Field required (list[ContentPart].0.type)"
    )


def test_a_body_that_is_not_json_or_a_wrong_method_answers_in_openai_format(api):
    broken = api.post(
        "/v1/chat/completions", content=b'{"model": "auto", "messages": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["error"]["message"].startswith("the body is not valid JSON")
    wrong = api.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["message"] == "Method Not Allowed"


def test_a_replayed_refusal_and_a_text_part_without_text_are_read(client, start_worker, wire_servers):
    start_worker()
    client.chat.completions.create(
        model="auto",
        messages=[
            {"role": "user", "content": "Tell me a secret"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot share that."}]},
            {"role": "user", "content": [{"type": "text", "text": None}, {"type": "text", "text": "Define entropy"}]},
        ],
    )
    prompt = wire_servers["google"].requests[-1].body["contents"][-1]["parts"][0]["text"]
    assert "assistant: I cannot share that." in prompt and "Define entropy" in prompt
