"""Which targets provably get a message, without building it (analysis, DESIGN.md §3).

Analysis must know for each target whether its message can be built: every personalization
variable resolves, the personalized content fits the charset, nothing in the pipeline raises.
Building the message (`Plan.render`) answers that, at about a millisecond per recipient. This
module answers it from the recipient's values where the content allows a proof, and says
"render it" everywhere else, so analysis gives exactly the logs a full render gives.

**Simple content.** Subject, HTML and text are each only literal text and outputs of
`recipient.NAME` or `recipient["NAME"]` (NAME not starting with `_`), `delivery.id`,
`delivery.name`, `mirror_url` and `unsubscribe_url`: no filter, test, condition, loop,
assignment, call, literal or other expression. Anything else (a `{% if %}` over recipient
data, `|upper`, `recipient.x[0]`, ...) can raise or change characters in ways values alone
do not predict: `screen()` returns None and analysis renders every recipient in full.
Two more cases fall back for the same reason, because whether a step runs or what it makes of
the HTML could depend on a value: an output right after a literal `<`, `<s`, ... or `<styl`,
whose value could complete `<style` and switch CSS inlining on; and, for a charset other than
UTF-8, an output right after a literal `&` and letters, digits or `#`, whose value could
complete a character reference that CSS inlining or the text generated from the HTML decodes.

**Plain recipients.** For simple content a recipient is plain when its address matches
`plain_address` (a form email-validator accepts; printable ASCII, which every supported charset
encodes, so no SMTPUTF8) and first_name, last_name and every custom field the content uses
(`email_format` is ASCII) are present, of type `str`, printable (`str.isprintable`: no
control, format, surrogate, private-use, unassigned or separator character other than the
space) and encodable in the delivery's charset. Every other recipient is rendered in full.

**Claim.** Two plain recipients with the same shape (their `email_format` when the delivery's
format is `recipient`; whether every value the text uses is blank, when the text's literal
text is blank) both build or both fail. Analysis therefore renders the first plain recipient
of each shape in full, and its success stands for the others of that shape. Why, step by step
through `Plan.render` with log id 0 (links, Message-ID, VERP sender: the same for everyone):

- `wire_address`: the pattern only matches addresses email-validator accepts, ASCII.
- personalization: each output is a name present in the context with a `str` value, which
  Jinja's sandbox returns as is (no `_` name, no unsafe attribute); the result is the literal
  text with the values (HTML-escaped in the HTML) and the constants in between.
- which parts are built (`parts_for`) depends on the format and the shape's `email_format`;
  whether the text part is generated from the HTML depends on the shape's blankness.
- CSS inlining runs or not for everyone alike (`<style` is literal, or absent and not
  completable: an escaped value never holds `<`). It and the text generated from HTML
  (css-inline, inscriptis/lxml) parse leniently; values reach them only as escaped, printable
  character data, so they see the same markup for every recipient of a shape and raise for
  all or none.
- encoding: a charset fails on a character, never on a combination. Every character of a
  header, a part or the mirror page is literal (or a constant, or markup decoded from
  literals: the same for the shape's first recipient, which encoded them), or comes from a
  value (encodable by the check above; entities across values excluded above). UTF-8 fails
  only on surrogates, which neither printable values nor the HTML parsers produce. Headers
  come out ASCII (encoded words for other text, an ASCII address), as for the first one.

The argument follows the rendering code as it is; tests/unit/test_analysis_equivalence.py holds
analysis to the logs of a full render on random audiences and contents, so that a change that
makes a message depend on recipient data in a new way shows there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import email_validator
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from postroom.compose.charsets import Charset
from postroom.delivery.plan import Plan
from postroom.domain.models import EmailFormat
from postroom.domain.properties import MessageFormat

__all__ = ["Screen", "plain_address", "screen"]

# Parses like compose.personalize's environments (same syntax options); a test keeps them equal.
_PARSER = ImmutableSandboxedEnvironment(keep_trailing_newline=True)

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOP = r"(?:[a-z0-9][a-z0-9-]{0,61})?[a-z]"  # a top-level label ends in a letter
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_DOMAIN = re.compile(rf"(?!.*--)(?:{_LABEL}\.)+{_TOP}")
_BUILTIN = frozenset({"email", "first_name", "last_name", "email_format"})
_CONSTANTS = frozenset({"mirror_url", "unsubscribe_url"})
_DELIVERY = frozenset({"id", "name"})
_HOLE = "\0"  # stands for an output in a template's literal skeleton
_ONE_SHAPE = (None, False)  # when the format and the text cannot tell plain recipients apart


def plain_address(address: str, domains: dict[str, bool] | None = None) -> bool:
    """Whether `address` is a plain ASCII address that email-validator certainly accepts.

    A dot-atom local part of at most 64 characters; after the @, lower-case LDH labels, no
    `--`, a top-level label that ends in a letter, no special-use name; at most 254 characters
    in all. False says nothing: validate it. `domains` keeps the verdicts on domains (an
    audience has few of them).
    """
    local, _, domain = address.rpartition("@")
    plain = None if domains is None else domains.get(domain)
    if plain is None:
        plain = _DOMAIN.fullmatch(domain) is not None and not any(
            domain == name or domain.endswith("." + name)  # read each time: it may change
            for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
        if domains is not None and len(domains) < 100_000:
            domains[domain] = plain
    return (plain and len(address) <= 254 and len(local) <= 64
            and _LOCAL.fullmatch(local) is not None)


@dataclass(frozen=True, slots=True)
class _Template:
    names: tuple[str, ...]  # the recipient names it outputs
    skeleton: str  # its literal text, _HOLE for each output


def _output(node: nodes.Node) -> str | None:
    """The recipient name an output shows, "" for a constant, None for anything else."""
    if isinstance(node, nodes.Name):
        return "" if node.name in _CONSTANTS else None
    if isinstance(node, nodes.Getattr):
        owner, name = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        owner, name = node.node, node.arg.value
    else:
        return None
    if not (isinstance(owner, nodes.Name) and isinstance(name, str)) or name.startswith("_"):
        return None
    if owner.name == "recipient":
        return name
    return "" if owner.name == "delivery" and name in _DELIVERY else None


def _simple(source: str) -> _Template | None:
    """The template's names and skeleton, or None when it is not simple content."""
    try:
        tree = _PARSER.parse(source)
    except TemplateSyntaxError:
        return None
    names: list[str] = []
    skeleton: list[str] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                skeleton.append(node.data)
                continue
            name = _output(node)
            if name is None:
                return None
            if name:
                names.append(name)
            skeleton.append(_HOLE)
    return _Template(tuple(names), "".join(skeleton))


def _style_completable(skeleton: str) -> bool:
    """Whether an output could complete `<style` begun by a literal `<`, `<s`, ... `<styl`
    (an escaped value never holds `<`, so a literal one starts any `<style`)."""
    text = skeleton.lower()
    index = text.find("<")
    while index >= 0:
        for offset, letter in enumerate("style", index + 1):
            if offset >= len(text) or text[offset] != letter:
                if offset < len(text) and text[offset] == _HOLE:
                    return True
                break
        index = text.find("<", index + 1)
    return False


def _entity_completable(skeleton: str) -> bool:
    """Whether an output could continue a character reference begun by a literal `&`."""
    index = skeleton.find("&")
    while index >= 0:
        end = index + 1
        while end < len(skeleton) and (skeleton[end] == "#" or (
                skeleton[end].isascii() and skeleton[end].isalnum())):
            end += 1
        if end < len(skeleton) and skeleton[end] == _HOLE:
            return True
        index = skeleton.find("&", index + 1)
    return False


def _fits(charset: Charset) -> Callable[[str], bool]:
    """The test of the values a message carries (see the module docstring): printable, and
    encodable in the charset. Both are properties of each character, so one call tests the
    concatenation of all a recipient's values."""
    if charset.is_utf8:
        return str.isprintable  # no surrogate is printable
    codec = charset.codec

    def fits(text: str) -> bool:
        if not text.isprintable():
            return False
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            return False
        return True

    return fits


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """fields → the values of `names`, as a tuple (KeyError when one is missing)."""
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        return lambda fields: (fields[names[0]],)
    return lambda fields: ()


Shape = Callable[[str, str, str, EmailFormat, Mapping[str, Any]], Hashable | None]


@dataclass(frozen=True)
class Screen:
    """The shape test of one delivery's simple content (see the module docstring).

    `shape(email, first_name, last_name, email_format, fields)` is the recipient's shape, or
    None when it is not plain (render it in full); the caller has checked
    `plain_address(email)`.
    """

    custom: tuple[str, ...]  # the custom fields the content uses
    shape: Shape


def _shape(*, fits: Callable[[str], bool], custom: tuple[str, ...], per_format: bool,
           text_names: tuple[str, ...] | None) -> Shape:
    """The shape function (a closure: it runs for a million recipients). `per_format`: the
    parts follow email_format; `text_names`: the recipient names in the text, when its
    literal text is blank (None when it is not)."""
    values_of = _getter(custom)

    def shape(email: str, first_name: str, last_name: str, email_format: EmailFormat,
              fields: Mapping[str, Any]) -> Hashable | None:
        try:
            values = values_of(fields)
        except KeyError:
            return None
        for value in values:
            if type(value) is not str:
                return None
        if type(first_name) is not str or type(last_name) is not str:
            return None
        if not fits(first_name + last_name + "".join(values)):  # the address: plain ASCII
            return None
        if not per_format and text_names is None:
            return _ONE_SHAPE
        blank = text_names is not None and all(
            not (email if name == "email" else first_name if name == "first_name"
                 else last_name if name == "last_name" else str(email_format)
                 if name == "email_format" else fields[name]).strip()
            for name in text_names)
        return (email_format if per_format else None, blank)

    return shape


def screen(plan: Plan) -> Screen | None:
    """The shape test for the delivery's content, or None when it is not simple content."""
    props, content = plan.props, plan.content
    subject, html, text = (_simple(props.subject), _simple(props.html), _simple(props.text))
    if subject is None or html is None or text is None:
        return None
    if content.has_html and props.inline_css and _style_completable(html.skeleton):
        return None
    if content.has_html and not plan.charset.is_utf8 and _entity_completable(html.skeleton):
        return None
    used = {name for template in (subject, html, text) for name in template.names}
    custom = tuple(sorted(used - _BUILTIN))
    blank_text_possible = content.has_text and not text.skeleton.replace(_HOLE, "").strip()
    return Screen(custom, _shape(
        fits=_fits(plan.charset), custom=custom, per_format=props.format is MessageFormat.RECIPIENT,
        text_names=text.names if blank_text_possible else None))
