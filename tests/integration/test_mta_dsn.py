"""DSNs generated now by the system Postfix (tests/integration/mta_dsn.py), each qualified right.

The expected verdicts are the rows of tests/corpus/postfix-dsn/labels.tsv, the table the
committed samples of the same scenarios are checked against (tests/corpus/test_corpus.py).
"""

from __future__ import annotations

import os
import shutil

import pytest

from postroom.bounces import default_rules, parse_bounce, qualify_bounce
from tests.corpus.scoring import REPO_CORPUS, read_labels
from tests.integration.mta_dsn import SCENARIOS, Scenario, generate

LABELS = REPO_CORPUS / "postfix-dsn" / "labels.tsv"


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    if os.geteuid() != 0 or shutil.which("postfix") is None or shutil.which("postgrey") is None:
        pytest.skip("needs root and Debian's postfix and postgrey packages (.ci/run)")
    return generate()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_generated_postfix_dsn_is_qualified_right(generated: dict[str, bytes],
                                                  scenario: Scenario) -> None:
    name = scenario.name
    expected = {path.name: labels[0] for path, labels in read_labels(REPO_CORPUS, LABELS).items()}
    label = expected[f"postfix-{name}.eml"]
    assert name in generated, f"Postfix sent no DSN for {name} (see /var/log/postfix.log)"
    ((recipient, verdict),) = qualify_bounce(default_rules(), parse_bounce(generated[name]))
    assert recipient.recipient in label.recipients
    assert (verdict.failure_type.value, int(verdict.reason)) == (label.failure_type,
                                                                  label.reason)
