"""Personalization: Jinja2's sandbox, strict about undefined variables, escaping HTML.

Templates see `recipient` (email, first_name, last_name, email_format and every custom field as
an attribute) and `delivery` (id, name). Compiling happens once per delivery; rendering is a
pure function of the compiled templates and the recipient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from postroom.domain.models import Recipient
from postroom.errors import TemplateError

__all__ = [
    "CompiledContent",
    "RenderedContent",
    "compile_content",
    "recipient_context",
    "static_text",
    "template_literals",
]


class _Named:
    """A namespace for templates: `recipient.x` and `recipient["x"]` read the value `x`.

    It has no public attributes of its own, so a field may be called `name`, `items` or
    `keys`; its private slots start with `_`, which the sandbox refuses to read.
    """

    __slots__ = ("_label", "_values")

    def __init__(self, label: str, values: dict[str, Any]):
        self._label = label
        self._values = values

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values


class _Undefined(StrictUndefined):
    """StrictUndefined whose error names the variable (`recipient.loyalty`), not `dict object`."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        obj = self._undefined_obj
        if obj is missing:
            return f"undefined variable '{self._undefined_name}'"
        owner = obj._label if isinstance(obj, _Named) else type(obj).__name__
        return f"undefined variable '{owner}.{self._undefined_name}'"

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self._undefined_exception(self._undefined_message)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with a short way to read `recipient.x` and `delivery.x`.

    For a `_Named` and a name without a leading `_`, the sandbox's generic checks always pass
    (no such name is an attribute of the class or of `object`, so it reads a value; the name is
    not internal; `_Named` is none of the mutable types): the answer is the value, passed
    through `wrap_str_format` as the sandbox does, or undefined. Everything else goes the
    sandbox's own way.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is _Named and not attribute.startswith("_"):
            try:
                value = obj._values[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
            wrapped = self.wrap_str_format(value)
            return value if wrapped is None else wrapped
        return super().getattr(obj, attribute)


def _environment(autoescape: bool) -> _Sandbox:
    return _Sandbox(
        autoescape=autoescape,
        undefined=_Undefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class CompiledContent:
    """The subject, HTML and text of one delivery, compiled once."""

    _subject: _Compiled
    _html: _Compiled
    _text: _Compiled
    has_html: bool
    has_text: bool
    variables: frozenset[str]  # the top-level names the content uses (mirror_url, ...)

    def render(self, context: dict[str, Any], *, who: str = "") -> RenderedContent:
        """Render for one recipient; TemplateError names the field, the variable and `who`."""
        return RenderedContent(
            subject=_render(self._subject, context, "subject", who),
            html=_render(self._html, context, "html", who) if self.has_html else "",
            text=_render(self._text, context, "text", who) if self.has_text else "",
        )


class _Compiled:
    """One compiled template, rendered the way `Template.render` does without its per-call
    set-up: the globals (a ChainMap, slow to copy) are flattened once, and the root render
    function runs on a fresh context. Errors are the template's own, as `render` re-raises
    them (it only rewrites their traceback)."""

    __slots__ = ("_blocks", "_environment", "_globals", "_name", "_root")

    def __init__(self, template: Any):
        self._environment = template.environment
        self._root = template.root_render_func
        self._blocks = template.blocks
        self._name = template.name
        self._globals = dict(template.globals)

    def render(self, variables: dict[str, Any]) -> str:
        environment = self._environment
        context = environment.context_class(
            environment, {**self._globals, **variables}, self._name, self._blocks,
            globals=self._globals)
        result: str = environment.concat(self._root(context))
        return result


def _render(template: _Compiled, context: dict[str, Any], field: str, who: str) -> str:
    try:
        result = template.render(context)
    except UndefinedError as exc:
        variable = str(exc).removeprefix("undefined variable ").strip("'")
        raise TemplateError(
            f"{field}: {exc}{' for ' + who if who else ''}", field=field, variable=variable
        ) from None
    except SecurityError as exc:
        raise TemplateError(f"{field}: forbidden in the sandbox: {exc}", field=field) from None
    except Exception as exc:  # any other runtime error of the template is the template's fault
        where = f" for {who}" if who else ""
        raise TemplateError(f"{field}: {type(exc).__name__}: {exc}{where}", field=field) from None
    return result


def _compile(env: ImmutableSandboxedEnvironment, source: str, field: str) -> _Compiled:
    try:
        return _Compiled(env.from_string(source))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{field}, line {exc.lineno}: {exc.message}", field=field) from None


def compile_content(*, subject: str, html: str, text: str) -> CompiledContent:
    """Compile a delivery's content; a syntax error raises TemplateError naming field and line."""
    compiled = CompiledContent(
        _subject=_compile(_TEXT_ENV, subject, "subject"),
        _html=_compile(_HTML_ENV, html, "html"),
        _text=_compile(_TEXT_ENV, text, "text"),
        has_html=bool(html.strip()),
        has_text=bool(text.strip()),
        variables=frozenset().union(*(
            meta.find_undeclared_variables(_TEXT_ENV.parse(source))
            for source in (subject, html, text))),
    )
    return compiled


def template_literals(source: str) -> Iterator[tuple[int, str]]:
    """(offset of its line, text) of each string constant inside `{{ }}` or `{% %}`."""
    try:
        tree = _TEXT_ENV.parse(source)
    except TemplateSyntaxError:
        return
    starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]
    for node in tree.find_all(nodes.Const):
        if isinstance(node.value, str):
            yield starts[min(node.lineno, len(starts)) - 1], node.value


def static_text(source: str) -> Iterator[tuple[int, str]]:
    """(offset in the source, text) of each stretch of literal text in a template's source."""
    offset = 0
    for _line, kind, value in _TEXT_ENV.lex(source):
        position = source.find(value, offset) if value else offset
        if position >= 0:
            offset = position
        if kind == "data":
            yield offset, value
        offset += len(value)


def recipient_context(recipient: Recipient, *, delivery_id: int, delivery_name: str,
                      links: dict[str, str] | None = None) -> dict[str, Any]:
    """The variables a template sees for one recipient (`links`: mirror_url, ...)."""
    values: dict[str, Any] = dict(recipient.fields)
    values.update(
        email=recipient.email,
        first_name=recipient.first_name,
        last_name=recipient.last_name,
        email_format=str(recipient.email_format),
    )
    return {
        "recipient": _Named("recipient", values),
        "delivery": _Named("delivery", {"id": delivery_id, "name": delivery_name}),
        **(links or {}),
    }
