"""Bounces generated now by Exim 4 run unprivileged (tests/integration/exim_dsn.py), each
qualified right; expected verdicts from tests/corpus/exim-dsn/labels.tsv."""

from __future__ import annotations

import pytest

from postroom.bounces import default_rules, parse_bounce, qualify_bounce
from tests.corpus.scoring import REPO_CORPUS, read_labels
from tests.integration.exim_dsn import SCENARIOS, Scenario, available, generate

LABELS = REPO_CORPUS / "exim-dsn" / "labels.tsv"


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    reason = available()
    if reason is not None:
        pytest.skip(f"Exim cannot run here: {reason}")
    return generate()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_generated_exim_bounce_is_qualified_right(generated: dict[str, bytes],
                                                  scenario: Scenario) -> None:
    expected = {path.name: labels[0] for path, labels in read_labels(REPO_CORPUS, LABELS).items()}
    label = expected[f"exim-{scenario.name}.eml"]
    assert scenario.name in generated, f"Exim sent no bounce for {scenario.name}"
    parsed = parse_bounce(generated[scenario.name])
    ((recipient, verdict),) = qualify_bounce(default_rules(), parsed)
    assert (recipient.recipient, recipient.action) == (scenario.recipient, "failed")
    assert (verdict.failure_type.value, int(verdict.reason)) == (label.failure_type,
                                                                  label.reason)
