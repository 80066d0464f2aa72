"""One table maps each error class to the CLI's exit code and the API's HTTP status."""

from __future__ import annotations

import pytest

from postroom.app.errors import ERRORS, error_kind, mapping_for
from postroom.errors import (
    ConfigError,
    DatabaseUnavailable,
    InputError,
    NotFoundError,
    PermissionDenied,
    PostroomError,
    ReadOnlyError,
    StateError,
    TemplateError,
    TemplateLimitError,
    TransportError,
)


@pytest.mark.parametrize(("error", "exit_code", "status"), [
    (ConfigError, 2, 500), (InputError, 2, 422), (TemplateError, 2, 422),
    (TemplateLimitError, 2, 422), (NotFoundError, 2, 404), (PermissionDenied, 1, 403),
    (StateError, 1, 409), (ReadOnlyError, 1, 409), (TransportError, 1, 502),
    (DatabaseUnavailable, 1, 503), (PostroomError, 1, 500),
])
def test_each_error_class_has_its_exit_code_and_status(error: type[PostroomError],
                                                       exit_code: int, status: int) -> None:
    mapping = mapping_for(error("x"))
    assert (mapping.exit_code, mapping.http_status) == (exit_code, status)


def test_a_subclass_not_listed_takes_its_nearest_listed_parent() -> None:
    class Odd(ReadOnlyError):
        pass

    assert mapping_for(Odd("x")) == ERRORS[ReadOnlyError]


def test_an_error_that_is_not_postroom_s_is_a_500() -> None:
    assert mapping_for(ValueError("bug")).http_status == 500
    assert mapping_for(ValueError("bug")).exit_code == 1


def test_every_error_class_of_the_errors_module_is_in_the_table() -> None:
    import postroom.errors as errors

    classes = {getattr(errors, name) for name in errors.__all__}
    assert classes <= set(ERRORS)


def test_the_kind_is_the_class_name_in_snake_case() -> None:
    assert error_kind(NotFoundError("x")) == "not_found"
    assert error_kind(DatabaseUnavailable("x")) == "database_unavailable"
