"""Per-sink figures (archive/status.py): how copies are attributed to sinks and summed."""

from __future__ import annotations

from postroom.archive.status import SinkCount, SinkFigures, sink_figures


def test_unattempted_copies_are_the_configured_sinks_and_each_sink_keeps_its_own() -> None:
    counts = [SinkCount("smtp", "archived", 40, 1), SinkCount("smtp", "failed", 2, 0),
              SinkCount("directory", "archived", 7, 0), SinkCount("directory", "pending", 3, 2),
              SinkCount("", "pending", 5, 0)]
    errors = {"directory": "archive relay fault: unreachable: archive directory /v: denied",
              "smtp": "550 5.7.1 no"}
    figures = sink_figures(counts, errors, "directory")
    assert figures == [
        SinkFigures("directory", True, archived=7, pending=8, failed=0, in_doubt=2,
                    last_error=errors["directory"]),
        SinkFigures("smtp", False, archived=40, pending=0, failed=2, in_doubt=1,
                    last_error="550 5.7.1 no"),
    ]
    assert [f.sent for f in figures] == [15, 42]
    assert figures[0].to_json() == {"sink": "directory", "configured": True, "sent": 15,
                                    "archived": 7, "pending": 8, "failed": 0, "in_doubt": 2,
                                    "last_error": errors["directory"]}


def test_the_configured_sink_shows_with_no_copy_and_none_without_email_bcc() -> None:
    assert sink_figures([], {}, "imap") == [SinkFigures("imap", True)]
    assert sink_figures([], {}, None) == []
    # Email BCC turned off since: copies never attempted are counted as the relay's.
    assert sink_figures([SinkCount("", "pending", 4, 0)], {}, None) == [
        SinkFigures("smtp", False, pending=4)]


def test_a_long_error_is_cut() -> None:
    [figures] = sink_figures([SinkCount("imap", "pending", 1, 0)], {"imap": "x" * 5000}, "imap")
    assert len(figures.last_error) == 300
