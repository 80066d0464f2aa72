"""Bounce parsing accuracy: Postroom against flufl.bounce (GNU Mailman's bounce library).

    python bench/bounces.py [--no-write]

Scores, on the repo's labelled samples (tests/corpus) and on the shared corpus
(../shared/bounce-corpus or $POSTROOM_BOUNCE_CORPUS, when present):

- recipient extraction: per labelled row with a recipient, the recipient (or an alternative)
  is among the addresses found, case-insensitive;
- failure-type agreement: per labelled row, the predicted type equals `postroom_type`;
- leave-one-family-out on the shared corpus (bench/bounce_holdout.py): each MTA family scored
  with only the phrases and recipient patterns the *other* families' mail supports, per family
  and overall, with the confusion matrix of types.

flufl.bounce reports addresses as permanent (→ hard) or temporary (→ soft) failures and has no
other types. It is optional: install it with `pip install flufl.bounce`; without it only
Postroom is scored and the report says so. Prints a table and rewrites the section
"## Bounce parsing accuracy" of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import importlib.metadata
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "bench")]

from bounce_holdout import Holdout, holdout_scores  # noqa: E402 - after the path set-up
from results_file import RESULTS, replace_section  # noqa: E402 - after the path set-up
from tests.corpus.scoring import (  # noqa: E402 - after the path set-up above
    REPO_CORPUS,
    Prediction,
    Score,
    postroom_predict,
    read_labels,
    score,
    shared_corpus,
)

SECTION = "## Bounce parsing accuracy"
Predict = Callable[[bytes], Iterable[Prediction]]


def flufl_predictor() -> tuple[Predict | None, str]:
    """flufl.bounce's verdicts as predictions, and its version (or why it is missing)."""
    try:
        from flufl.bounce import all_failures
    except ImportError:
        return None, "not installed (pip install flufl.bounce)"

    def predict(data: bytes) -> list[Prediction]:
        temporary, permanent = all_failures(email.message_from_bytes(data))

        def text(address: bytes | str) -> str:
            return address.decode("utf-8", "replace") if isinstance(address, bytes) else address

        found = [Prediction(text(a), "hard") for a in sorted(permanent)]
        found += [Prediction(text(a), "soft") for a in sorted(temporary)
                  if a not in permanent]
        return found

    return predict, importlib.metadata.version("flufl.bounce")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(results: list[tuple[str, Score, Score | None]]) -> list[str]:
    lines = [
        "| corpus | files | rows | Postroom extraction | Postroom type | Postroom reason "
        "| flufl.bounce extraction | flufl.bounce type |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ours, theirs in results:
        flufl = (f"{_pct(theirs.extraction)} ({theirs.extracted}/{theirs.extraction_rows}) | "
                 f"{_pct(theirs.type_agreement)} ({theirs.type_agreed}/{theirs.rows})"
                 if theirs is not None else "n/a | n/a")
        lines.append(
            f"| {name} | {ours.files} | {ours.rows} "
            f"| {_pct(ours.extraction)} ({ours.extracted}/{ours.extraction_rows}) "
            f"| {_pct(ours.type_agreement)} ({ours.type_agreed}/{ours.rows}) "
            f"| {_pct(ours.reason_agreement)} ({ours.reason_agreed}/{ours.rows}) | {flufl} |")
    return lines


def _machine() -> str:
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        uname = platform.platform()
    return uname or platform.platform()


def _failure_lines(results: list[tuple[str, Score, Score | None]]) -> list[str]:
    lines = []
    for name, ours, theirs in results:
        flufl = (f", flufl.bounce {_pct(theirs.failure_agreement)}" if theirs is not None
                 else "")
        lines.append(f"- {name}, on the {ours.failure_rows} rows labelled hard or soft only: "
                     f"Postroom {_pct(ours.failure_agreement)}{flufl}")
    return lines


TYPES = ("hard", "soft", "ignored", "undefined")


def _holdout_total(holdouts: list[Holdout]) -> Score:
    total = Score()
    for item in holdouts:
        part = item.score
        total.files += part.files
        total.rows += part.rows
        total.extraction_rows += part.extraction_rows
        total.extracted += part.extracted
        total.type_agreed += part.type_agreed
        total.reason_agreed += part.reason_agreed
        total.confusion.update(part.confusion)
        total.misses += part.misses
    return total


def _holdout_lines(holdouts: list[Holdout], flufl: dict[str, Score] | None) -> list[str]:
    """Per-family and overall held-out figures, flufl.bounce on the same rows."""
    lines = [
        "| family (engines) | rows | phrases removed | extractors removed | recipient | type "
        "| reason | flufl.bounce recipient | flufl.bounce type |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = _holdout_total(holdouts)
    for item in [*holdouts, Holdout("**all families**", (), total, 0, 0)]:
        ours = item.score
        theirs = flufl.get(item.family) if flufl is not None else None
        if flufl is not None and not item.engines:
            theirs = _holdout_total([Holdout(f, (), s, 0, 0) for f, s in flufl.items()])
        peer = (f"{_pct(theirs.extraction)} | {_pct(theirs.type_agreement)}"
                if theirs is not None else "n/a | n/a")
        name = item.family + (f" ({', '.join(item.engines)})"
                              if item.engines and item.engines != (item.family,) else "")
        removed = (f"{item.removed_phrases} | {item.removed_extractors}" if item.engines
                   else "| ")
        lines.append(
            f"| {name} | {ours.rows} | {removed} "
            f"| {_pct(ours.extraction)} ({ours.extracted}/{ours.extraction_rows}) "
            f"| {_pct(ours.type_agreement)} ({ours.type_agreed}/{ours.rows}) "
            f"| {_pct(ours.reason_agreement)} ({ours.reason_agreed}/{ours.rows}) | {peer} |")
    return lines


def _confusion_lines(score_: Score) -> list[str]:
    predicted = [*TYPES, "nothing"]
    lines = ["| labelled \\ predicted | " + " | ".join(predicted) + " |",
             "|---|" + "---:|" * len(predicted)]
    for wanted in TYPES:
        cells = " | ".join(str(score_.confusion.get((wanted, got), 0)) for got in predicted)
        lines.append(f"| {wanted} | {cells} |")
    return lines


def _holdout_section(holdouts: list[Holdout], flufl: dict[str, Score] | None) -> list[str]:
    total = _holdout_total(holdouts)
    return [
        "### Leave-one-family-out (shared corpus)",
        "",
        "Postroom's rules are hand-written, not fitted, so they cannot be re-derived per family.",
        "Instead, when a family is scored, every rule phrase (a top-level alternative of a rule's",
        "pattern) that decided rows of that family only, and every recipient pattern of the",
        "non-standard bounce reader supported by that family only (the families that lose a",
        "row when it alone is removed, and those in whose text it finds a labelled recipient),",
        "is taken out;",
        "the family is then parsed and qualified through the shipped `parse_bounce` and",
        "`qualify_bounce` with what is left. Rules keyed only to an RFC 3463 status and phrases",
        "no row uses stay (no sample suggested them). Not ablated: the MIME/RFC 3464 reading and",
        "the bounce/auto-reply signals. Families group engines of one code base or vendor",
        "(bench/bounce_holdout.py `VENDORS`). flufl.bounce derives nothing from the corpus: its",
        "columns are its plain scores on the same rows. A bounce that no rule left explains is",
        "soft with reason 0 (ADR 0028), in the held-out scoring as in the shipped code.",
        "",
        *_holdout_lines(holdouts, flufl),
        "",
        f"Issue 15's targets, held out: type agreement >= 93% (measured "
        f"{_pct(total.type_agreement)}: {'met' if total.type_agreement >= 0.93 else 'not met'}),"
        f" recipient extraction >= 98% (measured {_pct(total.extraction)}: "
        f"{'met' if total.extraction >= 0.98 else 'not met'}).",
        "",
        "Confusion matrix of types, all families held out (rows: label, columns: Postroom):",
        "",
        *_confusion_lines(total),
        "",
        "Held-out rows where Postroom disagrees with the labels:",
        "",
        *[f"- {miss}" for miss in total.misses],
        "",
    ]


def _section(results: list[tuple[str, Score, Score | None]], flufl_version: str,
             holdout: list[str]) -> str:
    ours_version = importlib.metadata.version("postroom")
    misses = [f"- {name}: {miss}" for name, ours, _ in results for miss in ours.misses]
    lines = [
        SECTION,
        "",
        f"Measured {dt.date.today().isoformat()} by `python bench/bounces.py`.",
        "",
        f"- machine: `{_machine()}`",
        f"- python: {platform.python_version()} ({platform.python_implementation()})",
        f"- postroom: {ours_version}; flufl.bounce: {flufl_version}",
        "",
        *_table(results),
        "",
        "Type agreement where flufl.bounce can have an opinion:",
        "",
        *_failure_lines(results),
        "",
        "Extraction: per labelled row with a recipient, the recipient (or one of its",
        "`recipient_alt`) is among the addresses found, case-insensitive. Type: per labelled",
        "row, the predicted failure type equals `postroom_type` (flufl.bounce: permanent → hard,",
        "temporary → soft; it has no ignored/undefined). Reason: the predicted reason code",
        "equals `postroom_reason` (Postroom only). The shared corpus is read in place, never",
        "copied into the repository.",
        "",
        "Rows where Postroom disagrees with the labels:",
        "",
        *(misses or ["- none"]),
        "",
        *holdout,
    ]
    return "\n".join(lines)


def write_results(section: str) -> None:
    """Replace (or add) this benchmark's section in RESULTS.md, keeping the others."""
    replace_section(SECTION, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    flufl, flufl_version = flufl_predictor()
    corpora = [("repo samples (tests/corpus)", read_labels(REPO_CORPUS))]
    shared = shared_corpus()
    if shared is not None:
        corpora.append(("shared corpus (bounce-corpus)",
                        read_labels(shared, shared / "labels.tsv")))
    else:
        print("shared corpus not found: ../shared/bounce-corpus or $POSTROOM_BOUNCE_CORPUS")
    if flufl is None:
        print(f"flufl.bounce {flufl_version}: scoring Postroom only")
    results = [(name, score(rows, postroom_predict),
                score(rows, flufl) if flufl is not None else None)
               for name, rows in corpora]
    print("\n".join(_table(results)))
    print("\n".join(_failure_lines(results)))
    holdout: list[str] = []
    if shared is not None:
        rows = corpora[-1][1]
        holdouts = holdout_scores(rows)
        peer = ({item.family: score({p: rows[p] for p in item.files}, flufl)
                 for item in holdouts} if flufl is not None else None)
        holdout = _holdout_section(holdouts, peer)
        print("\n".join(holdout[:holdout.index("Held-out rows where Postroom disagrees "
                                                 "with the labels:")]))
    if not args.no_write and flufl is None:
        print("not writing bench/RESULTS.md: its table compares with flufl.bounce "
              "(pip install -e '.[bench]'); --no-write prints Postroom's scores alone")
        return 2
    if not args.no_write:
        write_results(_section(results, flufl_version, holdout))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
