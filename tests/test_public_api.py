"""The public API: the names of the method's API import, every ``__all__`` is sorted and importable."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

import lacmfer

PACKAGES = [
    "lacmfer.functional",
    "lacmfer.losses",
    "lacmfer.modules",
    "lacmfer.data",
    "lacmfer.data.synthetic",
    "lacmfer.validation",
    "lacmfer.analysis",
    "lacmfer.utils",
]


def test_spec_names_import() -> None:
    from lacmfer.functional import (  # noqa: F401
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
    from lacmfer.losses import (  # noqa: F401
        DualLevelInterDomainAlignment,
        MultiViewClusteringConsistency,
        PseudoLabelRefiner,
    )
    from lacmfer.modules import LocalPatchBranch  # noqa: F401
    from lacmfer.validation import (  # noqa: F401
        agreement_score,
        bnm_score,
        entropy_score,
        im_score,
        snd_score,
    )


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_importable(name: str) -> None:
    # Its order (isort style: constants, classes, functions) is enforced by ruff's RUF022.
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported, f"{name}.__all__ is empty"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_callables_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__.strip()) > 20, f"{name}.{attr} lacks a docstring"


def test_version_and_typed_marker() -> None:
    assert isinstance(lacmfer.__version__, str) and lacmfer.__version__.count(".") == 2
    assert (pathlib.Path(lacmfer.__file__).parent / "py.typed").exists()


def test_no_torchvision_import() -> None:
    root = pathlib.Path(lacmfer.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import torchvision" not in text and "from torchvision" not in text, path


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical."""
    if re.fullmatch(r"[A-Z0-9_]+", name) and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_modules_api() -> None:
    import lacmfer.functional
    import lacmfer.modules

    names = lacmfer.modules.__all__
    assert names == sorted(names, key=_isort_key)
    for name in names:
        obj = getattr(lacmfer.modules, name)
        if callable(obj):  # classes and functions; constants such as SHARE_MODES have no module
            assert obj.__module__.startswith("lacmfer.modules"), name
    for name in ("CBAM", "AttentionBasicBlock", "ResNet18Encoder", "GlobalBranch"):
        assert name in names
    assert {"LocalPatchBranch", "LACMFER", "LACMFEROutput"} <= set(names)
    # The patch split/merge of the local branch are functions of lacmfer.functional.
    split, merge = lacmfer.functional.split_patches, lacmfer.functional.merge_patches
    assert split.__module__ == merge.__module__ == "lacmfer.functional._patches"
