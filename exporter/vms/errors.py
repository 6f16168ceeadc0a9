"""The small family of errors a poll can end with; each maps to one ``result`` label."""

from __future__ import annotations

from typing import ClassVar

POLL_RESULTS = (
    "success",
    "unauthorized",
    "validation_error",
    "http_error",
    "timeout",
    "connection_error",
    "invalid_response",
    "limit_exceeded",
)


class PollError(Exception):
    """Base class; ``str()`` is the reason logged (never contains a secret)."""

    result: ClassVar[str] = "http_error"


class Unauthorized(PollError):
    result = "unauthorized"


class ValidationFailed(PollError):
    """422: the API's ``errors`` field reasons are in the message."""

    result = "validation_error"


class HttpError(PollError):
    result = "http_error"


class PollTimeout(PollError):
    result = "timeout"


class ConnectionFailed(PollError):
    result = "connection_error"


class InvalidResponse(PollError):
    result = "invalid_response"


class LimitExceeded(PollError):
    """Too many pages for ``max_pages``, or still rate-limited (429) after the retries."""

    result = "limit_exceeded"
