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
