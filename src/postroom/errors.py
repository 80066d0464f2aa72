"""All of Postroom's exceptions, in one place.

    PostroomError
    ├── ConfigError(PostroomError, ValueError)        a settings key is missing or wrong
    ├── InputError(PostroomError, ValueError)         user input (file, option, template) is wrong
    │   └── TemplateError                             a template does not compile or render
    │       └── TemplateLimitError                    ... within its CPU or size bounds
    ├── NotFoundError(PostroomError, LookupError)     a named object does not exist
    ├── PermissionDenied(PostroomError, PermissionError) the actor lacks a permission
    ├── AuthenticationFailed(PostroomError, PermissionError) bad password or token, disabled user
    │   └── LoginThrottled                            too many failures from this name and place
    ├── StateError(PostroomError, RuntimeError)       an operation is illegal in the current state
    │   └── ReadOnlyError                             the built-in template cannot be changed
    ├── TransportError(PostroomError, ConnectionError) an SMTP relay could not be used
    └── DatabaseUnavailable(PostroomError, ConnectionError) the database did not come back

Outcomes of sending (accepted, refused, deferred) are values, not exceptions: see
`postroom.domain.outcomes`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "DatabaseUnavailable",
    "InputError",
    "LoginThrottled",
    "NotFoundError",
    "PermissionDenied",
    "PostroomError",
    "ReadOnlyError",
    "StateError",
    "TemplateError",
    "TemplateLimitError",
    "TransportError",
]


class PostroomError(Exception):
    """Root of every error Postroom raises on purpose."""


class ConfigError(PostroomError, ValueError):
    """The instance configuration is invalid; the message names the key."""


class InputError(PostroomError, ValueError):
    """Something the user supplied (file, option, content) cannot be used."""


class TemplateError(InputError):
    """A template does not compile, or does not render for a recipient."""

    def __init__(self, message: str, *, field: str | None = None, variable: str | None = None):
        super().__init__(message)
        self.field = field
        self.variable = variable


class TemplateLimitError(TemplateError):
    """Compiling or rendering a template would pass one of its bounds (`[templates]`)."""


class NotFoundError(PostroomError, LookupError):
    """A template, delivery or log named by the user does not exist."""


class PermissionDenied(PostroomError, PermissionError):
    """The acting user's role lacks `permission` (a permission string such as deliveries:send)."""

    def __init__(self, permission: str, *, actor: str | None = None, role: str | None = None,
                 detail: str | None = None):
        who = f"{actor} ({role})" if actor and role else actor or "this account"
        super().__init__(detail or f"{who} lacks the permission {permission}")
        self.permission = permission
        self.actor = actor
        self.role = role


class AuthenticationFailed(PostroomError, PermissionError):
    """A log-in or API token was refused. The message never says whether the name exists."""


class LoginThrottled(AuthenticationFailed):
    """Too many failed log-ins for this name from this address; try again after `retry_after`
    seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"too many failed log-ins; try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after


class StateError(PostroomError, RuntimeError):
    """The operation is not allowed in the object's current state."""


class ReadOnlyError(StateError):
    """The object (the built-in default template) is read-only."""


class TransportError(PostroomError, ConnectionError):
    """An SMTP relay could not be reached or refused the session as a whole."""


class DatabaseUnavailable(PostroomError, ConnectionError):
    """The database kept failing for longer than a sender waits for it (database_wait_seconds);
    `stopped`: the wait was cut short by a stop request (SIGTERM), not given up."""

    def __init__(self, message: str, *, stopped: bool = False) -> None:
        super().__init__(message)
        self.stopped = stopped
