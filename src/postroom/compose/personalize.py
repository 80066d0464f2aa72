"""Personalization: Jinja2's sandbox, strict about undefined variables, escaping HTML.

Templates see `recipient` (email, first_name, last_name, email_format and every custom field as
an attribute) and `delivery` (id, name). Compiling happens once per delivery; rendering is a
pure function of the compiled templates and the recipient.

Both are bounded (`template_limits`, ADR 0020): the sandbox folds no constant at compile time,
and each recipient's rendering runs against a budget of CPU time and output size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing, pass_context

from postroom.compose.segments import Segments, template_segments
from postroom.compose.template_limits import (
    Budget,
    TemplateLimits,
    bounded,
    current_budget,
    rendering,
)
from postroom.domain.models import Recipient
from postroom.errors import TemplateError, TemplateLimitError

__all__ = [
    "CompiledContent",
    "RenderedContent",
    "TemplateLimits",
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


_BOUNDED = "_postroom_bounded"  # the filter every for loop's iterable goes through


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` checked against the current budget before and after it runs.

    A context filter, so that Jinja never runs it at compile time (constant folding).
    """
    needs = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    what = f"the result of the filter {name!r}"

    @pass_context
    def guarded(context: Context, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            budget.filter(name, args, kwargs)
        if needs is None:
            result = func(*args, **kwargs)
        else:
            first = (context if needs == "context" else context.eval_ctx
                     if needs == "eval_context" else context.environment)
            result = func(first, *args, **kwargs)
        return result if budget is None else budget.result(result, what)

    return guarded


@pass_context
def _bounded_filter(context: Context, iterable: Any) -> Iterator[Any]:
    return bounded(iterable)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with a short way to read `recipient.x` and `delivery.x`,
    and bounded (ADR 0020): every operator is intercepted and every filter is a context
    filter, so nothing is computed at compile time; at render time, operators, calls,
    attribute reads, filters and each step of a for loop are checked against the budget.

    For a `_Named` and a name without a leading `_`, the sandbox's generic checks always pass
    (no such name is an attribute of the class or of `object`, so it reads a value; the name is
    not internal; `_Named` is none of the mutable types): the answer is the value, passed
    through `wrap_str_format` as the sandbox does, or undefined. Everything else goes the
    sandbox's own way.
    """

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}
        self.filters[_BOUNDED] = _bounded_filter

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _BOUNDED, [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget() or Budget(TemplateLimits())  # never folded at compile time
        budget.binop(operator, left, right)
        return budget.result(self.binop_table[operator](left, right),
                             f"the result of {operator!r}")

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            budget.tick()
        return self.unop_table[operator](arg)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            budget.call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return budget.result(result, "the result of a call") if budget is not None \
            else result

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
    limits: TemplateLimits = field(default_factory=TemplateLimits)
    # Subject, HTML and text as literal text and slots (`compose.segments`); None for a
    # template that does more than print recipient fields and links.
    segments: tuple[Segments | None, Segments | None, Segments | None] = (None, None, None)

    def render(self, context: dict[str, Any], *, who: str = "") -> RenderedContent:
        """Render for one recipient, within one budget of `limits` for the three fields;
        TemplateError (TemplateLimitError past a bound) names the field, the variable and
        `who`."""
        with rendering(Budget(self.limits)) as budget:
            return RenderedContent(
                subject=_render(self._subject, context, "subject", who, budget),
                html=_render(self._html, context, "html", who, budget) if self.has_html
                else "",
                text=_render(self._text, context, "text", who, budget) if self.has_text
                else "",
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

    def render(self, variables: dict[str, Any], budget: Budget | None = None) -> str:
        if budget is None:
            with rendering(Budget(TemplateLimits())) as fresh:
                return self.render(variables, fresh)
        environment = self._environment
        context = environment.context_class(
            environment, {**self._globals, **variables}, self._name, self._blocks,
            globals=self._globals)
        chunks: list[str] = []
        size = 0
        limit = budget.limits.max_output_chars
        for chunk in self._root(context):  # the checks inlined: this loop is the hot path
            size += len(chunk)
            if size > limit:
                budget.size(size, "the output")
            chunks.append(chunk)
            if len(chunks) % 64 == 0:
                budget.tick()
        result: str = environment.concat(chunks)
        return result


def _render(template: _Compiled, context: dict[str, Any], field: str, who: str,
            budget: Budget) -> str:
    try:
        result = template.render(context, budget)
    except TemplateLimitError as exc:
        where = f" for {who}" if who else ""
        raise TemplateLimitError(f"{field}: {exc}{where}", field=field) from None
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


def _compile(env: ImmutableSandboxedEnvironment, source: str, field: str,
             limits: TemplateLimits) -> tuple[_Compiled, set[str], Segments | None]:
    """The compiled template, the top-level names it uses and its segments (if it has)."""
    if len(source) > limits.max_source_chars:
        raise TemplateLimitError(
            f"{field}: the template is {len(source):,} characters long, more than "
            f"{limits.max_source_chars:,} (templates.max_source_chars)", field=field)
    try:
        _count_tokens(env, source, field, limits)
        tree = env.parse(source)
        names = meta.find_undeclared_variables(tree)  # before compiling, which optimizes it
        segments = template_segments(tree)
        return _Compiled(env.from_string(tree)), names, segments
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{field}, line {exc.lineno}: {exc.message}", field=field) from None
    except TemplateLimitError:
        raise
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # nesting too deep for the parser, a number literal too long for int(), ...
        raise TemplateError(f"{field}: cannot compile: {type(exc).__name__}: {exc}",
                            field=field) from None


def _count_tokens(env: ImmutableSandboxedEnvironment, source: str, field: str,
                  limits: TemplateLimits) -> None:
    """Refuse a source with more template tokens than `limits.max_template_tokens`; the
    lexer is lazy, so this stops reading at the limit."""
    tokens = 0
    for _line, kind, _value in env.lex(source):
        if kind not in ("data", "whitespace"):
            tokens += 1
            if tokens > limits.max_template_tokens:
                raise TemplateLimitError(
                    f"{field}: the template has more than {limits.max_template_tokens:,} "
                    "tokens inside {{ }} and {% %} (templates.max_template_tokens)",
                    field=field)


def compile_content(*, subject: str, html: str, text: str,
                    limits: TemplateLimits | None = None) -> CompiledContent:
    """Compile a delivery's content; a syntax error raises TemplateError naming field and line,
    a source past `limits.max_source_chars` TemplateLimitError."""
    limits = limits or TemplateLimits()
    compiled_subject, names_subject, subject_segments = _compile(_TEXT_ENV, subject, "subject",
                                                                 limits)
    compiled_html, names_html, html_segments = _compile(_HTML_ENV, html, "html", limits)
    compiled_text, names_text, text_segments = _compile(_TEXT_ENV, text, "text", limits)
    return CompiledContent(
        _subject=compiled_subject, _html=compiled_html, _text=compiled_text,
        has_html=bool(html.strip()), has_text=bool(text.strip()),
        variables=frozenset(names_subject | names_html | names_text),
        limits=limits,
        segments=(subject_segments, html_segments, text_segments),
    )


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
