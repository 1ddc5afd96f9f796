"""Every public corpus file's outcome per order matches the stored table
(tests/data/corpus_outcomes.txt; regenerate with tests/corpus_outcomes.py)."""

from __future__ import annotations

import difflib
from pathlib import Path

from corpus_outcomes import table

STORED = Path(__file__).parent / "data" / "corpus_outcomes.txt"


def test_corpus_outcomes_match_the_stored_table():
    """A change of outcome for any corpus file is a visible diff, here and in review."""
    now = table()
    stored = STORED.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            stored.splitlines(keepends=True), now.splitlines(keepends=True), "stored", "now"
        )
    )
    assert not diff, (
        "corpus outcomes changed; if intended, run\n"
        "  python tests/corpus_outcomes.py > tests/data/corpus_outcomes.txt\n" + diff
    )
