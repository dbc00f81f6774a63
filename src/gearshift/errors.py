"""Errors gearshift raises, with the HTTP status and OpenAI error type they map to."""

from __future__ import annotations


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


class ConfigError(GearshiftError):
    """The config file is wrong; the message names the key, the bad value and what is allowed."""

    status = 500
    type = "config_error"


class StoreError(GearshiftError):
    """The trace store cannot be opened or reached; the message names it with any password masked."""

    status = 503
    type = "server_error"


class BadRequest(GearshiftError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GearshiftError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GearshiftError):
    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFound(GearshiftError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(GearshiftError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GearshiftError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(GearshiftError):
    """An upstream call failed. `retryable` marks connect errors, timeouts, 429 and 5xx."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 timeout: bool = False, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.timeout = timeout
        self.upstream_status = upstream_status
        if status is not None:
            self.status = status
        elif timeout:
            self.status = 504


class ReplayMiss(UpstreamError):
    """A replay model was asked a prompt it has no recorded answer for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, retryable=False)
        self.type = "invalid_request_error"
        self.code = "prompt_not_recorded"
