"""``examples/benchmark/synthetic_gap.py`` end to end at a toy size (the numbers mean nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import synthetic_gap


def test_writes_the_json_and_the_table(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "gap.json", tmp_path / "gap.md"
    argv = ["--targets", "ck", "--steps", "2", "--train", "16", "--test", "8", "--batch", "8"]
    argv += ["--image-size", "32", "--encoder", "none", "--json", str(out_json)]
    assert synthetic_gap.main([*argv, "--md", str(out_md)]) == 0
    result = json.loads(out_json.read_text())
    assert set(result) == {"meta", "CK+"}
    for key in ("command", "machine", "date", "torch"):
        assert key in result["meta"]
    row = result["CK+"]
    for key in ("in_domain", "source_only", "pseudo_label_precision", "pseudo_label_kept"):
        assert key in row
    assert 0.0 <= row["in_domain"] <= 100.0 and 0.0 <= row["pseudo_label_kept"] <= 100.0
    precision = row["pseudo_label_precision"]  # null when the vote keeps nothing
    assert precision is None or 0.0 <= precision <= 100.0
    assert len(row["per_seed"]) == 1
    table = out_md.read_text()
    assert "| CK+ |" in table and "examples/benchmark/synthetic_gap.py" in table
