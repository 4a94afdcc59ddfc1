"""docs/questions.md is what benchmarks/questions_table.py generates from the current rules."""

from __future__ import annotations

import pytest

from benchmarks.questions_table import PAGE, render
from tests.conftest import RULESET


@pytest.fixture(scope="module")
def page() -> str:
    return render(RULESET)  # screens about 1,500 bare cases twice: once for the module


def test_questions_page_is_current(page: str) -> None:
    assert PAGE.read_text() == page, (
        "docs/questions.md is stale: run `python benchmarks/questions_table.py`"
    )


def test_questions_page_has_every_diagnosis_and_both_counts(page: str) -> None:
    for diagnosis in ("disc_herniation", "fracture", "tumor", "infection", "adult_deformity"):
        row = next(line for line in page.splitlines() if line.startswith(f"| {diagnosis} |"))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert int(cells[1]) > 0  # cases
        assert "(" in cells[2]  # bare: mean (max)
        assert "(" in cells[3]  # with the site profile: mean (max)
        assert cells[4].replace(".", "").isdigit()  # red-flag questions among them
