"""FER data: labels in RAF order, image lists, datasets, augmentation, protocol, samplers.

* :mod:`~lacmfer.data.labels` -- the 7 classes in RAF-DB order and maps from each dataset's
  native labels and folder names.
* :mod:`~lacmfer.data.lists` -- reading ``path label`` image lists exactly as published.
* :mod:`~lacmfer.data.datasets` -- image-list, class-folder and FER-2013 CSV datasets.
* :mod:`~lacmfer.data.image` and :mod:`~lacmfer.data.transforms` -- decoding (Pillow, optional),
  resizing, the paper's batch augmentation and ImageNet normalisation in torch.
* :mod:`~lacmfer.data.check` -- the list checker, ``python -m lacmfer.data.check``.
* :mod:`~lacmfer.data.protocol` -- leave-one-domain-out tasks, leakage-free or as published, and
  the protocol's image lists shipped with the package (:func:`~lacmfer.data.protocol_lists_dir`).
* :mod:`~lacmfer.data.samplers` -- infinite, resumable, rank-sharded multi-source sampling.

Synthetic FER data in the six datasets' styles (procedural faces, no download) lives apart, in
:mod:`lacmfer.data.synthetic`, which this package does not import.

Pillow (``pip install lacmfer[images]``) is needed only to decode image files.
"""

from ._check import (
    ListReport,
    check_image_list,
    check_image_lists,
    check_images,
    check_protocol_lists,
)
from .datasets import (
    FER2013_USAGE,
    FER2013CSV,
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageListDataset,
)
from .image import decode_image, load_image, resize, to_rgb
from .labels import (
    CLASSES,
    DATASET_LABELS,
    NUM_CLASSES,
    UNMAPPED,
    NativeLabels,
    canonical_dataset,
    folder_label,
    native_to_raf,
)
from .lists import (
    ImageList,
    ListEntry,
    MalformedLine,
    class_histogram,
    normalize_list_path,
    parse_image_list,
    read_image_list,
    resolve_list_path,
)
from .protocol import (
    FER_LIST_FILES,
    LAB_DOMAINS,
    SIX_DOMAINS,
    DomainSplits,
    LabelledSubset,
    LeaveOneDomainOutTask,
    fer_list_domains,
    leave_one_domain_out,
    leave_one_domain_out_tasks,
    protocol_lists_dir,
    subject_of,
)
from .samplers import InfiniteSampler, MultiSourceSampler, SourceBatch, sampler_loader
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    FERAugment,
    apply_augment,
    denormalize,
    fer_augment,
    normalize,
    rgb_to_grayscale,
    sample_augment_params,
)

__all__ = [
    "CLASSES",
    "DATASET_LABELS",
    "FER2013CSV",
    "FER2013_USAGE",
    "FER_LIST_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LAB_DOMAINS",
    "NUM_CLASSES",
    "SIX_DOMAINS",
    "UNMAPPED",
    "AugmentParams",
    "DomainSplits",
    "FERAugment",
    "ImageFolderDataset",
    "ImageList",
    "ImageListDataset",
    "InfiniteSampler",
    "LabelledSubset",
    "LeaveOneDomainOutTask",
    "ListEntry",
    "ListReport",
    "MalformedLine",
    "MultiSourceSampler",
    "NativeLabels",
    "SourceBatch",
    "apply_augment",
    "canonical_dataset",
    "check_image_list",
    "check_image_lists",
    "check_images",
    "check_protocol_lists",
    "class_histogram",
    "decode_image",
    "denormalize",
    "fer_augment",
    "fer_list_domains",
    "folder_label",
    "leave_one_domain_out",
    "leave_one_domain_out_tasks",
    "load_image",
    "native_to_raf",
    "normalize",
    "normalize_list_path",
    "parse_image_list",
    "protocol_lists_dir",
    "read_image_list",
    "resize",
    "resolve_list_path",
    "rgb_to_grayscale",
    "sample_augment_params",
    "sampler_loader",
    "subject_of",
    "to_rgb",
]
