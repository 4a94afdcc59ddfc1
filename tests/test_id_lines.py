"""The id lines a batch chunk sends to run.DuplicateFinder, built column by column
(worker.id_lines): each id's hash is FNV-1a of its bytes whatever its length, the lines keep
row order across the rows the vectorised engine decided and those read one by one, and a
repeated id is found across both kinds of row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.batch.run import BatchOptions, run_batch
from engine.batch.worker import OutputFormat, id_hashes, id_lines
from tests.conftest import RULES_DIR, RULESET


def fnv1a(text: str) -> int:
    """FNV-1a, 64 bits, signed: the hash written by hand, one byte at a time."""
    value = 0xCBF29CE484222325
    for octet in text.encode():
        value = ((value ^ octet) * 0x100000001B3) % 2**64
    return value - 2**64 if value >= 2**63 else value


@pytest.mark.timeout(30)
def test_hashes_are_fnv1a_of_each_id_whatever_its_length() -> None:
    ids = ["a", "ab", "A-1", "x" * 64, "case.0001_b", "9"]
    assert id_hashes(ids).tolist() == [fnv1a(i) for i in ids]
    assert id_hashes(["ab", "a"]).tolist() == [fnv1a("ab"), fnv1a("a")]  # no padding read
    assert id_hashes([]).tolist() == []


@pytest.mark.timeout(30)
def test_lines_are_tab_separated_in_the_order_given() -> None:
    text = id_lines("in.parquet", np.array([3, 10]), ["B-2", "A-1"])
    assert text == f"{fnv1a('B-2')}\tin.parquet\t3\tB-2\n{fnv1a('A-1')}\tin.parquet\t10\tA-1\n"
    assert id_lines("in.parquet", np.array([], np.int64), []) == ""


@pytest.mark.timeout(120)
def test_a_repeated_id_is_found_across_decided_and_rejected_rows(tmp_path: Path) -> None:
    """Row 2 is decided by the vectorised engine; row 5 repeats its id with an age out of range
    (rejected, row by row); row 4 repeats another decided id: both pairs are reported."""
    table = pa.table(
        {
            "case_id": ["C-1", "C-2", "C-3", "C-2", "C-2", "C-3"],
            "age_years": [40, 50, 60, 70, 999, 30],
            "diagnosis": ["lumbar_disc_herniation"] * 6,
        }
    )
    source = tmp_path / "cohort.parquet"
    pq.write_table(table, source)
    summary = tmp_path / "s.json"
    options = BatchOptions(
        inputs=[str(source)],
        out=str(tmp_path / "o.parquet"),
        output_format=OutputFormat.parquet,
        rules_dir=str(RULES_DIR),
        errors=str(tmp_path / "e.jsonl"),
        summary=str(summary),
        workers=1,
        engine="vectorised",
    )
    run_batch(options, RULESET)
    assert json.loads(summary.read_text())["duplicates"] == [
        {"case_id": "C-2", "rows": [2, 4, 5]},
        {"case_id": "C-3", "rows": [3, 6]},
    ]
