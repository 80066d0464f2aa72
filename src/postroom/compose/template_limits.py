"""What one template may cost: the bounds on compiling and rendering it (ADR 0020).

Compiling costs time linear in the source, which is capped (`max_source_chars`): the sandbox
never folds a constant expression at compile time (every operator is intercepted and every
filter is a context filter), so `{{ 'a' * 10**9 }}` costs nothing until it is rendered, where
it is refused.

Rendering one recipient's message runs against a `Budget`: CPU time of the rendering thread
(`render_cpu_seconds`, checked on every loop step, call, attribute read, operator and output
chunk) and the size of what it produces (`max_output_chars` per field). The operations that can
make a value much larger than their inputs (repeating, padding, joining, replacing, formatting
with a width, big integers) are checked *before* they run, so memory stays within a small
multiple of `max_output_chars`; what they return is checked after.

This module is pure: no IO; the only clock is the thread's CPU time.
"""

from __future__ import annotations

import re
import string as _string
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from markupsafe import Markup
from pydantic import BaseModel, Field

from postroom.errors import TemplateLimitError

__all__ = ["Budget", "TemplateLimits", "bounded", "current_budget", "rendering"]

MAX_INT_BITS = 8192  # ~2,500 decimal digits: far beyond any number a message prints
_CHECK_EVERY = 64  # budget ticks between two reads of the CPU clock
_DIGITS = re.compile(r"\d+")
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_SIZE_FILTERS = frozenset({"center", "batch", "slice", "wordwrap"})  # a number sizes the result


class TemplateLimits(BaseModel):
    """Bounds on compiling and rendering templates (settings section `[templates]`)."""

    model_config = {"extra": "forbid", "frozen": True}

    max_source_chars: int = Field(
        2_000_000, ge=1_000, description="Longest subject, HTML or text source a template may "
        "have; longer ones are refused when compiled.")
    max_template_tokens: int = Field(
        20_000, ge=100, description="Most tokens (names, operators, literals, ...) inside "
        "{{ }}, {% %} and {# #} a subject, HTML or text source may have; compiling costs "
        "about 25 µs and a few KB per token.")
    max_output_chars: int = Field(
        5_000_000, ge=1_000, description="Longest subject, HTML or text a template may render "
        "for one recipient, and largest value any step of it may build.")
    render_cpu_seconds: float = Field(
        1.0, gt=0, le=3600, description="CPU seconds rendering one recipient's message may "
        "take; past it that recipient fails (analysis fails the delivery).")


class Budget:
    """The CPU time and sizes one rendering may still use."""

    __slots__ = ("_deadline", "_ticks", "limits")

    def __init__(self, limits: TemplateLimits):
        self.limits = limits
        self._deadline = time.thread_time() + limits.render_cpu_seconds
        self._ticks = 0

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % _CHECK_EVERY == 0 and time.thread_time() > self._deadline:
            raise TemplateLimitError(
                f"rendering took more than {self.limits.render_cpu_seconds:g} s of CPU "
                "(templates.render_cpu_seconds)")

    def size(self, size: int, what: str) -> None:
        """Refuse a value of `size` characters (or items) past the output limit."""
        if size > self.limits.max_output_chars:
            raise TemplateLimitError(
                f"{what} would be {size:,} characters long, more than "
                f"{self.limits.max_output_chars:,} (templates.max_output_chars)")

    def result(self, value: Any, what: str) -> Any:
        if type(value) is str or type(value) is Markup:  # the common case first
            if len(value) > self.limits.max_output_chars:
                self.size(len(value), what)
        elif isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
            self.size(len(value), what)
        elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"{what} is a number of more than {MAX_INT_BITS} bits")
        return value

    # -- checks before an operation runs ----------------------------------------------------

    def binop(self, operator: str, left: Any, right: Any) -> None:
        self.tick()
        what = f"the result of {operator!r}"
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if _is_sequence(seq) and isinstance(count, int):
                    self.size(len(seq) * max(count, 0), what)
            if _is_int(left) and _is_int(right):
                self._bits(left.bit_length() + right.bit_length(), what)
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            self._bits(max(left.bit_length() - 1, 0) * right, what)
        elif operator == "+" and _is_sequence(left) and _is_sequence(right):
            self.size(len(left) + len(right), what)
        elif operator == "%" and isinstance(left, (str, bytes)):
            self.printf(left, right, what)

    def printf(self, form: str | bytes, args: Any, what: str) -> None:
        """`form % args`: the widths and precisions of its conversions (`*` takes them from
        the arguments) count towards the size of the result."""
        text = form.decode("latin-1") if isinstance(form, bytes) else form
        specs = _PRINTF.findall(text)
        values = args.values() if isinstance(args, Mapping) else (
            args if isinstance(args, tuple) else (args,))
        stars = any("*" in (width, precision) for width, precision in specs)
        self._widths(text, [n for spec in specs for n in spec if n.isdigit()],
                     values if stars else (), what)

    def format(self, text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
               what: str) -> None:
        """`text.format(...)`: the widths and precisions of its fields count, and a field's
        nested `{}` takes them from the arguments."""
        specs = [spec for _, _, spec, _ in _string.Formatter().parse(text) if spec]
        nested = any("{" in spec for spec in specs)
        self._widths(text, [d for spec in specs for d in _DIGITS.findall(spec)],
                     (*args, *kwargs.values()) if nested else (), what)

    def _widths(self, text: str, digits: list[str], values: Iterable[Any], what: str) -> None:
        if any(len(d) > 9 for d in digits):
            raise TemplateLimitError(f"{what}: a width in the format is too large")
        total = sum(int(d) for d in digits)
        for value in values:
            if _is_int(value):
                self.size(abs(value), what)
                total += abs(value)
        self.size(len(text) + total, what)

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Before calling `func` from a template: refuse a str method that would be too big."""
        self.tick()
        if getattr(func, "__name__", "") == "generate_lorem_ipsum":  # the `lipsum` global
            given = dict(zip(("n", "html", "min", "max"), args, strict=False)) | kwargs
            paragraphs, words = given.get("n", 5), given.get("max", 100)
            if _is_int(paragraphs) and _is_int(words):
                self.size(paragraphs * words * 12, "the result of lipsum()")
        owner = getattr(func, "__self__", getattr(getattr(func, "__wrapped__", None),
                                                   "__self__", None))
        if not isinstance(owner, (str, bytes)):
            return
        name = getattr(func, "__name__", "")
        if isinstance(owner, str) and name in ("format", "format_map"):
            mapping = args[0] if name == "format_map" and args else kwargs
            self.format(owner, args if name == "format" else (),
                        mapping if isinstance(mapping, Mapping) else {}, f"the result of .{name}()")
            return
        what = f"the result of .{name}()"
        numbers = [v for v in (*args, *kwargs.values()) if _is_int(v)]
        if name in _WIDTH_METHODS:
            self.size(max([len(owner), *numbers]), what)
        elif name == "expandtabs":
            self.size(len(owner) * max([8, *numbers]), what)
        elif name == "join" and args:
            items = _sized(args[0], self)
            self.size(len(owner) * max(len(items) - 1, 0) + sum(_length(i) for i in items), what)
        elif name == "replace" and len(args) >= 2:
            self.replace(owner, args[0], args[1], what)
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max([_length(v) for v in args[0].values() if v is not None] or [1])
            self.size(len(owner) * longest, what)

    def replace(self, text: Any, old: Any, new: Any, what: str) -> None:
        if isinstance(text, (str, bytes)) and isinstance(old, type(text)) \
                and isinstance(new, type(text)):
            count = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
            self.size(len(text) + count * max(len(new) - len(old), 0), what)

    def filter(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Before a filter runs: refuse the arguments that would make its result too big."""
        self.tick()
        if len(args) < 2 and not kwargs:
            return  # nothing but the value: no filter makes it much larger
        what = f"the result of the filter {name!r}"
        if name in _SIZE_FILTERS:
            for number in (*args[1:], *kwargs.values()):
                if _is_int(number):
                    self.size(abs(number), what)
        value = args[0] if args else None
        if name == "format" and isinstance(value, str):
            self.printf(value, kwargs or args[1:], what)
        elif name == "replace" and len(args) >= 3:
            self.replace(value, args[1], args[2], what)
        elif name == "indent" and isinstance(value, str):
            width = args[1] if len(args) > 1 else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width if _is_int(width) else 0
            self.size(len(value) + pad * (value.count("\n") + 1), what)
        elif name == "join" and value is not None:
            items = _sized(value, self)
            glue = args[1] if len(args) > 1 else kwargs.get("d", "")
            self.size(_length(glue) * max(len(items) - 1, 0) + sum(_length(i) for i in items),
                      what)
        elif name == "sum":
            start = args[2] if len(args) > 2 else kwargs.get("start", 0)
            if not _is_int(start) and not isinstance(start, float):
                raise TemplateLimitError("the filter 'sum' only adds numbers in Postroom")

    def _bits(self, bits: int, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise TemplateLimitError(f"{what} would be a number of more than {MAX_INT_BITS} bits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else len(str(value)) \
        if _is_int(value) else 16


def _sized(value: Any, budget: Budget) -> list[Any] | tuple[Any, ...] | str:
    """A joined iterable as a sequence (a generator is drawn, one tick per item)."""
    if isinstance(value, (list, tuple, str)):
        return value
    items: list[Any] = []
    for item in value if isinstance(value, Iterable) else ():
        budget.tick()
        items.append(item)
        budget.size(len(items), "a joined sequence")
    return items


_BUDGET: ContextVar[Budget | None] = ContextVar("postroom_template_budget", default=None)


def current_budget() -> Budget | None:
    """The budget of the rendering under way in this thread or task, if any."""
    return _BUDGET.get()


@contextmanager
def rendering(budget: Budget) -> Iterator[Budget]:
    """Makes `budget` the current one for the duration of a `with` block."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def bounded(iterable: Iterable[Any]) -> Iterator[Any]:
    """A for loop's iterable, one budget tick per step."""
    budget = _BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.tick()
        yield item
