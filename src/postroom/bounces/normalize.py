"""`normalize_text`: one key for one kind of failure text, whoever and whenever it was about.

DESIGN.md §5: a text no rule matches is stored normalized, with an occurrence count, so that an
operator sees "this wording came 1,200 times" and writes one rule for it. Two bounces from the
same MTA about different users, queue ids, hosts and dates must therefore normalize to the same
string: addresses become `*`; numbers, ids, hex, queue ids, host names, dates, times and IPs
become `#xxx#`. SMTP reply codes (550) and enhanced status codes (5.1.1) are kept, because they
are what distinguishes one failure from another and what a rule would key on.
"""

from __future__ import annotations

import re

from postroom.bounces._text import ADDRESS

__all__ = ["MAX_NORMALIZED", "PLACEHOLDER", "normalize_text"]

PLACEHOLDER = "#xxx#"
MAX_NORMALIZED = 300  # characters; enough to tell texts apart, short enough to index
MAX_INPUT = 10_000  # characters read: the start of a text decides its kind

_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
_ZONE = r"(?:\s*(?:[+-]\d{4}|utc|gmt|z)\b)?(?:\s*\([a-z]{2,5}\))?"
_DATES = tuple(re.compile(p, re.I) for p in (
    # RFC 5322 and friends: "Thu, 29 Apr 2010 23:34:45 +0900 (JST)", "Apr 29, 2010 2:45 PM"
    rf"(?:{_DAY})?\d{{1,2}}\s+{_MONTH}\s+\d{{2,4}}(?:\s+{_TIME})?{_ZONE}",
    rf"(?:{_DAY})?{_MONTH}\s+\d{{1,2}},?\s+(?:{_TIME}\s+)?\d{{4}}(?:\s+{_TIME})?(?:\s*[ap]m)?"
    rf"{_ZONE}",
    # ISO 8601: "2024-06-24T08:58:06.389Z", "2016-04-29 23:34:45 +0900"
    rf"\d{{4}}[-/]\d{{1,2}}[-/]\d{{1,2}}(?:[t\s]+{_TIME})?(?:\s*(?:z|[+-]\d{{2}}:?\d{{2}}))?",
    rf"{_TIME}(?:\s*[ap]m)?",
))
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.I)
_HOST = re.compile(r"(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?\.)+[a-z]{2,24}\.?"
                   r"(?![\w@-])", re.I)
# SMTP reply codes and enhanced status codes survive normalization.
_KEEP = re.compile(r"(?<![\w.#-])(?:[245]\d\d(?=[\s-]|$)|[245]\.\d{1,3}\.\d{1,3}(?![\w.]*\d))")
# Any other token that carries a digit is a number or an id (queue ids, hex, base64...).
_TOKEN = re.compile(r"[\w+/=.:-]+")
_DIGIT = re.compile(r"\d")
_PARK, _PARK_SIZE = 0xE000, 0x1000  # private-use code points
_P = re.escape(PLACEHOLDER)
# Several ids in a row ("mx.example.net [192.0.2.1]", a list of hops) count as one.
_RUN = re.compile(rf"[\[(<]?{_P}[\])>]?(?:[\s,;:/-]*[\[(<]?{_P}[\])>]?)+")


def normalize_text(text: str) -> str:
    """The normalized form of a failure text (see module docstring). Never raises."""
    text = ADDRESS.sub("*", (text or "")[:MAX_INPUT])
    for pattern in _DATES:
        text = pattern.sub(PLACEHOLDER, text)
    text = _IPV4.sub(PLACEHOLDER, text)
    text = _IPV6.sub(PLACEHOLDER, text)
    text = _HOST.sub(PLACEHOLDER, text)
    # Codes to keep are parked on private-use characters while every other digit-bearing
    # token is replaced, then put back.
    text = text.translate({code: None for code in range(_PARK, _PARK + _PARK_SIZE)})
    kept: list[str] = []

    def park(match: re.Match[str]) -> str:
        if len(kept) >= _PARK_SIZE:
            return PLACEHOLDER
        kept.append(match.group(0))
        return chr(_PARK + len(kept) - 1)

    text = _KEEP.sub(park, text)
    text = _TOKEN.sub(lambda m: PLACEHOLDER if _DIGIT.search(m.group(0)) else m.group(0), text)
    text = "".join(kept[ord(c) - _PARK] if _PARK <= ord(c) < _PARK + len(kept) else c
                   for c in text)
    text = _RUN.sub(PLACEHOLDER, text)
    text = " ".join(text.split()).lower()
    if len(text) > MAX_NORMALIZED:
        cut = text.rfind(" ", 0, MAX_NORMALIZED)
        text = text[: cut if cut > MAX_NORMALIZED // 2 else MAX_NORMALIZED]
    return text
