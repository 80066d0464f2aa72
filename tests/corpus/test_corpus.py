"""Corpus-driven tests: the repo's own labelled samples, and the shared corpus when present.

The repo's samples (tests/corpus/*/labels.tsv, hand-written or captured from real MTAs) must
all come out right. The shared corpus (../shared/bounce-corpus, or $POSTROOM_BOUNCE_CORPUS) is
third-party data that is read in place, never copied; it must reach the accuracy targets of
issue 4: recipient extraction >= 95% and failure-type agreement >= 90%.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.scoring import (
    REPO_CORPUS,
    label_files,
    postroom_predict,
    read_labels,
    score,
    shared_corpus,
)


@pytest.mark.parametrize("labels", label_files(REPO_CORPUS),
                         ids=lambda p: str(p.relative_to(REPO_CORPUS)))
def test_repo_samples_are_all_right(labels: Path) -> None:
    result = score(read_labels(REPO_CORPUS, labels), postroom_predict)
    assert result.rows > 0
    assert result.misses == []
    assert result.extraction == 1.0
    assert result.type_agreement == 1.0
    assert result.reason_agreement == 1.0


def test_shared_corpus_meets_the_targets() -> None:
    corpus = shared_corpus()
    if corpus is None:
        pytest.skip("the shared bounce corpus is not present (../shared/bounce-corpus)")
    result = score(read_labels(corpus, corpus / "labels.tsv"), postroom_predict)
    assert result.errors == 0
    assert result.rows > 300
    assert result.extraction >= 0.95, result.misses
    assert result.type_agreement >= 0.90, result.misses
