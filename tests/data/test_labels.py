"""Label space and the native-label maps, checked by names, by the published lists and by counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lacmfer.data import (
    CLASSES,
    DATASET_LABELS,
    NUM_CLASSES,
    UNMAPPED,
    canonical_dataset,
    class_histogram,
    folder_label,
    native_to_raf,
    parse_image_list,
)

# An independent synonym table: any spelling -> the RAF class name (written for the test).
SYNONYM = {
    "surprise": "Surprise",
    "su": "Surprise",
    "fear": "Fear",
    "fe": "Fear",
    "disgust": "Disgust",
    "di": "Disgust",
    "happy": "Happiness",
    "happiness": "Happiness",
    "ha": "Happiness",
    "sad": "Sadness",
    "sadness": "Sadness",
    "sa": "Sadness",
    "angry": "Anger",
    "anger": "Anger",
    "an": "Anger",
    "neutral": "Neutral",
    "ne": "Neutral",
}
NO_RAF_CLASS = {"contempt", "none", "uncertain", "no-face"}


def test_classes_in_raf_order() -> None:
    assert CLASSES == ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
    assert NUM_CLASSES == 7


@pytest.mark.parametrize("dataset", sorted(DATASET_LABELS))
def test_every_map_agrees_with_the_class_names(dataset: str) -> None:
    spec = DATASET_LABELS[dataset]
    for name, raf in zip(spec.names, spec.to_raf):
        if name.lower() in NO_RAF_CLASS:
            assert raf is None, f"{dataset}: {name} must have no RAF class"
        else:
            assert raf is not None and CLASSES[raf] == SYNONYM[name.lower()], (dataset, name)
    # Each RAF class is reached exactly once (Oulu-CASIA has no neutral class).
    mapped = sorted(r for r in spec.to_raf if r is not None)
    expected = [k for k in range(7) if not (dataset == "Oulu-CASIA" and CLASSES[k] == "Neutral")]
    assert mapped == expected


# The native orders as the brief and the datasets' documentation state them, transcribed
# independently of the module: native code -> RAF index.
EXPECTED = {
    "RAF-DB": {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6},
    "FER-2013": {0: 5, 1: 2, 2: 1, 3: 3, 4: 4, 5: 0, 6: 6},
    "ExpW": {0: 5, 1: 2, 2: 1, 3: 3, 4: 4, 5: 0, 6: 6},
    "AffectNet": {0: 6, 1: 3, 2: 4, 3: 0, 4: 1, 5: 2, 6: 5},
    "CK+": {0: 6, 1: 5, 3: 2, 4: 1, 5: 3, 6: 4, 7: 0},
    "SFEW": {0: 5, 1: 2, 2: 1, 3: 3, 4: 6, 5: 4, 6: 0},
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_native_to_raf_matches_the_transcription(dataset: str) -> None:
    codes = sorted(EXPECTED[dataset])
    got = native_to_raf(torch.tensor(codes), dataset).tolist()
    assert got == [EXPECTED[dataset][c] for c in codes]


@pytest.mark.parametrize(("dataset", "code"), [("AffectNet", 7), ("AffectNet", 10), ("CK+", 2)])
def test_unmapped_codes_are_rejected_or_marked(dataset: str, code: int) -> None:
    with pytest.raises(ValueError, match="no class among the 7 RAF-DB classes"):
        native_to_raf([0, code], dataset)
    assert native_to_raf([code, 1], dataset, unmapped="mark").tolist()[0] == UNMAPPED


@pytest.mark.parametrize(("dataset", "code"), [("FER-2013", 7), ("FER-2013", -1), ("RAF-DB", 0)])
def test_codes_outside_the_native_range_raise(dataset: str, code: int) -> None:
    with pytest.raises(ValueError, match=r"codes in \["):
        native_to_raf([code], dataset)


def test_native_to_raf_keeps_shape_and_device_and_rejects_floats() -> None:
    x = torch.tensor([[0, 1], [2, 3]])
    assert native_to_raf(x, "fer2013").shape == (2, 2)
    assert native_to_raf(torch.empty(0, dtype=torch.int64), "FER-2013").numel() == 0
    with pytest.raises(TypeError, match="integer tensor"):
        native_to_raf(torch.tensor([0.0]), "FER-2013")
    with pytest.raises(ValueError, match="unmapped"):
        native_to_raf([0], "FER-2013", unmapped="drop")


def test_jaffe_codes_and_oulu_folders() -> None:
    spec = DATASET_LABELS["JAFFE"]
    for code, name in zip(spec.codes, spec.names):
        assert native_to_raf([code], "JAFFE").item() == folder_label(name)
    oulu = DATASET_LABELS["Oulu-CASIA"]
    assert [folder_label(n) for n in oulu.names] == list(oulu.to_raf)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("anger", 5),
        ("Angry", 5),
        ("HAPPY", 3),
        ("happiness", 3),
        ("sad", 4),
        ("Sadness", 4),
        ("surprised", 0),
        ("Surprise", 0),
        ("fear", 1),
        ("disgust", 2),
        ("Neutral", 6),
        ("netural", 6),  # CK+ folder of the published list, misspelt
        ("SU", 0),
        ("surprise_10.jpg", 0),
        ("KA.AN1.39.tiff", 5),
        ("YM.NE2.50.tiff", 6),
        ("contempt", None),
    ],
)
def test_folder_label(name: str, label: int | None) -> None:
    assert folder_label(name) == label


@pytest.mark.parametrize("name", ["P001", "S010_004_00000017.png", "images", ""])
def test_folder_label_rejects_other_names(name: str) -> None:
    with pytest.raises(ValueError, match="not an expression"):
        folder_label(name)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ck", "CK+"),
        ("CK+", "CK+"),
        ("ckplus", "CK+"),
        ("raf", "RAF-DB"),
        ("RAF_DB", "RAF-DB"),
        ("fer2013", "FER-2013"),
        ("FER-2013", "FER-2013"),
        ("oulu", "Oulu-CASIA"),
        ("oulu_casia", "Oulu-CASIA"),
        ("affectnet", "AffectNet"),
        ("SFEW 2.0", "SFEW"),
    ],
)
def test_canonical_dataset(alias: str, name: str) -> None:
    assert canonical_dataset(alias) == name


def test_canonical_dataset_errors() -> None:
    with pytest.raises(ValueError, match="must name one of"):
        canonical_dataset("mnist")
    with pytest.raises(ValueError, match="must name one of CK\\+"):
        canonical_dataset("raf", ["CK+"])
    with pytest.raises(TypeError, match="dataset name"):
        canonical_dataset(3)  # type: ignore[arg-type]


def test_canonical_dataset_names_the_callers_argument() -> None:
    with pytest.raises(ValueError, match=r"^`name` must name one of .*; got 'mnist'$"):
        canonical_dataset("mnist")
    with pytest.raises(ValueError, match=r"^`domain` must name one of CK\+; got 'raf'$"):
        canonical_dataset("raf", ["CK+"], argument="domain")
    with pytest.raises(TypeError, match=r"^`domain` must be a dataset name \(str\), got int$"):
        canonical_dataset(3, argument="domain")  # type: ignore[arg-type]
    # Functions that check a dataset name through it name their own argument.
    with pytest.raises(ValueError, match=r"^`dataset` must name one of .*; got 'mnist'$"):
        native_to_raf([0], "mnist")
    with pytest.raises(TypeError, match=r"^`dataset` must be a dataset name"):
        native_to_raf([0], 7)  # type: ignore[arg-type]


# --- against the published lists ---------------------------------------------------------------


def _lines(path: Path) -> list[tuple[str, int]]:
    return [(e.path, e.label) for e in parse_image_list(path).entries]


def test_fer2013_map_reproduces_the_list_histograms(fer_lists: Path) -> None:
    # Kaggle fer2013.csv counts in FER-2013's native order (Angry, Disgust, Fear, Happy, Sad,
    # Surprise, Neutral): Training and PrivateTest.
    training = [3995, 436, 4097, 7215, 4830, 3171, 4965]
    private = [491, 55, 528, 879, 594, 416, 626]
    for counts, name in ((training, "FER2013_train.txt"), (private, "FER2013_test.txt")):
        native = torch.repeat_interleave(torch.arange(7), torch.tensor(counts))
        expected = class_histogram(native_to_raf(native, "FER-2013"))
        got = class_histogram([y for _, y in _lines(fer_lists / name)])
        assert got == expected, name


def test_published_folder_names_match_their_labels(fer_lists: Path) -> None:
    for name, part in (("CK.txt", -2), ("Oulu.txt", -2)):
        for path, label in _lines(fer_lists / name):
            assert folder_label(path.split("/")[part]) == label, (name, path)
    for path, label in _lines(fer_lists / "JAFFE.txt"):
        assert folder_label(path.split("/")[-1]) == label, path
