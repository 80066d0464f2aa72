"""Leave-one-family-out scoring of Postroom's bounce handling on the shared corpus.

Postroom's rules are written by hand, not fitted, so they cannot be re-derived per family.
What can be done is to take away, when a family is scored, everything that only that family's
mail could have suggested, and keep what other families' mail (or no sample at all) supports:

- Qualification: each rule's pattern is split into its top-level alternatives (its phrases).
  A phrase is *supported* by a corpus row when its rule decided that row with the shipped table
  and the phrase matches the row's text. When family F is scored, every phrase supported only
  by rows of F is removed (a rule left with no phrase is removed), then F is qualified with
  that table through the shipped `qualify_bounce`. Rules keyed only to an RFC 3463 status
  (the registry) and phrases no row uses are kept: no sample suggested them.
- Recipient extraction: a line/phrase pattern of the non-standard bounce reader
  (`_heuristics._RECIPIENT_LINES`, `_RECIPIENT_PHRASES`) is supported by the families that
  lose a found recipient when it alone is removed, and by the families in whose text it finds
  a labelled recipient; a pattern supported by F only is removed when F is scored.

Families are the corpus's engines, grouped where engines share one code base or vendor
(`VENDORS`), so that e.g. Sendmail is not scored with V5sendmail's phrases. Parser parts that
are not tables of phrases (the MIME and RFC 3464 reading, the bounce/auto-reply signals) are not
ablated: the report says so.
"""

from __future__ import annotations

import email
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from tests.corpus.scoring import Label, Prediction, Score, score

from postroom.bounces import _heuristics, default_rules, parse_bounce, qualify_bounce
from postroom.bounces._text import clean_address
from postroom.bounces.parse import _Context
from postroom.bounces.rules import MAX_QUALIFIED, Rule

__all__ = ["Holdout", "family_of", "holdout_scores", "split_alternatives"]

# Engines that share code or a vendor's mail system count as one family.
VENDORS = {
    "V5sendmail": "Sendmail",
    "Exchange2003": "Microsoft", "Exchange2007": "Microsoft", "Office365": "Microsoft",
    "Outlook": "Microsoft",
    "Gmail": "Google", "GSuite": "Google", "GoogleGroups": "Google",
    "YahooInc": "Yahoo", "Aol": "Yahoo",
    "ReceivingSES": "Amazon", "AmazonSES": "Amazon", "AmazonWorkMail": "Amazon",
    "Notes": "IBM", "Domino": "IBM",
    "EZweb": "KDDI",
}


def family_of(engine: str) -> str:
    return VENDORS.get(engine, engine)


def split_alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regular expression (`a|b(c|d)` → `a`, `b(c|d)`)."""
    parts, depth, start, index, in_class = [], 0, 0, 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1:index + 2] == "]":
                index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    parts.append(pattern[start:])
    return parts


@dataclass(frozen=True, slots=True)
class Holdout:
    """One family scored with what the other families support."""

    family: str
    engines: tuple[str, ...]
    score: Score
    removed_phrases: int
    removed_extractors: int
    files: tuple[Path, ...] = ()


def _rows_by_family(rows: dict[Path, list[Label]]) -> dict[str, dict[Path, list[Label]]]:
    families: dict[str, dict[Path, list[Label]]] = defaultdict(dict)
    for path, labels in rows.items():
        families[family_of(labels[0].engine)][path] = labels
    return dict(families)


def _phrase_support(rules: Sequence[Rule], rows: dict[Path, list[Label]]
                    ) -> dict[tuple[str, int], set[str]]:
    """(rule id, alternative index) → families of the rows it decided with the shipped table."""
    support: dict[tuple[str, int], set[str]] = defaultdict(set)
    by_id = {rule.id: rule for rule in rules}
    for path, labels in rows.items():
        family = family_of(labels[0].engine)
        for recipient, verdict in qualify_bounce(rules, parse_bounce(path.read_bytes())):
            rule = by_id.get(verdict.rule_id or "")
            if rule is None or rule.pattern is None:
                continue
            text = recipient.diagnostic[:MAX_QUALIFIED]
            for number, phrase in enumerate(split_alternatives(rule.pattern.pattern)):
                if re.search(phrase, text, rule.pattern.flags) is not None:
                    support[(rule.id, number)].add(family)
    return support


def _rules_without(rules: Sequence[Rule], family: str,
                   support: dict[tuple[str, int], set[str]]) -> tuple[tuple[Rule, ...], int]:
    kept_rules: list[Rule] = []
    removed = 0
    for rule in rules:
        if rule.pattern is None:
            kept_rules.append(rule)
            continue
        phrases = split_alternatives(rule.pattern.pattern)
        kept = [p for n, p in enumerate(phrases) if support.get((rule.id, n), set()) != {family}]
        removed += len(phrases) - len(kept)
        if kept:
            pattern = re.compile("|".join(kept), rule.pattern.flags)
            kept_rules.append(replace(rule, pattern=pattern))
    return tuple(kept_rules), removed


_EXTRACTORS = ("_RECIPIENT_LINES", "_RECIPIENT_PHRASES")


@contextmanager
def _without_extractors(dropped: Iterable[tuple[str, int]]) -> Iterator[None]:
    saved = {name: getattr(_heuristics, name) for name in _EXTRACTORS}
    gone = set(dropped)
    try:
        for name in _EXTRACTORS:
            setattr(_heuristics, name, tuple(p for n, p in enumerate(saved[name])
                                             if (name, n) not in gone))
        yield
    finally:
        for name, value in saved.items():
            setattr(_heuristics, name, value)


def _extracted(rows: dict[Path, list[Label]]) -> set[tuple[Path, int]]:
    found = set()
    for path, labels in rows.items():
        parsed = parse_bounce(path.read_bytes())
        addresses = {(r.recipient or "").lower() for r in parsed.recipients}
        found |= {(path, label.index) for label in labels if label.recipients & addresses}
    return found


def _matched(pattern: re.Pattern[str], name: str, text: str, wanted: set[str]) -> bool:
    """Whether an extractor, on the lines of a bounce's text, finds a labelled recipient."""
    for line in text.split("\n"):
        found = ([m] if (m := pattern.match(line)) else []) if name == "_RECIPIENT_LINES" \
            else list(pattern.finditer(line))
        if any(clean_address(m.group(1)).lower() in wanted for m in found):
            return True
    return False


def _extractor_support(rows: dict[Path, list[Label]]) -> dict[tuple[str, int], set[str]]:
    """Extractor → families whose mail supports it: the families that lose a found recipient
    when it alone is removed, and the families in whose text it finds a labelled recipient
    (so that two patterns that find the same rows do not shield each other)."""
    family = {path: family_of(labels[0].engine) for path, labels in rows.items()}
    baseline = _extracted(rows)
    texts = {path: _Context(email.message_from_bytes(path.read_bytes())).text for path in rows}
    support: dict[tuple[str, int], set[str]] = {}
    for name in _EXTRACTORS:
        for number, pattern in enumerate(getattr(_heuristics, name)):
            with _without_extractors([(name, number)]):
                lost = baseline - _extracted(rows)
            support[(name, number)] = {family[path] for path, _ in lost} | {
                family[path] for path, labels in rows.items()
                if _matched(pattern, name, texts[path], set().union(
                    *(label.recipients for label in labels)))}
    return support


def holdout_scores(rows: dict[Path, list[Label]]) -> list[Holdout]:
    """Every family of the corpus scored with the phrases the other families support."""
    rules = default_rules()
    phrases = _phrase_support(rules, rows)
    extractors = _extractor_support(rows)
    results = []
    for family, family_rows in sorted(_rows_by_family(rows).items()):
        table, removed = _rules_without(rules, family, phrases)
        dropped = [key for key, families in extractors.items() if families == {family}]

        def predict(data: bytes, table: tuple[Rule, ...] = table) -> list[Prediction]:
            return [Prediction(r.recipient, q.failure_type.value, int(q.reason))
                    for r, q in qualify_bounce(table, parse_bounce(data))]

        with _without_extractors(dropped):
            result = score(family_rows, predict)
        engines = sorted({labels[0].engine for labels in family_rows.values()})
        results.append(Holdout(family, tuple(engines), result, removed, len(dropped),
                               tuple(family_rows)))
    return results
