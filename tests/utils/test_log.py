"""lacmfer.utils logging: the metrics log, progress lines, the curves."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from lacmfer.utils import MetricsLog, Progress, json_safe, plot_metrics, read_jsonl


def test_json_safe_replaces_non_finite_numbers_at_any_depth() -> None:
    value = {"a": math.nan, "b": [1.0, -math.inf, {"c": math.inf, "d": 2}], "e": (3.0, math.nan)}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": None, "d": 2}], "e": [3.0, None]}
    json.dumps(json_safe(value), allow_nan=False)  # strict JSON
    assert json_safe("nan") == "nan" and json_safe(True) is True


def test_log_writes_reads_and_keeps(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run", tensorboard=False)
    assert log.records() == []  # nothing yet, no folder yet
    for step in (1, 2, 3):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step, "bad": math.nan})
    log.write({"kind": "eval", "step": 3, "acc": 0.5})
    assert [r["step"] for r in log.records()] == [1, 2, 3, 3]
    assert log.records()[0]["bad"] is None
    # a second log on the same folder (a resumed process) reads what the first wrote
    again = MetricsLog(tmp_path / "run", tensorboard=False)
    assert again.records() == log.records() == read_jsonl(tmp_path / "run" / "metrics.jsonl")
    again.keep([r for r in again.records() if r["step"] < 2])
    again.write({"kind": "train", "step": 2, "loss": 0.4})
    assert [r["step"] for r in log.records()] == [1, 2]
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # one JSON object a line, strict


def test_a_disabled_log_writes_nothing(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run", enabled=False, tensorboard=True)
    log.write({"step": 1, "loss": 1.0})
    log.keep([{"step": 1}])
    log.close()
    assert not (tmp_path / "run").exists() and log.notes == []


def test_log_rejects_a_record_without_a_step(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="record must be a dict with an int 'step'"):
        log.write({"loss": 1.0})
    with pytest.raises(ValueError, match="int 'step'"):
        log.write({"step": 1.5})


class FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter: records what it is given."""

    made: ClassVar[list[FakeWriter]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> type[FakeWriter]:
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    FakeWriter.made = []
    return FakeWriter


def test_tensorboard_mirror(tmp_path: Path, fake_tensorboard: type[FakeWriter]) -> None:
    log = MetricsLog(tmp_path)
    log.write({"kind": "train", "step": 1, "loss": 2.0, "n": 3, "bad": math.nan, "ok": True,
               "name": "x", "per_class": [0.5]})  # fmt: skip
    log.write({"kind": "eval", "step": 2, "acc": 0.25})
    log.write({"step": 3, "lr": 0.1})
    log.close()
    (writer,) = fake_tensorboard.made
    assert writer.log_dir == str(tmp_path / "tb") and writer.closed
    # finite numbers only (no bools, strings, lists, NaN); tagged <kind>/<key>; step not a scalar
    assert writer.scalars == [("train/loss", 2.0, 1), ("train/n", 3, 1), ("eval/acc", 0.25, 2),
                              ("lr", 0.1, 3)]  # fmt: skip
    assert MetricsLog(tmp_path, tensorboard=False)._tb is None
    assert MetricsLog(tmp_path, enabled=False)._tb is None
    assert len(fake_tensorboard.made) == 1


def test_tensorboard_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    asked = MetricsLog(tmp_path, tensorboard=True)
    assert asked.notes == ["tensorboard requested but not installed: skipped"]
    assert MetricsLog(tmp_path).notes == []  # None: off without a word
    asked.write({"kind": "train", "step": 1, "loss": 1.0})  # still logs to the file
    assert asked.records() == [{"kind": "train", "step": 1, "loss": 1.0}]


def test_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress(100, 20, desc="run", images_per_step=64)
    # 30 steps in 15 s: 2 steps/s, 128 img/s, 50 steps left = 25 s
    assert p.line(50, {"loss": 1.23456}, 15.0) == (
        "run | step 50/100 | loss 1.235 | 128 img/s | ETA 0h00m25s"
    )
    assert Progress(10_000).line(1, {}, 1.0) == "step 1/10000 | 1 it/s | ETA 2h46m39s"
    assert Progress(10).line(0, {}, 0.0).endswith("ETA 0h00m00s")  # no rate yet
    p.update(60, {"loss": 1.0})
    Progress(10, enabled=False).update(5)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("run | step 60/100 | loss 1 | ")


def test_plot_metrics_draws_what_the_log_holds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("svg")
    records = [{"kind": "train", "step": s, "loss": 1 / s, "ce": 0.5 / s, "pseudo_label_acc": None}
               for s in range(1, 6)]  # fmt: skip
    records += [{"kind": "eval", "step": s, "acc_fused": 0.1 * s} for s in (2, 4)]
    path = tmp_path / "curves.png"
    assert plot_metrics(records, path, title="t") is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == "svg"  # the caller's backend is left alone
    assert plot_metrics([], tmp_path / "empty.png") and (tmp_path / "empty.png").exists()


def test_plot_metrics_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot_metrics([{"kind": "train", "step": 1, "loss": 1.0}], tmp_path / "c.png") is False
    assert not (tmp_path / "c.png").exists()
