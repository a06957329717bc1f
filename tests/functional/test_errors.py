"""Bad inputs and settings raise ValueError/TypeError naming the argument and the shapes."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from lacmfer.functional import (
    cluster_level_alignment,
    dual_level_alignment,
    gaussian_kernel,
    hardness_weights,
    mmd2,
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
    prediction_similarity_matrix,
    refine_pseudo_labels,
    sample_level_alignment,
)

from .cases import random_case

ALIGNMENT = [sample_level_alignment, cluster_level_alignment, dual_level_alignment]


def _args() -> dict[str, Any]:
    c = random_case(0, b_s=6, b_t=5, dim=4, num_classes=3, dtype=torch.float32)
    return {
        "feat_s": c.feat_s,
        "logits_s": c.logits_s,
        "labels_s": c.labels_s,
        "feat_t": c.feat_t,
        "logits_t": c.logits_t,
    }


def _call(fn: Callable[..., Any], args: dict[str, Any], **kwargs: Any) -> Any:
    order = ("feat_s", "logits_s", "labels_s", "feat_t", "logits_t")
    return fn(*(args[k] for k in order), **kwargs)


BAD_INPUTS = [
    # (description, changes, exception, message regex)
    ("feat_s ndim", {"feat_s": torch.randn(6, 4, 1)}, ValueError, r"`feat_s`.*2 dimensions.*\(6, 4, 1\)"),
    ("feat_t ndim", {"feat_t": torch.randn(5)}, ValueError, r"`feat_t`.*2 dimensions.*\(5\)"),
    ("logits_s ndim", {"logits_s": torch.randn(6)}, ValueError, r"`logits_s`.*\(6\)"),
    ("labels ndim", {"labels_s": torch.zeros(6, 1, dtype=torch.long)}, ValueError, r"`labels_s`.*\(6, 1\)"),
    ("batch s", {"logits_s": torch.randn(7, 3)}, ValueError, r"`feat_s`.*\(6, 4\).*`logits_s`.*\(7, 3\)"),
    ("batch labels", {"labels_s": torch.zeros(5, dtype=torch.long)}, ValueError, r"`labels_s`.*\(5\)"),
    ("batch t", {"logits_t": torch.randn(4, 3)}, ValueError, r"`feat_t`.*\(5, 4\).*`logits_t`.*\(4, 3\)"),
    ("feature size", {"feat_t": torch.randn(5, 3)}, ValueError, r"Feature sizes.*`feat_s`.*\(6, 4\).*`feat_t`.*\(5, 3\)"),
    ("K differs", {"logits_t": torch.randn(5, 4)}, ValueError, r"classes.*`logits_s`.*\(6, 3\).*`logits_t`.*\(5, 4\)"),
    ("float labels", {"labels_s": torch.zeros(6)}, TypeError, r"`labels_s`.*integer.*float32"),
    ("bool labels", {"labels_s": torch.zeros(6, dtype=torch.bool)}, TypeError, r"`labels_s`.*integer"),
    ("int feats", {"feat_s": torch.zeros(6, 4, dtype=torch.long)}, TypeError, r"`feat_s`.*floating"),
    ("not a tensor", {"feat_t": [[0.0] * 4] * 5}, TypeError, r"`feat_t`.*torch.Tensor.*list"),
    ("label too big", {"labels_s": torch.tensor([0, 1, 2, 3, 0, 1])}, ValueError, r"`labels_s`.*\[0, 3\).*\[0, 3\]"),
    ("negative label", {"labels_s": torch.tensor([0, -1, 2, 0, 0, 1])}, ValueError, r"`labels_s`.*\[-1, 2\]"),
    ("empty source", {"feat_s": torch.randn(0, 4), "logits_s": torch.randn(0, 3), "labels_s": torch.zeros(0, dtype=torch.long)}, ValueError, r"`feat_s`.*at least one"),
]  # fmt: skip


@pytest.mark.parametrize("fn", ALIGNMENT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("desc, changes, exc, match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_alignment_bad_inputs(
    fn: Callable[..., Any], desc: str, changes: dict[str, Any], exc: type, match: str
) -> None:
    args = _args()
    args.update(changes)
    with pytest.raises(exc, match=match):
        _call(fn, args)


BAD_SETTINGS = [
    ({"threshold": 0.0}, ValueError, r"`threshold`.*\(0, 1\].*0.0"),
    ({"threshold": 1.5}, ValueError, r"`threshold`.*1.5"),
    ({"threshold": float("nan")}, ValueError, r"`threshold`"),
    ({"threshold": "0.4"}, TypeError, r"`threshold`.*str"),
    ({"kernel_num": 0}, ValueError, r"`kernel_num`.*>= 1.*0"),
    ({"kernel_num": 2.5}, TypeError, r"`kernel_num`.*int.*float"),
    ({"kernel_mul": 0.0}, ValueError, r"`kernel_mul`.*> 0"),
    ({"kernel_mul": float("inf")}, ValueError, r"`kernel_mul`.*finite"),
    ({"num_domains": 2}, None, None),  # allowed without domains_s (ignored)
    ({"domains_s": torch.zeros(6, dtype=torch.long)}, ValueError, r"`num_domains` must be given"),
    ({"domains_s": torch.zeros(6, dtype=torch.long), "num_domains": 0}, ValueError, r"`num_domains`"),
    ({"domains_s": torch.tensor([0, 1, 2, 0, 1, 2]), "num_domains": 2}, ValueError, r"`domains_s`.*\[0, 2\)"),
    ({"domains_s": torch.zeros(5, dtype=torch.long), "num_domains": 1}, ValueError, r"`domains_s`.*\(5\)"),
    ({"domains_s": torch.zeros(6), "num_domains": 1}, TypeError, r"`domains_s`.*integer"),
]  # fmt: skip


@pytest.mark.parametrize("settings, exc, match", BAD_SETTINGS)
def test_alignment_bad_settings(settings: dict[str, Any], exc: Any, match: Any) -> None:
    for fn in ALIGNMENT:
        if exc is None:
            _call(fn, _args(), **settings)
            continue
        with pytest.raises(exc, match=match):
            _call(fn, _args(), **settings)


def test_cluster_weight_checked() -> None:
    with pytest.raises(ValueError, match=r"`cluster_weight`.*>= 0"):
        _call(dual_level_alignment, _args(), cluster_weight=-1.0)


def test_label_check_can_be_disabled_and_forced() -> None:
    args = _args()
    args["labels_s"] = torch.tensor([0, 1, 2, 5, 0, 1])
    assert torch.isfinite(_call(dual_level_alignment, args, validate_args=False))
    with pytest.raises(ValueError, match="labels_s"):
        _call(dual_level_alignment, args, validate_args=True)


def test_hardness_weights_errors() -> None:
    a = _args()
    with pytest.raises(ValueError, match=r"`logits_s`.*\(6, 3\).*`logits_t`.*\(5, 4\)"):
        hardness_weights(a["logits_s"], a["labels_s"], torch.randn(5, 4))
    with pytest.raises(TypeError, match="`labels_s`"):
        hardness_weights(a["logits_s"], a["labels_s"].float(), a["logits_t"])
    with pytest.raises(ValueError, match="`labels_s`"):
        hardness_weights(a["logits_s"], a["labels_s"] + 3, a["logits_t"])


def test_kernel_errors() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"Feature sizes.*`x`.*\(4, 3\).*`y`.*\(2, 2\)"):
        gaussian_kernel(x, torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"`x`.*2 dimensions"):
        mmd2(torch.randn(4), x)
    with pytest.raises(ValueError, match=r"`weights_x`.*\(3\).*`x`.*\(4, 3\)"):
        mmd2(x, x, weights_x=torch.ones(3))
    with pytest.raises(ValueError, match=r"`bandwidth`.*> 0"):
        gaussian_kernel(x, bandwidth=0.0)
    with pytest.raises(ValueError, match="`kernel_num`"):
        mmd2(x, x, kernel_num=0)


VIEW_FNS = [
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
    prediction_similarity_matrix,
    refine_pseudo_labels,
]


@pytest.mark.parametrize("fn", VIEW_FNS, ids=lambda f: f.__name__)
def test_view_errors(fn: Callable[..., Any]) -> None:
    z = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"`logits_g`.*2 dimensions.*\(5\)"):
        fn(torch.randn(5), z)
    with pytest.raises(
        ValueError, match=r"Batch sizes.*`logits_g`.*\(5, 3\).*`logits_l`.*\(4, 3\)"
    ):
        fn(z, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"classes.*`logits_g`.*\(5, 3\).*`logits_l`.*\(5, 2\)"):
        fn(z, torch.randn(5, 2))
    with pytest.raises(TypeError, match=r"`logits_l`.*floating"):
        fn(z, torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`logits_g`.*at least one"):
        fn(torch.randn(0, 3), torch.randn(0, 3))


@pytest.mark.parametrize("fn", [refine_pseudo_labels, multi_view_pseudo_label_loss])
def test_refiner_threshold_errors(fn: Callable[..., Any]) -> None:
    z = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"`threshold`.*\(0, 1\]"):
        fn(z, z, threshold=0.0)
    with pytest.raises(ValueError, match="`threshold`"):
        fn(z, z, threshold=1.01)
