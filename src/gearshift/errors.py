"""Errors gearshift raises, with the HTTP status and OpenAI error type they map to."""

from __future__ import annotations

import math


class GearshiftError(Exception):
    """Base error. `status` and `type` are what an HTTP client sees in the OpenAI-style error JSON."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """Response headers telling a client whether a retry can help (the OpenAI and Anthropic SDKs
        obey `x-should-retry` and `retry-after`)."""
        return {}


class ConfigError(GearshiftError):
    """The config file is wrong; the message names the key, the bad value and what is allowed."""

    status = 500
    type = "config_error"


class StoreError(GearshiftError):
    """The trace store cannot be opened or reached; the message names it with any password masked."""

    status = 503
    type = "server_error"


class ClientError(GearshiftError):
    """The client's own mistake: a 4xx, typed as OpenAI types invalid requests."""

    status = 400
    type = "invalid_request_error"


class BadRequest(ClientError):
    status = 400


class Unauthorized(ClientError):
    status = 401
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UpstreamError(GearshiftError):
    """An upstream call failed. `retryable` marks connect errors, timeouts, 429 and 5xx; `retry_after`
    is the wait in seconds the upstream asked for (Retry-After), when it did."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 timeout: bool = False, upstream_status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.timeout = timeout
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        if status is not None:
            self.status = status
        elif timeout:
            self.status = 504

    def headers(self) -> dict[str, str]:
        # The gateway already retried and fell back: a client retry only helps after a stated wait.
        if self.retry_after is None:
            return {"x-should-retry": "false"}
        seconds = max(0.0, self.retry_after)
        return {"x-should-retry": "true", "retry-after": str(max(1, math.ceil(seconds))),
                "retry-after-ms": str(int(seconds * 1000))}


class Unavailable(UpstreamError):
    """Every model of the route is rate limited (429) or has its circuit open (503); retry after `retry_after`."""

    def __init__(self, message: str, *, status: int, retry_after: float) -> None:
        super().__init__(message, status=status, retryable=False, retry_after=retry_after)
        self.type = "rate_limit_error" if status == 429 else "upstream_error"
        self.code = "rate_limited" if status == 429 else "circuit_open"


class ReplayMiss(UpstreamError):
    """A replay model was asked a prompt it has no recorded answer for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, retryable=False)
        self.type = "invalid_request_error"
        self.code = "prompt_not_recorded"


class LimitExceeded(ClientError):
    """A key's or team's rate limit or budget refused the request (429); `retry_after` seconds until its
    window resets, `headers_extra` the x-ratelimit-* headers of the refusal."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, code: str, retry_after: float, scope: str, reason: str,
                 headers_extra: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.scope = scope  # key | team
        self.reason = reason  # rpm | tpm | usd_day | usd_month
        self.headers_extra = headers_extra or {}

    def headers(self) -> dict[str, str]:
        # A minute window is worth waiting out; a spent budget is not (the SDKs would sleep for hours).
        seconds = max(0.0, self.retry_after)
        retry = "true" if self.reason in ("rpm", "tpm") else "false"
        return {**self.headers_extra, "x-should-retry": retry, "retry-after": str(max(1, math.ceil(seconds))),
                "retry-after-ms": str(int(seconds * 1000))}
