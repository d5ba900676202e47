"""Every error a caller of the orchestrator can meet, in one tree, each carrying its HTTP status and a stable code.

    OrchestratorError                  status  code
    ├── InvalidRequest                 400/422 invalid_request   the request itself is wrong
    │   └── NotText                    415     not_text          an upload that is not UTF-8 text
    ├── Forbidden                      403     forbidden         the key may not do this (e.g. every tenant's metrics)
    ├── NotFound                       404     not_found         no such job, document, batch (or not yours)
    ├── Conflict                       409     conflict          e.g. cancelling a finished job
    ├── TooLarge                       413     too_large         a document or body past its limit
    ├── PlanningError                  422     no_model_fits     no model satisfies the constraints (`reasons`)
    ├── BudgetExhausted                429     budget_exhausted  the key's budget for the period is spent
    ├── RateLimited                    429     rate_limited      more requests than the key's rate (`retry_after_s`)
    ├── JobFailed                      502     job_failed        every model of the chain failed (`record`)
    ├── NoProviderConfigured           503     no_provider       no provider account has a key
    └── StoreUnavailable               503     store_unavailable Redis cannot be reached (`retry_after_s`)

Each front end maps the tree once: HTTP (`api/errors.py`), OpenAI's error format, MCP tool errors and CLI messages.
Errors that come from libraries (redis, kombu) are turned into `StoreUnavailable` where they are caught.
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of every error the orchestrator reports to a caller: a message fit to show, a status, a code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """Extra fields for the error body."""
        return {}


class InvalidRequest(OrchestratorError):
    status, code = 422, "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotText(InvalidRequest):
    """The upload is not UTF-8 text."""

    status, code = 415, "not_text"


class Forbidden(OrchestratorError):
    """The caller is known but its key may not do this. Never said of another tenant's work: that is `NotFound`."""

    status, code = 403, "forbidden"


class NotFound(OrchestratorError):
    """Unknown, expired, or another tenant's: the three are told apart to nobody."""

    status, code = 404, "not_found"


class Conflict(OrchestratorError):
    status, code = 409, "conflict"


class TooLarge(OrchestratorError):
    status, code = 413, "too_large"


class PlanningError(OrchestratorError):
    """No model satisfies the constraints. `reasons` maps each candidate to why it was rejected."""

    status, code = 422, "no_model_fits"

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or {}

    def details(self) -> dict[str, Any]:
        return {"rejected": self.reasons}


class BudgetExhausted(OrchestratorError):
    status, code = 429, "budget_exhausted"


class RateLimited(OrchestratorError):
    """More work than the key's rate admits now (a batch counts one request per item)."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobFailed(OrchestratorError):
    """A job ended without an answer (502), or was cancelled while a caller waited for it (409); `record` is its
    job record."""

    status, code = 502, "job_failed"

    def __init__(self, message: str, record: Any, cancelled: bool = False) -> None:
        super().__init__(message)
        self.record = record
        if cancelled:
            self.status, self.code = 409, "job_cancelled"


class NoProviderConfigured(OrchestratorError):
    status, code = 503, "no_provider"


class StoreUnavailable(OrchestratorError):
    """Redis cannot be reached; retry shortly."""

    status, code = 503, "store_unavailable"
    retry_after_s = 2
