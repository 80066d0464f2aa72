"""Scoring a bounce parser against a labelled corpus (shared by the tests and bench/bounces.py).

A corpus is a folder with a `labels.tsv` in the format of the shared bounce corpus (see its
README): one row per expected recipient result, with the file path relative to the folder.
Per labelled row:

- *extraction*: the row's recipient, or one of its `recipient_alt`, is among the recipients the
  parser found (case-insensitive). Rows without a recipient do not count here.
- *type agreement*: the failure type predicted for the row equals `postroom_type`. The
  prediction for a row is the one for its address, else the one at the row's position.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from postroom.bounces import default_rules, parse_bounce, qualify_bounce

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_CORPUS = REPO_ROOT / "tests" / "corpus"


@dataclass(frozen=True, slots=True)
class Label:
    file: str
    index: int
    recipients: frozenset[str]  # lower-cased recipient and alternatives; empty: none given
    failure_type: str
    reason: int
    engine: str = ""  # the MTA or provider that wrote the bounce (the corpus's `engine`)


@dataclass(frozen=True, slots=True)
class Prediction:
    address: str | None
    failure_type: str
    reason: int | None = None


@dataclass(slots=True)
class Score:
    files: int = 0
    rows: int = 0
    extraction_rows: int = 0
    extracted: int = 0
    type_agreed: int = 0
    reason_agreed: int = 0
    failure_rows: int = 0  # rows labelled hard or soft
    failure_agreed: int = 0
    errors: int = 0  # files on which the parser raised
    misses: list[str] = field(default_factory=list)
    # (labelled type, predicted type or "nothing") -> rows: the confusion matrix of types
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def extraction(self) -> float:
        return self.extracted / self.extraction_rows if self.extraction_rows else 1.0

    @property
    def type_agreement(self) -> float:
        return self.type_agreed / self.rows if self.rows else 1.0

    @property
    def failure_agreement(self) -> float:
        """Type agreement on the rows labelled hard or soft (what flufl.bounce can say)."""
        return self.failure_agreed / self.failure_rows if self.failure_rows else 1.0

    @property
    def reason_agreement(self) -> float:
        return self.reason_agreed / self.rows if self.rows else 1.0


def shared_corpus() -> Path | None:
    """The shared labelled corpus: $POSTROOM_BOUNCE_CORPUS, else ../shared/bounce-corpus
    next to the repository; None when absent."""
    given = os.environ.get("POSTROOM_BOUNCE_CORPUS")
    folder = Path(given) if given else REPO_ROOT.parent / "shared" / "bounce-corpus"
    return folder if (folder / "labels.tsv").is_file() else None


def label_files(corpus: Path) -> list[Path]:
    """Every labels.tsv of a corpus folder (the repo's corpus keeps one per sub-folder)."""
    return sorted(corpus.rglob("labels.tsv"))


def read_labels(corpus: Path, labels: Path | None = None) -> dict[Path, list[Label]]:
    """Labelled rows by email file; paths are relative to the corpus folder."""
    rows: dict[Path, list[Label]] = {}
    for path in [labels] if labels is not None else label_files(corpus):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                names = [row["recipient"], *row["recipient_alt"].split(",")]
                email = corpus / row["file"]
                if not email.is_file():
                    email = path.parent / row["file"]
                rows.setdefault(email, []).append(Label(
                    row["file"], int(row["index"]),
                    frozenset(n.strip().lower() for n in names if n.strip()),
                    row["postroom_type"], int(row["postroom_reason"]), row.get("engine", "")))
    return rows


def postroom_predict(data: bytes) -> list[Prediction]:
    """Postroom's verdicts for one bounce, one per recipient found."""
    parsed = parse_bounce(data)
    return [Prediction(r.recipient, q.failure_type.value, int(q.reason))
            for r, q in qualify_bounce(default_rules(), parsed)]


def _for_row(label: Label, predictions: list[Prediction]) -> Prediction | None:
    for prediction in predictions:
        if (prediction.address or "").lower() in label.recipients:
            return prediction
    if 0 < label.index <= len(predictions):
        return predictions[label.index - 1]
    return predictions[0] if predictions and not label.recipients else None


def score(rows: dict[Path, list[Label]],
          predict: Callable[[bytes], Iterable[Prediction]]) -> Score:
    """Score one parser on labelled rows."""
    result = Score()
    for email, labels in sorted(rows.items()):
        result.files += 1
        try:
            predictions = list(predict(email.read_bytes()))
        except Exception:  # a crashing parser scores nothing on that file
            predictions = []
            result.errors += 1
        found = {(p.address or "").lower() for p in predictions}
        for label in labels:
            result.rows += 1
            if label.recipients:
                result.extraction_rows += 1
                if label.recipients & found:
                    result.extracted += 1
                else:
                    result.misses.append(f"{label.file}#{label.index}: recipient not found")
            prediction = _for_row(label, predictions)
            agreed = prediction is not None and prediction.failure_type == label.failure_type
            result.confusion[(label.failure_type,
                              prediction.failure_type if prediction else "nothing")] += 1
            if label.failure_type in ("hard", "soft"):
                result.failure_rows += 1
                result.failure_agreed += agreed
            if agreed:
                result.type_agreed += 1
            else:
                got = prediction.failure_type if prediction else "nothing"
                result.misses.append(
                    f"{label.file}#{label.index}: type {got}, want {label.failure_type}")
            if prediction is not None and prediction.reason == label.reason:
                result.reason_agreed += 1
    return result
