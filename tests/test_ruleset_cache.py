"""The checked ruleset kept in the rules cache (engine/rules/kept.py): read back, it is the
ruleset the loader gives; any change the loader could see is a new load; a link, a special
file or a change during the load is never covered by an entry; anything doubtful in the cache
is ignored."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from engine.cachedir import CACHE_ENV
from engine.errors import RuleFileError
from engine.rules import kept, loader
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from tests.conftest import RULES_DIR

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    return copy


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("ruleset-*.json"))


_LOAD = loader._load


def fresh(root: Path) -> Ruleset:
    """What the loader proper gives, no cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, "")
        return _LOAD(Path(root))


def same(found: Ruleset, expected: Ruleset) -> None:
    """Equal as the engine compares rulesets, and in what equality does not see: the stamp,
    the paths, and the keys each rule file gave (a model's fields set)."""
    assert found == expected
    assert found.sha256 == expected.sha256
    assert found.directory == expected.directory
    assert [r.path for r in found.rules] == [r.path for r in expected.rules]
    assert [d.path for d in found.derived] == [d.path for d in expected.derived]
    metas = [(r.meta, e.meta) for r, e in zip(found.rules, expected.rules, strict=True)]
    metas += [(d.meta, e.meta) for d, e in zip(found.derived, expected.derived, strict=True)]
    assert all(a.model_fields_set == b.model_fields_set for a, b in metas)
    assert found.policy.model_fields_set == expected.policy.model_fields_set


def _refuse(root: Path) -> Ruleset:
    raise AssertionError(f"{root} was loaded, not read from the cache")


def test_a_kept_ruleset_is_the_one_the_loader_gives(cache: Path) -> None:
    # a ruleset with derived fields, constraints and every kind of condition node
    expected = fresh(RULES_DIR)
    first = load_ruleset(RULES_DIR)
    (entry,) = entries(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "_load", _refuse)
        again = load_ruleset(RULES_DIR)  # from the entry
    same(first, expected)
    same(again, expected)
    assert again.derived
    assert again.constraints
    nodes = {m.group(1) for m in re.finditer(r'"n":"(\w+)"', entry.read_text())}
    assert nodes == set(kept.NODES)


def test_the_folder_as_given_names_the_paths(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink(RULES_DIR, tmp_path / "linked")
    monkeypatch.chdir(tmp_path)
    for given in (RULES_DIR, "linked", "./linked/"):
        loaded = load_ruleset(given)
        assert loaded.rules[0].path.startswith(str(Path(given)) + os.sep)
        same(load_ruleset(given), fresh(Path(given)))
    assert len(entries(cache)) == 1  # one folder, however it is named


def test_every_change_the_loader_could_see_is_a_new_load(cache: Path, rules: Path) -> None:
    load_ruleset(rules)
    target = rules / "radiation" / next(p.name for p in (rules / "radiation").glob("RAD-005-*"))
    text = target.read_text()

    # an edited threshold
    target.write_text(text.replace("bmi >= 40", "bmi >= 35"))
    assert "35" in load_ruleset(rules).by_id["RAD-005"].meta.when
    same(load_ruleset(rules), fresh(rules))
    target.write_text(text)

    # a golden-case file beside the rule, giving cases the rule file gives too
    beside = target.with_name(target.stem + ".cases.yaml")
    beside.write_text("cases:\n  fires: []\n")
    with pytest.raises(RuleFileError, match="cases are both here"):
        load_ruleset(rules)
    beside.unlink()

    # a renamed file, then a removed one
    renamed = target.with_name("RAD-005-another-name.yaml")
    target.rename(renamed)
    with pytest.raises(RuleFileError, match="file name must be"):
        load_ruleset(rules)
    renamed.unlink()
    assert "RAD-005" not in load_ruleset(rules).by_id
    same(load_ruleset(rules), fresh(rules))

    # a file the loader does not read: a new key, the same ruleset
    before = len(entries(cache))
    (rules / "patient" / "notes.txt").write_text("not read")
    same(load_ruleset(rules), fresh(rules))
    assert len(entries(cache)) == before + 1


def test_a_link_out_of_the_folder_is_refused_though_its_text_was_kept(
    cache: Path, rules: Path, tmp_path: Path
) -> None:
    load_ruleset(rules)
    assert entries(cache)
    target = next((rules / "access").glob("ACC-001-*.yaml"))
    outside = tmp_path / "outside.yaml"
    shutil.copy(target, outside)
    target.unlink()
    os.symlink(outside, target)  # the same text, now from outside the rules folder
    with pytest.raises(RuleFileError, match="outside the rules folder"):
        load_ruleset(rules)


def test_a_special_file_in_the_folder_keeps_nothing(cache: Path, rules: Path) -> None:
    os.mkfifo(rules / "access" / "pipe.txt")  # the snapshot would block on it as a file
    same(load_ruleset(rules), fresh(rules))
    assert entries(cache) == []


def test_any_file_name_is_taken(cache: Path, rules: Path) -> None:
    """A name that is not UTF-8 (bytes the system allows) is part of the key like any."""
    (rules / os.fsdecode(b"patient/notes\xff.txt")).write_text("not read")
    same(load_ruleset(rules), fresh(rules))
    assert len(entries(cache)) == 1
    same(load_ruleset(rules), fresh(rules))


def test_a_yaml_file_in_any_case_is_in_the_key(rules: Path) -> None:
    """A file system that ignores case opens Policy.YAML for policy.yaml: its content counts."""
    other = rules / "patient" / "Extra.YAML"
    other.write_text("a: 1\n")
    before = kept.Snapshot.of(rules, loader.MAX_RULE_FILE_BYTES)
    other.write_text("a: 2\n")
    after = kept.Snapshot.of(rules, loader.MAX_RULE_FILE_BYTES)
    assert before is not None
    assert after is not None
    assert before.key != after.key


def test_a_file_changed_while_it_is_loaded_is_not_kept(
    cache: Path, rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = loader._load
    target = next((rules / "access").glob("ACC-016-*.yaml"))

    def load_then_edit(root: Path) -> Ruleset:
        loaded = load(root)
        target.write_text(target.read_text().replace("levels >= 3", "levels >= 2"))
        return loaded

    monkeypatch.setattr(loader, "_load", load_then_edit)
    load_ruleset(rules)
    assert entries(cache) == []
    monkeypatch.setattr(loader, "_load", load)
    assert "levels >= 2" in load_ruleset(rules).by_id["ACC-016"].meta.when


def test_what_json_does_not_give_back_is_not_kept(cache: Path, rules: Path) -> None:
    target = next((rules / "access").glob("ACC-016-*.yaml"))
    # a date in a golden case: the loader keeps the date, JSON would give back its text
    case = "{planned_procedure: fusion, levels: 3}"
    assert case in target.read_text()
    target.write_text(target.read_text().replace(case, case[:-1] + ", seen: 2020-01-01}", 1))
    loaded = load_ruleset(rules)
    cases = loaded.by_id["ACC-016"].meta.cases
    assert cases is not None
    assert not isinstance(cases.fires[0].case["seen"], str)
    assert entries(cache) == []
    same(load_ruleset(rules), fresh(rules))


def test_a_value_json_cannot_hold_is_not_kept(cache: Path, rules: Path) -> None:
    """Bytes in a golden case (YAML's !!binary) load, and JSON cannot hold them: the ruleset
    is loaded as ever and no entry is written."""
    target = next((rules / "access").glob("ACC-016-*.yaml"))
    case = "{planned_procedure: fusion, levels: 3}"
    target.write_text(target.read_text().replace(case, case[:-1] + ', blob: !!binary "gA=="}'))
    same(load_ruleset(rules), fresh(rules))
    assert entries(cache) == []


def test_no_cache_folder_nothing_is_listed_or_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, "")

    def refuse(root: Path, limit: int) -> None:
        raise AssertionError("a snapshot taken with no cache folder")

    monkeypatch.setattr(kept.Snapshot, "of", refuse)
    same(load_ruleset(RULES_DIR), fresh(RULES_DIR))


def _tampered(data: dict, how: str) -> object:
    rule = data["rules"][0]
    if how == "a class not on the list":
        rule[3] = {"n": "Popen", "a": [["sh", "-c", "exit 3"]]}
    elif how == "a node short of a field":
        rule[3] = {"n": "Compare", "a": ["==", "bmi"]}
    elif how == "a rule file the model refuses":
        rule[1]["id"] = "not an id"
    elif how == "another key":  # another folder's entry, under this name: its rules differ
        data["key"] = "0" * 64
        rule[3] = {"n": "Truth", "a": [False]}
    elif how == "an unknown operator":
        rule[3] = {"n": "Compare", "a": ["~~", "bmi", {"n": "Const", "a": [40]}]}
    elif how == "a field not in the dictionary":
        rule[3] = {"n": "Known", "a": ["patient_name", False]}
    elif how == "a text for a list of conditions":
        rule[3] = {"n": "And", "a": ["bmi >= 40"]}
    elif how == "an expression for a condition":
        rule[3] = {"n": "FieldRef", "a": ["bmi"]}
    elif how == "no stamp":
        data["sha256"] = 7
    elif how == "a list for a mapping":
        return []
    return data


@pytest.mark.hostile
@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "truncated",
        "a class not on the list",
        "a node short of a field",
        "a tree too deep",
        "a rule file the model refuses",
        "another key",
        "an unknown operator",
        "a field not in the dictionary",
        "a text for a list of conditions",
        "an expression for a condition",
        "no stamp",
        "a list for a mapping",
    ],
)
def test_a_damaged_or_foreign_entry_is_ignored(cache: Path, how: str) -> None:
    load_ruleset(RULES_DIR)
    (entry,) = entries(cache)
    if how == "garbage":
        entry.write_bytes(b"\x00\xffgarbage")
    elif how == "a tree too deep":  # deeper than JSON's reader or the tree's builder goes
        data = json.loads(entry.read_text())
        data["rules"][0][3] = "DEEP"
        depth = 100_000
        deep = '{"n":"Not","a":[' * depth + '{"n":"Truth","a":[true]}' + "]}" * depth
        entry.write_text(json.dumps(data).replace('"DEEP"', deep))
    elif how == "truncated":
        entry.write_bytes(entry.read_bytes()[:1000])
    else:
        entry.write_text(json.dumps(_tampered(json.loads(entry.read_text()), how)))
    same(load_ruleset(RULES_DIR), fresh(RULES_DIR))
