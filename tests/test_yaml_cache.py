"""Parsed rule files kept between processes (engine.yamlsource.ParsedCache): what it gives back
is exactly what parsing gives, and the rules loaded through it are the same rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.errors import RuleFileError
from engine.rules.loader import load_ruleset
from engine.yamlsource import ParsedCache, YamlError, parse_yaml
from tests.conftest import RULES_DIR, RULESET

pytestmark = pytest.mark.timeout(120)


def _typed(value: object) -> object:
    """A value with the type of every part spelled out (True and 1, 1 and 1.0 differ)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def test_every_bundled_file_comes_back_exactly_as_parsed(tmp_path: Path) -> None:
    texts = [p.read_text() for p in sorted(RULES_DIR.rglob("*.yaml"))]
    first = ParsedCache(tmp_path)
    parsed = [_typed(first.parse(t).data) for t in texts]
    first.save()
    second = ParsedCache(tmp_path)
    assert len(second.stored) == len(set(texts))  # every file was kept
    again = [second.parse(t) for t in texts]
    assert [_typed(d.data) for d in again] == parsed
    assert [_typed(parse_yaml(t).data) for t in texts] == parsed
    assert again[0].text == texts[0]  # lines of errors are still found from the text
    assert again[0].line_of(()) == parse_yaml(texts[0]).line_of(())


def test_what_json_cannot_give_back_is_parsed_every_time(tmp_path: Path) -> None:
    texts = [
        "when: 2024-01-31\n",  # a date
        "1: one\n2: two\n",  # keys that are not text
        "x: .nan\n",  # not JSON
        "x: [1, 1.0, true, '1']\n",  # kept: JSON tells these apart
    ]
    cache = ParsedCache(tmp_path)
    for text in texts:
        assert _typed(cache.parse(text).data) == _typed(parse_yaml(text).data)
    cache.save()
    kept = ParsedCache(tmp_path)
    assert len(kept.stored) == 1
    assert _typed(kept.parse(texts[3]).data) == _typed(parse_yaml(texts[3]).data)
    assert _typed(kept.parse(texts[0]).data) == _typed(parse_yaml(texts[0]).data)


def test_each_lookup_gives_fresh_objects(tmp_path: Path) -> None:
    text = "cases:\n  - a: 1\n"
    cache = ParsedCache(tmp_path)
    cache.parse(text)
    cache.save()
    kept = ParsedCache(tmp_path)
    kept.parse(text).data["cases"].append({"b": 2})  # the loader merges case files in place
    assert kept.parse(text).data == {"cases": [{"a": 1}]}


def test_a_duplicated_key_is_refused_with_or_without_the_cache(tmp_path: Path) -> None:
    text = "a: true\na: false\n"
    for _ in range(2):
        cache = ParsedCache(tmp_path)
        with pytest.raises(YamlError, match="more than once"):
            cache.parse(text)
        cache.save()
    assert ParsedCache(tmp_path).stored == {}


@pytest.mark.parametrize("damage", ["", "not json", "[1, 2]", '{"x": 1}'])
def test_a_damaged_file_is_ignored(tmp_path: Path, damage: str) -> None:
    cache = ParsedCache(tmp_path)
    cache.parse("a: 1\n")
    cache.save()
    (path,) = tmp_path.glob("yaml-*.json")
    path.write_text(damage)
    assert ParsedCache(tmp_path).parse("a: 1\n").data == {"a": 1}


def test_rules_loaded_through_the_cache_are_the_same_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISS_SCREEN_CACHE_DIR", str(tmp_path / "cache"))
    first = load_ruleset(RULES_DIR)  # parses and keeps
    assert list((tmp_path / "cache").glob("yaml-*.json"))
    again = load_ruleset(RULES_DIR)  # from the cache
    assert again.canonical == first.canonical == RULESET.canonical
    assert [r.meta for r in again.rules] == [r.meta for r in RULESET.rules]  # golden cases too
    # an edited file is read as edited, and an invalid edit is still refused
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    rule = copy / "access" / "ACC-016-multilevel-fusion.yaml"
    rule.write_text(rule.read_text().replace("levels >= 3", "levels >= 2"))
    edited = load_ruleset(copy)
    assert "levels >= 2" in json.dumps(edited.canonical)
    assert edited.sha256 != RULESET.sha256
    rule.write_text(rule.read_text() + "\nid: ACC-999\n")  # a key given twice
    with pytest.raises(RuleFileError, match="more than once"):
        load_ruleset(copy)


def test_an_empty_setting_switches_the_cache_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISS_SCREEN_CACHE_DIR", "")
    cache = ParsedCache()
    assert cache.path is None
    assert cache.parse("a: 1\n").data == {"a": 1}
    cache.save()
    assert not list(tmp_path.iterdir())


def test_without_its_source_the_parser_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.yamlsource as source

    def missing() -> str:
        raise FileNotFoundError("yamlsource.py")

    monkeypatch.setattr(source, "_parser_digest", missing)
    cache = ParsedCache(tmp_path)
    assert cache.path is None
    assert cache.parse("a: 1\n").data == {"a": 1}
    cache.save()
    assert not list(tmp_path.iterdir())
