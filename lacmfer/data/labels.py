r"""The 7-class FER label space in RAF-DB order and maps from each dataset's native labels.

Every label in :mod:`lacmfer` is an index into :data:`CLASSES`, the seven basic expressions in the
order of RAF-DB's ``list_patition_label.txt`` (1-based there, 0-based here):
``0 Surprise, 1 Fear, 2 Disgust, 3 Happiness, 4 Sadness, 5 Anger, 6 Neutral``.

The datasets of the cross-domain FER literature number their classes differently. The tables below
give each dataset's native order and its map to RAF order; a native class without a RAF counterpart
(AffectNet's contempt, none, uncertain and no-face codes; CK+'s contempt) maps to ``None`` and is
rejected or skipped, never silently merged into another class.

========== ===================================================================== ==========================
dataset    native order (code: name)                                             source
========== ===================================================================== ==========================
RAF-DB     1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger,       RAF-DB basic
           7 Neutral                                                             ``list_patition_label.txt``
FER-2013   0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral     ``fer2013.csv`` (Kaggle)
AffectNet  0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger,    AffectNet manual
           7 Contempt, 8 None, 9 Uncertain, 10 No-Face                           annotations
CK+        0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy,           CK+ ``Emotion/*.txt``
           6 sadness, 7 surprise
ExpW       0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral     ExpW ``label.lst``
JAFFE      file-name codes AN, DI, FE, HA, NE, SA, SU                            JAFFE file names
Oulu-CASIA folders Anger, Disgust, Fear, Happiness, Sadness, Surprise            Oulu-CASIA VL/NI folders
SFEW 2.0   folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise           SFEW 2.0 folders
========== ===================================================================== ==========================

The FER-2013 map is checked by the class histograms of the protocol's lists: ``FER2013_train.txt``
in RAF order has exactly the Kaggle training counts (Angry 3995, Disgust 436, Fear 4097, Happy 7215,
Sad 4830, Surprise 3171, Neutral 4965) and ``FER2013_test.txt`` those of the *PrivateTest* split.
The folder names used by the published CK+, JAFFE and Oulu-CASIA lists (including CK+'s misspelt
``netural`` folder) are checked against the labels written next to them by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .._checks import check_choice, check_labels

__all__ = [
    "CLASSES",
    "DATASET_LABELS",
    "NUM_CLASSES",
    "UNMAPPED",
    "NativeLabels",
    "canonical_dataset",
    "folder_label",
    "native_to_raf",
]

CLASSES: tuple[str, ...] = (
    "Surprise",
    "Fear",
    "Disgust",
    "Happiness",
    "Sadness",
    "Anger",
    "Neutral",
)
"""The seven class names in RAF-DB order; a label is an index into this tuple."""

NUM_CLASSES: int = len(CLASSES)
"""Number of classes, 7."""

UNMAPPED: int = -1
"""Value written by :func:`native_to_raf` (``unmapped="mark"``) for classes without a RAF class."""

# RAF indices, named for readability of the tables below.
_SU, _FE, _DI, _HA, _SA, _AN, _NE = range(7)


@dataclass(frozen=True)
class NativeLabels:
    """A dataset's native label codes and their map to RAF order.

    Attributes:
        dataset: Canonical dataset name.
        names: Native class names, in native code order starting at ``first_code``.
        to_raf: RAF index of each native class (``None``: no RAF class).
        first_code: Integer code of ``names[0]`` (1 for RAF-DB, 0 elsewhere).
        source: Where the native order is defined.
    """

    dataset: str
    names: tuple[str, ...]
    to_raf: tuple[Optional[int], ...]
    first_code: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.names) != len(self.to_raf):
            raise ValueError(
                f"`names` and `to_raf` must have the same length, got {len(self.names)} and "
                f"{len(self.to_raf)}"
            )

    @property
    def codes(self) -> range:
        """The valid native integer codes."""
        return range(self.first_code, self.first_code + len(self.names))

    def lookup_table(self) -> Tensor:
        """Return the ``(len(names),)`` int64 table native index -> RAF index (:data:`UNMAPPED`)."""
        return torch.tensor([UNMAPPED if r is None else r for r in self.to_raf], dtype=torch.int64)


DATASET_LABELS: Mapping[str, NativeLabels] = {
    "RAF-DB": NativeLabels(
        "RAF-DB",
        ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"),
        (_SU, _FE, _DI, _HA, _SA, _AN, _NE),
        first_code=1,
        source="RAF-DB basic emotion list_patition_label.txt (labels 1-7)",
    ),
    "FER-2013": NativeLabels(
        "FER-2013",
        ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"),
        (_AN, _DI, _FE, _HA, _SA, _SU, _NE),
        source="fer2013.csv 'emotion' column (Goodfellow et al., 2013; Kaggle challenge)",
    ),
    "AffectNet": NativeLabels(
        "AffectNet",
        (
            "Neutral",
            "Happy",
            "Sad",
            "Surprise",
            "Fear",
            "Disgust",
            "Anger",
            "Contempt",
            "None",
            "Uncertain",
            "No-Face",
        ),
        (_NE, _HA, _SA, _SU, _FE, _DI, _AN, None, None, None, None),
        source="AffectNet manual annotations 'expression' (Mollahosseini et al., 2017)",
    ),
    "CK+": NativeLabels(
        "CK+",
        ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
        (_NE, _AN, None, _DI, _FE, _HA, _SA, _SU),
        source="CK+ Emotion/*.txt codes (Lucey et al., 2010); 0 = neutral frames",
    ),
    "ExpW": NativeLabels(
        "ExpW",
        ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
        (_AN, _DI, _FE, _HA, _SA, _SU, _NE),
        source="ExpW label.lst expression_label (Zhang et al., 2018)",
    ),
    "JAFFE": NativeLabels(
        "JAFFE",
        ("AN", "DI", "FE", "HA", "NE", "SA", "SU"),
        (_AN, _DI, _FE, _HA, _NE, _SA, _SU),
        source="JAFFE file-name codes, e.g. KA.AN1.39.tiff (Lyons et al., 1998); codes sorted",
    ),
    "Oulu-CASIA": NativeLabels(
        "Oulu-CASIA",
        ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise"),
        (_AN, _DI, _FE, _HA, _SA, _SU),
        source="Oulu-CASIA VL/NI expression folders (Zhao et al., 2011); no neutral class",
    ),
    "SFEW": NativeLabels(
        "SFEW",
        ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"),
        (_AN, _DI, _FE, _HA, _NE, _SA, _SU),
        source="SFEW 2.0 folders (Dhall et al., 2011); alphabetical = torchvision ImageFolder order",
    ),
}
"""Native label orders of the FER datasets, keyed by canonical name (see the module table)."""

_DATASET_ALIASES: dict[str, str] = {
    "raf": "RAF-DB",
    "rafdb": "RAF-DB",
    "fer2013": "FER-2013",
    "fer": "FER-2013",
    "affectnet": "AffectNet",
    "ck": "CK+",
    "ckplus": "CK+",
    "ck+": "CK+",
    "expw": "ExpW",
    "jaffe": "JAFFE",
    "oulu": "Oulu-CASIA",
    "oulucasia": "Oulu-CASIA",
    "sfew": "SFEW",
    "sfew2": "SFEW",
    "sfew20": "SFEW",
}


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


def canonical_dataset(
    name: str, choices: Optional[Sequence[str]] = None, *, argument: str = "name"
) -> str:
    """Return the canonical spelling of a dataset name (case, ``-``/``_``/``.`` and spaces ignored).

    Accepted aliases include ``"ck"``, ``"ckplus"``, ``"raf"``, ``"rafdb"``, ``"fer"``,
    ``"fer2013"``, ``"oulu"``, ``"oulu_casia"``, ``"sfew2.0"``.

    Args:
        name: Any common spelling.
        choices: Canonical names to accept (default: those of :data:`DATASET_LABELS`).
        argument: The argument the error messages name: a function that checks one of its own
            arguments here passes that argument's name (e.g. ``"target"``).

    Returns:
        The canonical name, e.g. ``"CK+"``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If the name is unknown or not among ``choices``.

    Example:
        >>> canonical_dataset("raf"), canonical_dataset("Oulu_CASIA"), canonical_dataset("fer2013")
        ('RAF-DB', 'Oulu-CASIA', 'FER-2013')
    """
    if not isinstance(name, str):
        raise TypeError(f"`{argument}` must be a dataset name (str), got {type(name).__name__}")
    allowed = tuple(DATASET_LABELS) if choices is None else tuple(choices)
    key = _squash(name)
    table = {_squash(c): c for c in allowed}
    canonical = table.get(key)
    if canonical is None:
        alias = _DATASET_ALIASES.get(key) or _DATASET_ALIASES.get(key.replace("+", ""))
        if alias in allowed:
            canonical = alias
    if canonical is None:
        raise ValueError(f"`{argument}` must name one of {', '.join(allowed)}; got {name!r}")
    return canonical


def native_to_raf(
    labels: Union[Tensor, Sequence[int], int], dataset: str, *, unmapped: str = "raise"
) -> Tensor:
    """Map native integer labels of ``dataset`` to RAF order.

    Args:
        labels: Native codes (a tensor of any shape, a sequence or one int).
        dataset: Dataset name (see :func:`canonical_dataset`); RAF-DB codes are 1-based.
        unmapped: ``"raise"`` to reject codes without a RAF class (AffectNet 7-10, CK+ 2) or
            ``"mark"`` to write :data:`UNMAPPED` (-1) for them so the caller can drop them.

    Shape:
        - labels: any shape.
        - output: same shape, int64.

    Returns:
        Labels in RAF order.

    Raises:
        TypeError: If ``dataset`` is not a string.
        ValueError: On an unknown ``dataset``, a code outside the dataset's range, or an unmapped
            code with ``unmapped="raise"``.

    Example:
        >>> native_to_raf([0, 1, 2, 3, 4, 5, 6], "FER-2013").tolist()
        [5, 2, 1, 3, 4, 0, 6]
        >>> native_to_raf([0, 7, 1], "AffectNet", unmapped="mark").tolist()
        [6, -1, 3]
    """
    check_choice(unmapped, "unmapped", ("raise", "mark"))
    spec = DATASET_LABELS[canonical_dataset(dataset, argument="dataset")]
    x = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    check_labels(x, "labels", ndim=x.ndim, axes="")
    x = x.to(torch.int64)
    if x.numel() == 0:
        return x.clone()
    index = x - spec.first_code
    bad = (index < 0) | (index >= len(spec.names))
    if bool(bad.any()):
        raise ValueError(
            f"`labels` must hold {spec.dataset} codes in [{spec.codes.start}, {spec.codes.stop - 1}]"
            f", got {sorted(set(x[bad].tolist()))[:10]}"
        )
    out = spec.lookup_table().to(x.device)[index]
    if unmapped == "raise" and bool((out == UNMAPPED).any()):
        codes = sorted(set(x[out == UNMAPPED].tolist()))
        names = [spec.names[c - spec.first_code] for c in codes]
        raise ValueError(
            f"`labels` holds {spec.dataset} codes {codes} ({', '.join(names)}) that have no class "
            f"among the 7 RAF-DB classes; pass unmapped='mark' to mark them {UNMAPPED} and drop them"
        )
    return out


# Folder names and file-name prefixes in common use -> RAF index (None: no RAF class).
_FOLDER_NAMES: dict[str, Optional[int]] = {
    **dict.fromkeys(("surprise", "surprised", "surprising", "su", "sur"), _SU),
    **dict.fromkeys(("fear", "fearful", "afraid", "scared", "fe", "fea"), _FE),
    **dict.fromkeys(("disgust", "disgusted", "disgusting", "di", "dis"), _DI),
    **dict.fromkeys(("happy", "happiness", "joy", "smile", "ha", "hap"), _HA),
    **dict.fromkeys(("sad", "sadness", "sa"), _SA),
    **dict.fromkeys(("anger", "angry", "mad", "an", "ang"), _AN),
    # "netural" is the (misspelt) CK+ folder of the published lists.
    **dict.fromkeys(("neutral", "netural", "neutrality", "calm", "ne", "neu"), _NE),
    **dict.fromkeys(("contempt", "contemptuous", "co"), None),
}


def folder_label(name: str) -> Optional[int]:
    """RAF index of an expression folder name or file-name prefix (case-insensitive).

    Recognised names include ``surprise/surprised``, ``fear/fearful``, ``disgust/disgusted``,
    ``happy/happiness``, ``sad/sadness``, ``anger/angry``, ``neutral`` (and CK+'s ``netural``),
    JAFFE's two-letter codes ``SU FE DI HA SA AN NE`` and file prefixes such as ``surprise_1.jpg``
    or ``KA.AN1.39.tiff``. Contempt has no RAF class and gives ``None``.

    Args:
        name: A folder name or a file name.

    Returns:
        The RAF index, or ``None`` for contempt.

    Raises:
        ValueError: If the name is not an expression name.

    Example:
        >>> folder_label("Happiness"), folder_label("angry"), folder_label("netural")
        (3, 5, 6)
        >>> folder_label("surprise_10.jpg"), folder_label("KA.AN1.39.tiff"), folder_label("contempt")
        (0, 5, None)
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _FOLDER_NAMES:
        return _FOLDER_NAMES[key]
    # File names: "surprise_1.jpg", "happy-03.png", JAFFE "KA.AN1.39.tiff".
    stem = key.rsplit("/", 1)[-1]
    parts = [p for p in _split_tokens(stem) if p]
    for part in parts:
        head = part.rstrip("0123456789")
        if head in _FOLDER_NAMES:
            return _FOLDER_NAMES[head]
    raise ValueError(f"`name` is not an expression folder or file name: {name!r}")


def _split_tokens(stem: str) -> list[str]:
    out = [stem]
    for sep in ("_", "-", ".", " "):
        out = [piece for chunk in out for piece in chunk.split(sep)]
    return out
