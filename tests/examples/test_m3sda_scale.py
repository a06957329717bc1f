"""``examples/benchmark/m3sda_scale.py``: the authors' form of the moment term, by hand."""

from __future__ import annotations

import math

import m3sda_scale
import pytest
import torch


def test_authors_form_sums_every_pair_of_means_and_centred_moments() -> None:
    feat_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
    domains = torch.tensor([0, 0, 1, 1])
    feat_t = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    # means: s0 (1, 0), s1 (1, 2), t (1, 1): |s0-t| + |s1-t| + |s0-s1| = 1 + 1 + 2
    assert m3sda_scale.authors_form(feat_s, domains, feat_t, moments=1) == pytest.approx(4.0)
    # centred second moments: s0 (1, 0), s1 (0, 1), t (0, 1): sqrt(2) + 0 + sqrt(2)
    want = 4.0 + 2 * math.sqrt(2.0)
    assert m3sda_scale.authors_form(feat_s, domains, feat_t, moments=2) == pytest.approx(want)


def test_prints_both_forms(capsys: pytest.CaptureFixture[str]) -> None:
    assert m3sda_scale.main(["--encoder", "none", "--images", "12", "--batch-size", "10"]) == 0
    out = capsys.readouterr().out
    assert out.count("ratio") == 2 and "source cross-entropy" in out
