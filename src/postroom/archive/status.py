"""Per-sink figures of the archive copies, for `archive status` and the delivery report.

The outbox keeps no sink column: a copy's sink is read from its last reply, whose form each sink
fixes (archive/sinks.py, delivery/archive.py):

- directory: `file YYYY/MM/DD/<delivery>-<log>.eml` once written, `... archive directory <root>:
  <error>` while it cannot write;
- imap: `imap <folder> <server's answer>` once appended, `... archive IMAP <url>: <error>`;
- smtp: any other reply (the archive relay's `250 ...`, `5xx ...`, or its fault);
- no reply yet (never attempted): the copy will go to the sink configured now.

`sink_figures()` is pure: it folds the store's counts (`SinkCount`, grouped by `SINK_MARKS`)
into one `SinkFigures` per sink. "sent" is the number of copies owed for sent messages that
belong to the sink (archived + pending + failed); "in doubt" counts copies whose sender died
while the copy was out (they may be in the archive twice: `archive verify` names them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["OTHER_SINK", "SINKS", "SINK_MARKS", "SinkChoice", "SinkCount", "SinkFigures",
           "SinkStore", "read_sink_figures", "sink_figures"]

SINKS = ("smtp", "directory", "imap")
OTHER_SINK = "smtp"  # a reply that carries no sink's mark is the archive relay's
# SQL LIKE patterns of the last reply that mark a copy as this sink's (written by sinks.py).
SINK_MARKS: Mapping[str, tuple[str, ...]] = {
    "directory": ("file %", "%archive directory %"),
    "imap": ("imap %", "%archive IMAP %"),
}
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class SinkCount:
    """Copies of one state whose last reply marks them as `sink`'s ("" when none yet)."""

    sink: str
    state: str  # pending | archived | failed
    copies: int
    in_doubt: int


@dataclass(frozen=True)
class SinkFigures:
    sink: str
    configured: bool  # the sink new copies go to now
    archived: int = 0
    pending: int = 0
    failed: int = 0
    in_doubt: int = 0
    last_error: str = ""  # the latest reply of a copy not archived (pending or failed)

    @property
    def sent(self) -> int:
        """Copies owed for sent messages, in any state."""
        return self.archived + self.pending + self.failed

    def to_json(self) -> dict[str, Any]:
        return {"sink": self.sink, "configured": self.configured, "sent": self.sent,
                "archived": self.archived, "pending": self.pending, "failed": self.failed,
                "in_doubt": self.in_doubt, "last_error": self.last_error or None}


def sink_figures(counts: Iterable[SinkCount], last_errors: Mapping[str, str],
                 configured: str | None) -> list[SinkFigures]:
    """One `SinkFigures` per sink that has copies, and the configured sink (if any) always;
    the configured sink first, then by name. Copies never attempted count as the configured
    sink's (with no sink configured, as `OTHER_SINK`'s)."""
    home = configured or OTHER_SINK
    totals: dict[str, dict[str, int]] = {}
    if configured:
        totals[configured] = {}
    for row in counts:
        sink = row.sink or home
        figures = totals.setdefault(sink, {})
        if row.state in ("archived", "pending", "failed"):
            figures[row.state] = figures.get(row.state, 0) + row.copies
        figures["in_doubt"] = figures.get("in_doubt", 0) + row.in_doubt
    result = []
    for sink, figures in totals.items():
        error = last_errors.get(sink, "")
        result.append(SinkFigures(sink, sink == configured, figures.get("archived", 0),
                                  figures.get("pending", 0), figures.get("failed", 0),
                                  figures.get("in_doubt", 0), error[:MAX_ERROR_CHARS]))
    return sorted(result, key=lambda f: (not f.configured, f.sink))


class SinkStore(Protocol):
    def archive_sink_counts(self, delivery_id: int | None, marks: Mapping[str, Sequence[str]],
                            other: str) -> tuple[list[SinkCount], dict[str, str]]: ...


class SinkChoice(Protocol):  # settings.ArchiveSettings
    @property
    def enabled(self) -> bool: ...
    @property
    def sink(self) -> str: ...


def read_sink_figures(store: SinkStore, settings: SinkChoice,
                      delivery_id: int | None = None) -> list[SinkFigures]:
    """`sink_figures()` of one delivery's copies (all deliveries' with None); the configured
    sink is `settings.sink` while Email BCC is enabled."""
    counts, last_errors = store.archive_sink_counts(delivery_id, SINK_MARKS, OTHER_SINK)
    return sink_figures(counts, last_errors, settings.sink if settings.enabled else None)
