"""A template as literal text and the values it prints, when that is all it does.

Most delivery templates are text with `{{ recipient.field }}` (and the `mirror_url` and
`unsubscribe_url` links) in it: no filter, test, loop or condition. What Jinja renders for such a
template is the literal text (as the lexer gives it: line ends already normalized to LF) with
each value in its place, `str(value)` in text and `markupsafe.escape(value)` in HTML, when the
value is a `str`. `template_segments` finds out from the parsed template whether that is the
case; the compiled message path (`compose.compiled`) renders such templates without Jinja.
"""

from __future__ import annotations

from typing import NamedTuple

from jinja2 import nodes

__all__ = ["LINK_NAMES", "Segments", "Slot", "template_segments"]

LINK_NAMES = frozenset({"mirror_url", "unsubscribe_url"})


class Slot(NamedTuple):
    """A value the template prints: `recipient.<name>`, or a link (`namespace` empty)."""

    namespace: str
    name: str


Segments = tuple[str | Slot, ...]  # literal text (adjacent pieces merged) and slots, in order


def template_segments(tree: nodes.Template) -> Segments | None:
    """The template as segments, or None when it does anything but print literal text, recipient
    fields (`recipient.x`, x not starting with `_`) and the links."""
    segments: list[str | Slot] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            piece = _piece(node)
            if piece is None:
                return None
            if isinstance(piece, str):
                if not piece:
                    continue
                if segments and isinstance(segments[-1], str):
                    segments[-1] += piece
                    continue
            segments.append(piece)
    return tuple(segments)


def _piece(node: nodes.Node) -> str | Slot | None:
    if type(node) is nodes.TemplateData:
        return str(node.data)
    if type(node) is nodes.Name and node.ctx == "load" and node.name in LINK_NAMES:
        return Slot("", node.name)
    if (type(node) is nodes.Getattr and node.ctx == "load" and type(node.node) is nodes.Name
            and node.node.name == "recipient" and node.node.ctx == "load"
            and not node.attr.startswith("_")):
        return Slot("recipient", node.attr)
    return None
