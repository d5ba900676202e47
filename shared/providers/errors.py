"""The classification every adapter shares: HTTP status → `ProviderError` kind, Retry-After parsing, transport errors.

The three SDKs raise different exception types but report the same HTTP facts, so each adapter only extracts
(status, message, headers) from its own exceptions and this module decides what they mean. Keeping the policy in one
place is what lets the resilience layer treat every provider alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import httpx2

from shared.providers.base import ProviderError

# Both httpx generations: google-genai picks either one at runtime (GOOGLE_GENAI_HTTP_CLIENT), and a raw transport
# error can escape an SDK while a streamed body is being read.
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (httpx.TimeoutException, httpx2.TimeoutException, TimeoutError)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError, httpx2.TransportError, ConnectionError)


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as httpx/httpx2 `Headers`."""
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value)
    return None


def parse_retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` (more precise, preferred) or `Retry-After` (seconds or HTTP-date)."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def redact(message: str, secret: str) -> str:
    """Remove the API key from text a server may have echoed back (some gateways quote the rejected key)."""
    return message.replace(secret, "***") if secret and len(secret) >= 4 else message


def status_error(
    status: int | None,
    message: str,
    *,
    provider: str,
    model: str,
    headers: Mapping[str, Any] | None = None,
) -> ProviderError:
    """Classify an HTTP error status (Anthropic's 529 "overloaded" counts as a server error)."""
    retry_after = parse_retry_after(headers)
    if status == 429:
        kind, retryable = "rate_limit", True
    elif status == 408:
        kind, retryable = "timeout", True
    elif status is not None and (status >= 500 or status == 529):
        kind, retryable = "server", True
    elif status in (401, 403):
        kind, retryable = "auth", False
    elif status is not None and 400 <= status < 500:
        kind, retryable = "client", False
    else:
        kind, retryable = "unknown", False
    return ProviderError(
        message,
        provider=provider,
        model=model,
        status=status,
        retryable=retryable,
        retry_after_s=retry_after,
        kind=kind,  # type: ignore[arg-type]
    )


def sdk_transport_error(
    exc: BaseException, timeout_type: type, connection_type: type, *, provider: str, model: str
) -> ProviderError | None:
    """The openai and anthropic SDKs' own timeout and connection exceptions (the timeout one subclasses the
    connection one, so it is checked first); None for anything else."""
    if isinstance(exc, timeout_type):
        return ProviderError("request timed out", provider=provider, model=model, retryable=True, kind="timeout")
    if isinstance(exc, connection_type):
        cause = transport_error(exc.__cause__, provider=provider, model=model) if exc.__cause__ else None
        return cause or ProviderError(
            "connection failed", provider=provider, model=model, retryable=True, kind="connection"
        )
    return None


def transport_error(exc: BaseException, *, provider: str, model: str) -> ProviderError | None:
    """A raw httpx/httpx2 timeout or connection failure as a retryable `ProviderError`; None for anything else."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TIMEOUT_ERRORS):
        return ProviderError(
            f"request timed out ({detail})", provider=provider, model=model, retryable=True, kind="timeout"
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        return ProviderError(
            f"connection failed ({detail})", provider=provider, model=model, retryable=True, kind="connection"
        )
    return None
