"""How each error class reaches a user: one table for the CLI (exit code) and the web API and
console (HTTP status and RFC 9457 problem title), as h11's `error_status_hint`.

The most specific class listed wins (the table is walked along the exception's MRO); an
exception that is not a `PostroomError` is a bug: 500, exit 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from postroom.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseUnavailable,
    InputError,
    LoginThrottled,
    NotFoundError,
    PermissionDenied,
    PostroomError,
    ReadOnlyError,
    StateError,
    TemplateError,
    TemplateLimitError,
    TransportError,
)

__all__ = ["ERRORS", "ErrorMapping", "error_kind", "mapping_for"]


@dataclass(frozen=True)
class ErrorMapping:
    exit_code: int  # the CLI's: 2 for a usage or input problem the user can fix, else 1
    http_status: int
    title: str  # the problem+json "title": the same for every error of the class


ERRORS: MappingProxyType[type[Exception], ErrorMapping] = MappingProxyType({
    ConfigError: ErrorMapping(2, 500, "Configuration error"),
    TemplateLimitError: ErrorMapping(2, 422, "Template over its limits"),
    TemplateError: ErrorMapping(2, 422, "Template error"),
    InputError: ErrorMapping(2, 422, "Invalid input"),
    NotFoundError: ErrorMapping(2, 404, "Not found"),
    LoginThrottled: ErrorMapping(1, 429, "Too many failed log-ins"),
    AuthenticationFailed: ErrorMapping(1, 401, "Authentication required"),
    PermissionDenied: ErrorMapping(1, 403, "Permission denied"),
    ReadOnlyError: ErrorMapping(1, 409, "Read-only"),
    StateError: ErrorMapping(1, 409, "Conflict with the current state"),
    TransportError: ErrorMapping(1, 502, "Relay unavailable"),
    DatabaseUnavailable: ErrorMapping(1, 503, "Database unavailable"),
    PostroomError: ErrorMapping(1, 500, "Postroom error"),
})
_BUG = ErrorMapping(1, 500, "Internal error")


def mapping_for(exc: BaseException) -> ErrorMapping:
    """The mapping of `exc`'s most specific listed class."""
    for cls in type(exc).__mro__:
        found = ERRORS.get(cls)
        if found is not None:
            return found
    return _BUG


def error_kind(exc: BaseException) -> str:
    """config, input, not_found, state, transport, ...: the error class, for scripts."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
