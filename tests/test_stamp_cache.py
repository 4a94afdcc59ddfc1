"""The ruleset's sha256 stamp kept in the rules cache (engine/rules/stamp.py): read back, it is
the one computed from the canonical JSON; anything doubtful in the cache is ignored."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from engine.cachedir import CACHE_ENV
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from tests.conftest import RULES_DIR

pytestmark = pytest.mark.timeout(120)


def _computed(ruleset: Ruleset) -> str:
    return hashlib.sha256(ruleset.canonical.encode()).hexdigest()


def _load(folder: Path, rules: Path = RULES_DIR) -> Ruleset:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        return load_ruleset(rules)


def test_a_stamp_read_back_is_the_one_computed(tmp_path: Path) -> None:
    first = _load(tmp_path)
    assert "sha256" not in first.__dict__ or first.sha256 == _computed(first)
    (entry,) = tmp_path.glob("stamp-*.json")
    again = _load(tmp_path)
    assert "sha256" in again.__dict__  # read from the cache, not computed
    assert again.sha256 == _computed(again) == json.loads(entry.read_text())["sha256"]


def test_an_edited_rule_file_gets_its_own_stamp(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    before = _load(tmp_path / "cache", rules).sha256
    target = next(rules.glob("access/*.yaml"))
    edited_text = re.sub(
        r"^version: .*$", "version: 9.9.9", target.read_text(), count=1, flags=re.M
    )
    assert edited_text != target.read_text()
    target.write_text(edited_text)
    edited = _load(tmp_path / "cache", rules)
    assert edited.sha256 == _computed(edited) != before
    assert len(list((tmp_path / "cache").glob("stamp-*.json"))) == 2


def test_no_cache_folder_no_stamp_file(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, "")
        ruleset = load_ruleset(RULES_DIR)
    assert ruleset.sha256 == _computed(ruleset)


@pytest.mark.hostile
@pytest.mark.parametrize(
    "content",
    [b"\x00\xffgarbage", b'{"key": "x"', b"[]", b'{"sha256": 7}', "wrong key", "not hex"],
)
def test_a_damaged_or_foreign_stamp_entry_is_ignored(tmp_path: Path, content: object) -> None:
    _load(tmp_path)
    (entry,) = tmp_path.glob("stamp-*.json")
    data = json.loads(entry.read_text())
    if content == "wrong key":  # another load's entry under this name: a wrong stamp
        entry.write_text(json.dumps({"key": "0" * 64, "sha256": "f" * 64}))
    elif content == "not hex":
        entry.write_text(json.dumps({"key": data["key"], "sha256": "../../etc/passwd"}))
    else:
        assert isinstance(content, bytes)
        entry.write_bytes(content)
    again = _load(tmp_path)
    assert again.sha256 == _computed(again)
    assert json.loads(entry.read_text()) == data  # written again, whole
