"""Settings: environment variables over `config/*.yaml` over built-in defaults.

Environment variables use the `ORCH_` prefix (nested keys joined by `__`), plus the providers' usual key variables.
A config file that is not valid YAML, or whose values do not validate, fails with a `ConfigError` that names the
file and the field, so an operator never has to guess which of several files is wrong.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.catalog import Catalog, ModelSpec, ProviderConfig, Tier, TierChain
from shared.services.config import McpClientSettings, McpService

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"


class ConfigError(Exception):
    """A configuration problem an operator must fix; the message names the file and the field."""


class ChunkingSettings(BaseModel):
    default_chunk_size: int = Field(10_000, gt=0)
    max_chunk_size: int = Field(50_000, gt=0)
    min_chunk_size: int = Field(500, gt=0)
    overlap_size: int = Field(200, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ChunkingSettings:
        if not self.min_chunk_size <= self.default_chunk_size <= self.max_chunk_size:
            raise ValueError("need min_chunk_size <= default_chunk_size <= max_chunk_size")
        if self.overlap_size >= self.default_chunk_size:
            raise ValueError("overlap_size must be smaller than default_chunk_size")
        return self


class DocumentProcessing(BaseModel):
    enable_preprocessing: bool = True
    max_direct_tokens: int = Field(100_000, gt=0)
    preprocessor_model: str | None = Field(
        None, description="The cheap long-context model that summarises chunks; default: the simple tier's chain."
    )
    cache_ttl_seconds: int = Field(86_400, gt=0, description="How long compressed documents are reused.")
    document_ttl_seconds: int = Field(86_400, gt=0, description="How long stored documents are kept.")
    max_document_bytes: int = Field(32 * 1024 * 1024, gt=0)
    default_strategy: Literal["auto", "extractive", "hierarchical", "semantic", "hybrid"] = "auto"
    chunking: ChunkingSettings = ChunkingSettings()
    on_summary_failure: Literal["fallback", "fail"] = Field(
        "fallback",
        description="When chunk summaries fail: answer from an extractive compression instead (the job says so), "
        "or fail the job.",
    )


class AuthSettings(BaseModel):
    enabled: bool = Field(True, description="Require an API key on the HTTP API; switch off only on purpose.")


class Resilience(BaseModel):
    max_attempts_per_model: int = Field(3, ge=1, description="Tries of one model before the next in the chain.")
    backoff_base_seconds: float = Field(0.25, ge=0)
    backoff_max_seconds: float = Field(8.0, ge=0)
    max_retry_after_seconds: float = Field(
        30.0, ge=0, description="A Retry-After longer than this moves on to the next model instead of waiting."
    )
    breaker_failure_threshold: int = Field(5, ge=1, description="Failures within the window that open a breaker.")
    breaker_failure_ratio: float = Field(
        0.5, ge=0, le=1, description="...and at least this share of the window's calls, so busy models stay usable."
    )
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_cooldown_seconds: float = Field(30.0, gt=0, description="Open time before a single probe is let through.")
    slot_wait_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a call waits for a slot of its account's or model's max_in_flight, before its own "
        "timeout starts; then the next model of the chain.",
    )


class RoutingSettings(BaseModel):
    quality_target: float = Field(
        0.95,
        ge=0.5,
        le=1.0,
        description="Share of the strong tier's quality to keep; each request goes to the cheapest tier whose "
        "difficulty threshold at this target admits it.",
    )
    model_dir: Path | None = Field(
        None, description="A difficulty model written by `orchestrator router train --out`; unset: the shipped one."
    )


class ResponseCache(BaseModel):
    enabled: bool = True
    ttl_seconds: int = Field(3600, gt=0)
    scope: Literal["tenant", "global"] = Field(
        "tenant",
        description="tenant: a tenant's answers serve only its own requests (a hit would tell another tenant what "
        "was asked); global: shared by every tenant, for a deployment whose keys all belong to one team.",
    )


#: Which environment variables hold each well-known provider's key, in the order they are tried.
PROVIDER_KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORCH_", env_nested_delimiter="__", populate_by_name=True, extra="ignore"
    )

    redis_url: str | None = None
    broker_url: str | None = Field(
        None,
        description="Where task messages go: the Redis of `redis_url` when unset (a job's record and its message "
        "are then written in one transaction), or a RabbitMQ server (`amqp://`), with the store's outbox making "
        "every accepted job's message reach it.",
    )
    redis_prefix: str = "orch:"
    data_dir: Path = Path("~/.orchestrator")

    job_ttl_seconds: int = Field(7 * 86_400, gt=0, description="How long an async job's record is kept.")
    sync_record_ttl_seconds: int = Field(
        3600,
        gt=0,
        description="How long the record of a request answered in its own call (`/v1/orchestrate`, the "
        "OpenAI-compatible endpoint, MCP `orchestrate`) is kept after it finishes, unless it asks to be stored.",
    )
    provider_timeout_seconds: float = Field(60.0, gt=0)
    default_max_output_tokens: int = Field(1024, gt=0)
    orchestrate_wait_seconds: float = Field(30.0, ge=0)
    max_batch_items: int = Field(10_000, gt=0)
    max_request_bytes: int = Field(40 * 1024 * 1024, gt=0, description="Largest HTTP request body accepted.")
    max_json_depth: int = Field(
        32, ge=4, description="Deepest nesting of arrays and objects in a JSON body or batch line (422 past it)."
    )

    use_host_model: bool = Field(
        False, description="Let an MCP host that offers sampling answer with its own model, at no API cost."
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, gt=0, lt=65536)
    api_access_log: bool = Field(
        False,
        description="A log line per HTTP request. Off by default: at hundreds of requests a second it costs "
        "the API a twentieth of its CPU, and job records, metrics and Prometheus already account for every request.",
    )
    worker_concurrency: int = Field(32, gt=0)
    visibility_timeout_seconds: int = Field(
        60,
        gt=0,
        description="How long after a worker's last heartbeat the messages it held come back for another worker "
        "(workers/lease.py renews them every sixth of this, at most 10 s): how soon a dead worker's jobs run again. "
        "No longer tied to the longest task: a live worker's messages never come back.",
    )
    shutdown_drain_seconds: float = Field(
        5.0,
        ge=0,
        description="When a command that runs the embedded worker stops (signal or end), how long the jobs in hand "
        "may take to finish before they are put back in their queue for the next worker.",
    )
    lost_message_sweep_seconds: float = Field(
        15.0,
        gt=0,
        description="How often workers look for jobs whose message a crashed worker took and lost; such "
        "a job is sent again once a message sent this long after its own has been claimed.",
    )

    models: dict[str, ModelSpec] = {}
    execution: dict[Tier, TierChain] = {}
    baseline_model: str = ""
    max_fallbacks: int = Field(4, ge=0)
    providers: dict[str, ProviderConfig] = {}
    document_processing: DocumentProcessing = DocumentProcessing()
    auth: AuthSettings = AuthSettings()
    resilience: Resilience = Resilience()
    routing: RoutingSettings = RoutingSettings()
    response_cache: ResponseCache = ResponseCache()
    mcp_services: dict[str, McpService] = Field({}, description="Downstream MCP servers (config/services.yaml).")
    mcp_client: McpClientSettings = McpClientSettings()

    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"))
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    google_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GOOGLE_API_KEY", "GEMINI_API_KEY", "google_api_key")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlDirectorySource(settings_cls)

    _catalog: Catalog | None = PrivateAttr(None)

    @field_validator("broker_url", mode="before")
    @classmethod
    def _empty_broker_is_none(cls, value: str | None) -> str | None:
        """An empty ORCH_BROKER_URL (compose passes one through when it is unset) means the default."""
        return value or None

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        for name, spec in self.models.items():
            if spec.provider not in self.providers:
                raise ValueError(f"models.{name}.provider: unknown provider {spec.provider!r}")
        for tier, chain in self.execution.items():
            for model in chain.models:
                if model not in self.models:
                    raise ValueError(f"execution.{tier}: unknown model {model!r}")
        missing = [t.value for t in Tier if t not in self.execution]
        if self.models and missing:
            raise ValueError(f"execution: no chain for tier(s) {', '.join(missing)}")
        if self.models and self.baseline_model not in self.models:
            raise ValueError(f"baseline_model: unknown model {self.baseline_model!r}")
        self._catalog = Catalog(self.models, self.providers)
        self.models = self._catalog.specs
        return self

    @property
    def catalog(self) -> Catalog:
        """Specs and prices of every model, the configured ones and older ones the price library knows."""
        assert self._catalog is not None
        return self._catalog

    @property
    def broker_is_store(self) -> bool:
        """Task messages go to the store's own Redis, in the transactions that write their jobs."""
        return self.broker_url is None or self.broker_url == self.redis_url

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser()

    def provider_api_key(self, provider: str) -> str | None:
        """The key for a provider account: its config, its own variable, or the provider's usual variable."""
        config = self.providers[provider]
        if config.api_key is not None:
            return config.api_key.get_secret_value()
        if config.api_key_env and os.environ.get(config.api_key_env):
            return os.environ[config.api_key_env]
        field = {"openai": self.openai_api_key, "anthropic": self.anthropic_api_key, "google": self.google_api_key}
        secret = field.get(provider)
        return secret.get_secret_value() if secret is not None else None

    def provider_base_url(self, provider: str) -> str | None:
        config = self.providers[provider]
        if config.base_url:
            return config.base_url
        return self.openai_base_url if provider == "openai" else None

    def usable_providers(self) -> set[str]:
        """Providers that can be called: they have a key, need none, or are an OpenAI-compatible account pointed at
        a server of its own (OPENAI_BASE_URL at Ollama or vLLM answers without a key)."""
        return {
            name
            for name, config in self.providers.items()
            if not config.api_key_required
            or self.provider_api_key(name)
            or (config.adapter == "openai" and self.provider_base_url(name))
        }

    def key_variables_hint(self) -> str:
        names = [" or ".join(variables) for variables in PROVIDER_KEY_VARIABLES.values()]
        return f"set {', '.join(names)} (or OPENAI_BASE_URL at an OpenAI-compatible server such as Ollama or vLLM)"


class YamlDirectorySource(PydanticBaseSettingsSource):
    """Every `*.yaml` in the config directory (`ORCH_CONFIG_DIR`), merged in name order."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.data: dict[str, Any] = {}
        for path in config_files():
            self.data = merged(self.data, _read_yaml(path))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`: mappings merge key by key (a later file adds a model or a provider account, or changes
    one field of it), anything else is replaced. A file's top-level `replace: [section, ...]` replaces those
    sections whole instead (a catalog of its own rather than more models)."""
    replace = set(overlay.get("replace", ()))
    result = dict(base)
    for name, value in overlay.items():
        if name == "replace":
            continue
        if isinstance(value, dict) and isinstance(result.get(name), dict) and name not in replace:
            result[name] = merged(result[name], value)
        else:
            result[name] = value
    return result


def config_files() -> list[Path]:
    """The YAML files of `ORCH_CONFIG_DIR`: one directory, or several joined by `os.pathsep` (a site overlay over
    the defaults), read in that order and merged (`merged`)."""
    value = os.environ.get("ORCH_CONFIG_DIR", str(DEFAULT_CONFIG_DIR))
    directories = [Path(part) for part in value.split(os.pathsep) if part]
    return [path for directory in directories if directory.is_dir() for path in sorted(directory.glob("*.yaml"))]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(content).__name__}")
    return content


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into a `ConfigError` naming the file and field."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    origins = {key: path for path in config_files() for key in _read_yaml(path)}
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        top = str(item["loc"][0]) if item["loc"] else message.split(".", 1)[0].split(":", 1)[0]
        origin = origins.get(top)
        from_environment = any(name.startswith(f"ORCH_{top.upper()}") for name in os.environ)
        where = f"{origin} or ORCH_{top.upper()}*: " if origin and from_environment else f"{origin}: " if origin else ""
        lines.append(f"{where}{location}: {message}" if location else f"{where}{message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


@functools.cache
def get_settings() -> Settings:
    """The process's settings, loaded once. Tests and the embedded runner call `get_settings.cache_clear()`."""
    return load_settings()
