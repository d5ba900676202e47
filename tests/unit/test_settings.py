import shutil
from pathlib import Path

import pytest

from shared.settings import DEFAULT_CONFIG_DIR, ConfigError, load_settings


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    for path in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path)
    monkeypatch.setenv("ORCH_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_environment_overrides_yaml_and_provider_variables_are_read(config_dir, monkeypatch):
    monkeypatch.setenv("ORCH_DOCUMENT_PROCESSING__MAX_DIRECT_TOKENS", "5000")
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    settings = load_settings()
    assert settings.document_processing.max_direct_tokens == 5000
    assert settings.document_processing.chunking.overlap_size == 200  # the rest of the block from YAML
    assert settings.provider_api_key("google") == "g-key"
    assert settings.provider_base_url("openai") == "http://127.0.0.1:11434/v1"
    assert "google" in settings.usable_providers()


def test_bad_value_names_file_and_field(config_dir):
    models = config_dir / "models.yaml"
    models.write_text(models.read_text().replace("max_output_tokens: 128000", "max_output_tokens: lots", 1))
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(models) in str(error.value)
    assert "models.gpt-5-nano.max_output_tokens" in str(error.value)


def test_unknown_model_in_a_chain_names_file_and_field(config_dir):
    models = config_dir / "models.yaml"
    models.write_text(models.read_text().replace("preferred: gemini-3.8-flash", "preferred: gpt-9"))
    with pytest.raises(ConfigError, match=r"models.yaml: execution.moderate: unknown model 'gpt-9'"):
        load_settings()


def test_invalid_yaml_names_the_file(config_dir):
    (config_dir / "orchestrator.yaml").write_text("api_port: [unclosed\n")
    with pytest.raises(ConfigError, match=r"orchestrator.yaml: not valid YAML"):
        load_settings()


def test_a_site_file_adds_accounts_and_models_to_the_defaults(config_dir, monkeypatch):
    (config_dir / "zz-site.yaml").write_text(
        "providers:\n"
        "  ollama: {adapter: openai, base_url: 'http://127.0.0.1:11434/v1', api_key_required: false}\n"
        "models:\n"
        "  llama3.1:8b: {provider: ollama, tier: simple, context_window: 131072,\n"
        "                price_override: {input_usd_per_mtok: 0, output_usd_per_mtok: 0}}\n"
        "  gpt-6-luna: {context_window: 64000}\n"
    )
    settings = load_settings()
    assert {"openai", "anthropic", "google", "ollama"} <= set(settings.providers)
    assert "llama3.1:8b" in settings.models and "claude-opus-5-5" in settings.models
    assert settings.models["gpt-6-luna"].context_window == 64000  # one field changed, the rest kept
    assert settings.models["gpt-6-luna"].provider == "openai"
    assert "ollama" in settings.usable_providers()


def test_a_site_file_can_replace_a_section_whole(config_dir):
    (config_dir / "zz-site.yaml").write_text(
        "replace: [models]\n"
        "models:\n"
        "  gpt-6-luna: {provider: openai, tier: simple}\n"
        "  claude-opus-5-5: {provider: anthropic, tier: complex}\n"
        "execution:\n"
        "  simple: {preferred: gpt-6-luna, fallback: []}\n"
        "  moderate: {preferred: gpt-6-luna, fallback: []}\n"
        "  complex: {preferred: claude-opus-5-5, fallback: []}\n"
    )
    settings = load_settings()
    assert set(settings.models) == {"gpt-6-luna", "claude-opus-5-5"}


@pytest.mark.parametrize(
    ("broker", "is_store"),
    [(None, True), ("", True), ("redis://127.0.0.1:6379/0", True), ("amqp://guest:guest@127.0.0.1:5672//", False)],
)
def test_the_broker_is_the_store_unless_another_url_is_named(config_dir, monkeypatch, broker, is_store):
    from workers.celery_app import STORE_TRANSPORT, celery_config

    monkeypatch.setenv("ORCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    if broker is not None:
        monkeypatch.setenv("ORCH_BROKER_URL", broker)  # compose passes an unset variable through as ""
    settings = load_settings()
    assert settings.broker_is_store is is_store
    config = celery_config(settings)
    assert config["broker_url"] == ("redis://127.0.0.1:6379/0" if is_store else broker)
    assert (config["broker_transport"] == STORE_TRANSPORT) is is_store
    assert "result_backend" not in config and config["task_ignore_result"]  # a job's state is its record
    queues = {queue.name: (queue.exchange.name, queue.routing_key) for queue in config["task_queues"]}
    assert queues["llm.simple"] == ("llm.simple", "llm.simple")  # a queue of its own on RabbitMQ too
