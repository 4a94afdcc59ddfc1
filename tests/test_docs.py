"""The committed rule docs are exactly what `miss-screen rules docs` generates from the rules."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app
from engine.report.docs import render_docs
from tests.conftest import ROOT, RULESET

DOCS = ROOT / "docs" / "rules"


def test_committed_rule_docs_are_not_stale() -> None:
    expected = render_docs(RULESET, ROOT)
    committed = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    assert sorted(committed) == sorted(expected), "run: miss-screen rules docs --out docs/rules"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"stale pages {stale}; run: miss-screen rules docs --out docs/rules"


def test_every_rule_has_a_page_with_the_fixed_headings() -> None:
    pages = render_docs(RULESET, ROOT)
    for rule in RULESET.rules:
        page = pages[f"{rule.id}-{rule.meta.name}.md"]
        for heading in (
            "## What it flags",
            "## Why it matters",
            "## Evidence and sources",
            "## Scope",
            "## Examples",
        ):
            assert heading in page, (rule.id, heading)
        assert rule.meta.sources[0].citation in page


def test_index_links_every_claim_to_its_rules() -> None:
    index = render_docs(RULESET, ROOT)["README.md"]
    for rule in RULESET.rules:
        if rule.meta.claims:
            assert f"[{rule.id}]({rule.id}-{rule.meta.name}.md)" in index


def test_rules_docs_command_writes_the_pages(tmp_path: Path) -> None:
    stale = tmp_path / "OLD-001-gone.md"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text("old")
    result = CliRunner().invoke(app, ["rules", "docs", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "README.md").is_file()
    assert len(list(tmp_path.glob("*.md"))) == len(RULESET.rules) + 1
    assert not stale.exists()


def test_rule_format_documents_every_rule_file_key() -> None:
    """docs/rule-format.md's table names every key a rule file may hold (patient, safety_net...)."""
    from engine.models import RuleFile

    table = (ROOT / "docs" / "rule-format.md").read_text()
    undocumented = [key for key in RuleFile.model_fields if f"| `{key}` |" not in table]
    assert not undocumented, undocumented
