"""lacmfer.utils logging: the metrics log, progress lines, the curves."""

from __future__ import annotations

import json
import math
import re
import sys
import types
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from lacmfer.utils import MetricsLog, Progress, json_safe, plot_metrics, read_jsonl


def test_json_safe_replaces_non_finite_numbers_at_any_depth() -> None:
    value = {"a": math.nan, "b": [1.0, -math.inf, {"c": math.inf, "d": 2}], "e": (3.0, math.nan)}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": None, "d": 2}], "e": [3.0, None]}
    json.dumps(json_safe(value), allow_nan=False)  # strict JSON
    assert json_safe("nan") == "nan" and json_safe(True) is True


def test_json_safe_turns_tensors_and_numpy_scalars_into_numbers() -> None:
    cases = [
        (torch.tensor(0.1), float(torch.tensor(0.1).tolist())),  # float32 0.1, as a Python float
        (torch.tensor(3), 3),
        (torch.tensor(True), True),
        (torch.tensor(2.5, dtype=torch.bfloat16, requires_grad=True), 2.5),
        (np.float32(0.1), float(np.float32(0.1).tolist())),
        (np.float64(-2.0), -2.0),
        (np.int64(7), 7),
        (np.uint8(255), 255),
        (np.bool_(False), False),
    ]
    for value, expected in cases:
        got = json_safe(value)
        assert got == expected and type(got) is type(expected), (value, got)
    for nan in (
        np.float32("nan"),
        np.float64("inf"),
        torch.tensor(math.nan),
        torch.tensor(-math.inf),
    ):
        assert json_safe(nan) is None, nan
    nested = {
        "a": [torch.tensor(1.5), (np.int64(2), np.float32("nan"))],
        "b": {"c": torch.tensor(4)},
    }
    assert json_safe(nested) == {"a": [1.5, [2, None]], "b": {"c": 4}}
    json.dumps(json_safe(nested), allow_nan=False)
    # tensors and arrays of more dimensions: nested lists of numbers, as tolist() gives them
    matrix = torch.tensor([[1.0, math.nan], [-math.inf, 2.0]], requires_grad=True)
    assert json_safe(matrix) == [[1.0, None], [None, 2.0]]
    assert json_safe(np.arange(3, dtype=np.int16)) == [0, 1, 2]
    assert json_safe({"v": torch.tensor([True, False])}) == {"v": [True, False]}


def test_log_names_a_value_json_cannot_hold(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    log.write({"step": 1, "kind": "train", "masked": torch.tensor([3.0, 4.0])})  # a vector: a list
    assert log.records() == [{"step": 1, "kind": "train", "masked": [3.0, 4.0]}]
    with pytest.raises(TypeError, match=r"record\['when'\] cannot be written as JSON"):
        log.write({"step": 2, "when": object()})
    assert len(log.records()) == 1  # nothing of the refused record was written


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


def test_a_file_in_place_of_the_folder_is_refused_at_construction(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"`folder` must be a folder.*a-file"):
        MetricsLog(tmp_path / "a-file", tensorboard=False)
    MetricsLog(tmp_path / "a-file", enabled=False)  # a disabled log (other ranks) touches nothing


def test_log_rejects_a_record_without_an_integer_step(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="record must be a dict with an int 'step'"):
        log.write({"loss": 1.0})
    with pytest.raises(TypeError, match="record must be a dict with an int 'step', got"):
        log.write([("step", 1)])  # type: ignore[arg-type]
    for step, shown in [(1.5, "float 1.5"), (2.0, "float 2.0"), (True, "bool True"),
                        ("3", "str '3'"), (None, "NoneType None"), (np.float64(4), "float64")]:  # fmt: skip
        with pytest.raises(TypeError, match=rf"record\['step'\] must be an int, got {shown}"):
            log.write({"step": step})
    off = MetricsLog(tmp_path / "off", enabled=False)  # a disabled log checks records alike
    with pytest.raises(TypeError, match=r"record\['step'\] must be an int, got float"):
        off.write({"step": 1.5})
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing was written
    log.write({"step": np.int64(5)})  # integer-like: operator.index accepts it
    log.write({"step": torch.tensor(6)})
    assert [type(r["step"]) for r in log.records()] == [int, int]
    assert [r["step"] for r in log.records()] == [5, 6]


def write_lines(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


CUT = '{"kind": "train", "step": 1, "loss": 1.0}\n{"kind": "train", "step": 2, "loss": 0.5}\n{"step": 3, "lo'


@pytest.mark.parametrize("ending", ["", "\n", "\n\n"])
def test_read_jsonl_skips_a_last_line_cut_short(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    write_lines(path, CUT + ending)
    whole = [json.loads(line) for line in CUT.splitlines()[:2]]
    for read in (lambda: read_jsonl(path), MetricsLog(tmp_path / "run", tensorboard=False).records):
        with pytest.warns(
            UserWarning, match=re.escape(f"{path}: line 3, the last, is not valid JSON")
        ) as w:
            assert read() == whole
        assert len(w) == 1 and w[0].filename == __file__  # attributed to the caller
    assert path.read_bytes() == (CUT + ending).encode()  # reading changes nothing


def test_read_jsonl_raises_for_a_bad_line_before_the_last(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_lines(path, '{"step": 1}\n\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(
        ValueError, match="^" + re.escape(f"{path}: line 3 is not valid JSON (") + ".*column"
    ) as caught:
        read_jsonl(path)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
    with pytest.raises(ValueError, match="line 3"):
        MetricsLog(tmp_path, tensorboard=False).records()
    path.write_bytes(b'{"step": 1}\n{"a": "\xe9"}\n')  # a character cut short: not UTF-8
    with pytest.warns(UserWarning, match="line 2, the last"):
        assert read_jsonl(path) == [{"step": 1}]


@pytest.mark.parametrize("line", ["[1, 2]", "3", '"step"', "null"])
@pytest.mark.parametrize("where", ["before the last", "last"])
def test_read_jsonl_raises_for_a_line_that_is_not_an_object(
    tmp_path: Path, line: str, where: str
) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 1}', line, '{"step": 3}'] if where != "last" else ['{"step": 1}', line]
    write_lines(path, "\n".join(lines) + "\n")
    message = f"{path}: line 2 is not a JSON object (one record, a dict, a line): {line}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="line 2 is not a JSON object"):
        MetricsLog(tmp_path, tensorboard=False).records()


def test_a_reopened_log_appends_after_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_lines(path, CUT)
    log = MetricsLog(tmp_path, tensorboard=False)  # a new process, appending without keep()
    with pytest.warns(
        UserWarning, match=re.escape(f"{path}: line 3, the last, ") + ".*dropped"
    ) as w:
        log.write({"kind": "train", "step": 3, "loss": 0.25})
    assert w[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the log is well-formed again: no more warnings
        log.write({"kind": "eval", "step": 3, "acc": 0.5})
        lines = path.read_text().splitlines()
        assert [json.loads(line) for line in lines] == log.records()  # every line whole
        assert [(r["kind"], r["step"]) for r in log.records()] == [
            ("train", 1), ("train", 2), ("train", 3), ("eval", 3)]  # fmt: skip


def test_a_reopened_log_adds_a_missing_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_lines(path, '{"step": 1}\n{"step": 2}')  # whole, but its newline was not written
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetricsLog(tmp_path, tensorboard=False).write({"step": 3})
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'


def test_a_resume_reads_keeps_and_appends_a_well_formed_log(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_lines(path, CUT)
    log = MetricsLog(tmp_path, tensorboard=False)  # what the training example does on resume
    with pytest.warns(UserWarning, match="line 3, the last"):
        records = log.records()
    log.keep([r for r in records if r["step"] < 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log.write({"kind": "train", "step": 2, "loss": 0.4})
    assert path.read_text().splitlines() == [
        '{"kind": "train", "step": 1, "loss": 1.0}', '{"kind": "train", "step": 2, "loss": 0.4}']  # fmt: skip


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


def test_log_writes_tensors_and_numpy_scalars(
    tmp_path: Path, fake_tensorboard: type[FakeWriter]
) -> None:
    log = MetricsLog(tmp_path)
    log.write({"kind": "train", "step": np.int64(4), "loss": torch.tensor(0.5),
               "acc": np.float32(0.25), "bad": np.float32("nan"), "ok": np.bool_(True)})  # fmt: skip
    log.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert (
        text == '{"kind": "train", "step": 4, "loss": 0.5, "acc": 0.25, "bad": null, "ok": true}\n'
    )
    (writer,) = fake_tensorboard.made
    assert writer.scalars == [("train/loss", 0.5, 4), ("train/acc", 0.25, 4)]
    assert all(type(v) is float and type(s) is int for _, v, s in writer.scalars)


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
    # None is what MetricsLog writes for NaN: shown as NaN is
    assert Progress(10).line(10, {"loss": None, "ce": math.nan, "align": 0.5}, 2.0) == (
        "step 10/10 | loss nan ce nan align 0.5 | 5 it/s | ETA 0h00m00s"
    )
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


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_plot_metrics_names_a_record_without_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    records = [{"kind": "train", "step": 1, "loss": 2.0}, {"kind": kind, "loss": 1.0}]
    with pytest.raises(
        ValueError, match=r"^records\[1\] lacks the key 'step' .*'kind': '" + kind + "'"
    ):
        plot_metrics(records, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
    # Checked with or without matplotlib; a record of another kind is not drawn: no step needed.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ValueError, match=r"^records\[1\] lacks the key 'step'"):
        plot_metrics(records, tmp_path / "m.png")
    assert plot_metrics([{"kind": "note", "text": "x"}], tmp_path / "n.png") is False
