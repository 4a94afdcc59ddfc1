"""The durable-rules layout cache (engine/evaluate/cache.py): a layout read back is the one
computed, anything doubtful in the cache is ignored, and results never depend on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.derive import build_facts
from engine.evaluate import cache
from engine.evaluate.durable import DurableEvaluator
from engine.evaluate.layout import Layout
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import validate_case
from engine.rules.loader import load_ruleset
from engine.synth import generate_rows
from tests.conftest import RULES_DIR, RULESET

pytestmark = pytest.mark.timeout(120)


def _same(a: Layout, b: Layout) -> bool:
    return (a.texts, a.targets, a.groups, a.bounds) == (b.texts, b.targets, b.groups, b.bounds)


def _fresh() -> Layout:
    """The layout computed with no cache at all."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, "")
        return DurableEvaluator(RULESET).layout


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("layout-*.json"))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_layout_read_back_is_the_one_computed(folder: Path) -> None:
    written = DurableEvaluator(RULESET).layout  # computed, then written
    (path,) = _files(folder)
    read = DurableEvaluator(RULESET).layout
    assert read is not written  # it did come from the file
    assert _same(read, written)
    assert _same(read, _fresh())
    assert read.rulesets == written.rulesets  # the rules by name, as the texts say
    assert path.name == f"layout-{cache.layout_key(RULESET.sha256)}.json"


def _cases(count: int) -> list:
    facts = []
    for row in generate_rows(count, seed=11, missing=0.3, corrupt=0.0):
        _, values = validate_case(row, "synth")
        facts.append(build_facts(values, RULESET))
    return facts


def test_screening_with_a_cached_layout_agrees_with_the_reference(folder: Path) -> None:
    DurableEvaluator(RULESET)  # fills the cache
    cached = DurableEvaluator(RULESET)
    assert _files(folder)
    facts = _cases(600)
    reference = ReferenceEvaluator(RULESET)
    assert cached.evaluate_many(facts) == [reference.evaluate(f) for f in facts]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: "not json",
        lambda text: json.dumps({**json.loads(text), "key": "0" * 64}),  # another key
        lambda text: json.dumps({**json.loads(text), "format": cache.FORMAT + 1}),
        lambda text: json.dumps({**json.loads(text), "texts": [1]}),  # wrong types
        lambda text: json.dumps({**json.loads(text), "bounds": []}),
        # a rule standing for a status no compiled rule has
        lambda text: json.dumps(
            {**json.loads(text), "targets": {**json.loads(text)["targets"], "r0": [[9999, 2]]}}
        ),
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "targets"}),
    ],
)
def test_a_damaged_cache_file_is_ignored_and_rewritten(folder: Path, damage) -> None:  # type: ignore[no-untyped-def]
    DurableEvaluator(RULESET)
    (path,) = _files(folder)
    good = path.read_text()
    path.write_text(damage(good))
    again = DurableEvaluator(RULESET).layout
    assert _same(again, _fresh())
    assert json.loads(path.read_text()) == json.loads(good)  # written again, whole


def test_other_rules_get_another_entry(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    rule = copy / "access" / "ACC-016-multilevel-fusion.yaml"
    rule.write_text(rule.read_text().replace("levels >= 3", "levels >= 2"))
    edited = load_ruleset(copy)
    assert edited.sha256 != RULESET.sha256
    DurableEvaluator(RULESET)
    changed = DurableEvaluator(edited)
    assert len(_files(folder)) == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, "")
        assert _same(changed.layout, DurableEvaluator(edited).layout)
    facts = _cases(300)
    reference = ReferenceEvaluator(edited)
    assert DurableEvaluator(edited).evaluate_many(facts) == [reference.evaluate(f) for f in facts]


def test_the_key_follows_the_compiling_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = cache.layout_key(RULESET.sha256)
    engine = tmp_path / "engine"
    shutil.copytree(cache.ENGINE, engine, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "ENGINE", engine)
    assert cache.layout_key(RULESET.sha256) == before  # same code, same key
    # a change to any file the layout depends on, even one character, makes another key
    files = sorted(cache._sources())
    assert engine / "evaluate" / "layout.py" in files
    assert engine / "dictionary.py" in files
    keys = {before}
    for path in files:
        original = path.read_text()
        path.write_text(original + "\n")
        cache._digest_of.cache_clear()  # as a new process reads it (once per process)
        keys.add(cache.layout_key(RULESET.sha256))
        path.write_text(original)
        cache._digest_of.cache_clear()
    assert len(keys) == len(files) + 1
    assert cache.layout_key(RULESET.sha256) == before
    assert cache.layout_key("0" * 64) != cache.layout_key(RULESET.sha256)


def test_an_empty_setting_switches_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, "")
    assert cache.cache_dir() is None
    assert _same(DurableEvaluator(RULESET).layout, _fresh())


def test_the_default_place_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "miss-screen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "miss-screen"


def test_a_cache_that_cannot_be_written_is_no_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocked / "cache"))
    assert _same(DurableEvaluator(RULESET).layout, _fresh())
    assert blocked.read_text() == "a file where the folder should be"


def test_without_source_files_nothing_is_cached(
    folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An install without .py files has no code to key by: the layout is computed each time."""
    monkeypatch.setattr(cache, "ENGINE", tmp_path / "no-source")
    with pytest.raises(FileNotFoundError, match=r"layout\.py"):
        cache.layout_key(RULESET.sha256)
    assert _same(DurableEvaluator(RULESET).layout, _fresh())
    assert not folder.exists()


@pytest.mark.hostile
def test_a_cache_file_nested_deeper_than_json_reads_is_ignored(tmp_path: Path) -> None:
    """Python's JSON reader raises RecursionError, not ValueError, for such a file: a cache
    that did not catch it failed every start that read the file, where it must only be slow."""
    from engine.cachedir import read_json, write_json

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert read_json(deep) is None
    write_json(tmp_path / "ok.json", {"a": [1, 2.5, "é"]})
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2.5, "é"]}
