"""HTML helpers: CSS inlining (css-inline) and the text version of HTML (inscriptis)."""

from __future__ import annotations

import css_inline
from inscriptis import get_text
from inscriptis.model.config import ParserConfig

__all__ = ["html_to_text", "inline_css"]

_TEXT_CONFIG = ParserConfig(display_links=True)
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def html_to_text(html: str) -> str:
    """A readable text version of HTML: headings, lists and tables kept, links with their URL."""
    text: str = get_text(html, _TEXT_CONFIG)
    return text.strip() + "\n"


def inline_css(html: str) -> str:
    """Move <style> rules into style attributes (what most mail clients need).

    HTML without a <style> element is returned unchanged, byte for byte.
    """
    if "<style" not in html.lower():
        return html
    inlined: str = _INLINER.inline(html)
    return inlined
