"""Bounce parsing accuracy: Postroom against flufl.bounce (GNU Mailman's bounce library).

    python bench/bounces.py [--no-write]

Scores, on the repo's labelled samples (tests/corpus) and on the shared corpus
(../shared/bounce-corpus or $POSTROOM_BOUNCE_CORPUS, when present):

- recipient extraction: per labelled row with a recipient, the recipient (or an alternative)
  is among the addresses found, case-insensitive;
- failure-type agreement: per labelled row, the predicted type equals `postroom_type`.

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


def _section(results: list[tuple[str, Score, Score | None]], flufl_version: str) -> str:
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
    if not args.no_write and flufl is None:
        print("not writing bench/RESULTS.md: its table compares with flufl.bounce "
              "(pip install -e '.[bench]'); --no-write prints Postroom's scores alone")
        return 2
    if not args.no_write:
        write_results(_section(results, flufl_version))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
