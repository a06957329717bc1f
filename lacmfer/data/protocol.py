r"""The leave-one-domain-out protocol of cross-multidomain FER.

Each domain supplies an *adaptation* set (labelled when the domain is a source, unlabelled when it
is the target) and a *test* set. A task takes one domain as the target and the others as sources:

* sources: the adaptation sets of the other domains, concatenated, with a domain id per sample;
* target adaptation set: the target's adaptation set (its labels must not be used in training);
* target test set: the target's test set.

**The published protocol and its flaws.** The six-dataset protocol of LA-CMFER (after DUML) is
reproduced exactly with ``leakage_free=False``. Known flaws an honest evaluation reports
(``docs/guides/datasets.rst``, "The leakage in the published protocol"):

1. the RAF-DB and AffectNet adaptation lists contain their test images (``RAF_train.txt`` holds
   all 3031 images of ``RAF_test.txt`` under the same file names);
2. CK+, JAFFE and Oulu-CASIA use one list for adaptation and test, so the unlabelled target
   images are the test images (transductive evaluation);
3. the published numbers are the best test accuracy over training (model selection on the test
   set) -- report the final-iteration accuracy, and best-over-training only labelled as such;
4. ``Oulu.txt`` lists 507 images two or more times, 1068 extra lines (checked by
   :mod:`lacmfer.data.check`).

``leakage_free=True`` (the default) removes every target test image from the target adaptation
set (matched by sample identity, ``dataset.keys``). Where nothing would remain because both roles
share one list, the list is split instead into disjoint adaptation and test parts, keeping all
images of a subject (CK+ ``S###``, Oulu-CASIA ``P###``, JAFFE's two-letter prefix in its original
file names such as ``KA.AN1.39.tiff``) -- or, where no subject can be read from the path, all copies
of an image -- on the same side. The published ``JAFFE.txt`` renames the images
(``images/surprise_1.jpg``), so no subject can be read from it and its split is per image: images of
one subject can land on both sides. Numbers obtained this way are not comparable with published
ones; the task's ``notes`` say what was done.

The domains are given as a mapping ``name -> DomainSplits(adapt, test)`` of datasets that have
``labels`` (an int64 tensor) and ``keys`` (sample identities): :func:`fer_list_domains` builds it
from the protocol's list files (:data:`FER_LIST_FILES`), and
:func:`lacmfer.data.synthetic.synthetic_domains` from synthetic faces.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from .._checks import check_probability
from .datasets import ImageListDataset
from .labels import canonical_dataset
from .samplers import InfiniteSampler, MultiSourceSampler

__all__ = [
    "FER_LIST_FILES",
    "LAB_DOMAINS",
    "SIX_DOMAINS",
    "DomainSplits",
    "LabelledSubset",
    "LeaveOneDomainOutTask",
    "fer_list_domains",
    "leave_one_domain_out",
    "leave_one_domain_out_tasks",
    "protocol_lists_dir",
    "subject_of",
]

PathLike = Union[str, "os.PathLike[str]"]

SIX_DOMAINS: tuple[str, ...] = ("CK+", "JAFFE", "Oulu-CASIA", "AffectNet", "RAF-DB", "FER-2013")
"""The six datasets of the protocol (``docs/guides/datasets.rst``), lab-controlled first."""

LAB_DOMAINS: tuple[str, ...] = ("CK+", "JAFFE", "Oulu-CASIA")
"""The lab-controlled domains; the other three are in the wild."""

FER_LIST_FILES: dict[str, Optional[tuple[str, str]]] = {
    "CK+": ("CK.txt", "CK.txt"),
    "JAFFE": ("JAFFE.txt", "JAFFE.txt"),
    "Oulu-CASIA": ("Oulu.txt", "Oulu.txt"),
    "AffectNet": None,  # not distributed: pass your own lists (published ones use '\' paths)
    "RAF-DB": ("RAF_train.txt", "RAF_test.txt"),
    "FER-2013": ("FER2013_train.txt", "FER2013_test.txt"),
}
"""Adaptation and test list file names per domain; all but AffectNet's ship with the package
(:func:`protocol_lists_dir`)."""


class DomainSplits(NamedTuple):
    """A domain's adaptation and test datasets (each with ``labels`` and ``keys``)."""

    adapt: Any
    test: Any


class LabelledSubset(Dataset[Any]):
    """A subset of a dataset that keeps its ``labels`` and ``keys``.

    Args:
        dataset: A dataset with ``labels`` (int64 tensor) and ``keys`` (sequence).
        indices: Positions to keep.

    Example:
        >>> from lacmfer.data.synthetic import SyntheticFER
        >>> sub = LabelledSubset(SyntheticFER("ck", 6, image_size=16), [0, 2])
        >>> len(sub), sub.keys
        (2, ['synthetic:CK+:0:0', 'synthetic:CK+:0:2'])
    """

    def __init__(self, dataset: Any, indices: Union[Sequence[int], Tensor]) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        self.labels: Tensor = dataset.labels[self.indices]

    @property
    def keys(self) -> list[Hashable]:
        """Identities of the kept samples."""
        keys = self.dataset.keys
        return [keys[i] for i in self.indices.tolist()]

    def get_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Vectorised batch access when the underlying dataset has ``get_batch``."""
        return self.dataset.get_batch(self.indices[indices])

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]


def protocol_lists_dir() -> pathlib.Path:
    """The folder of the protocol's image lists shipped with the package (``lacmfer/data/protocol_lists``).

    It holds the lists the LA-CMFER authors released for the six-dataset protocol, except
    AffectNet's, which are not public: ``CK.txt``, ``JAFFE.txt``, ``Oulu.txt``, ``RAF_train.txt``,
    ``RAF_test.txt``, ``FER2013_train.txt`` and ``FER2013_test.txt`` (:data:`FER_LIST_FILES`), one
    ``path label`` line per image, labels in RAF-DB order, paths relative to the authors'
    ``../datasets`` folder. Its ``README.md`` lists their known flaws, which
    ``python -m lacmfer.data.check --protocol`` reports. The images are not included.

    Pass it as ``lists_dir`` to :func:`fer_list_domains`, with ``root=`` (the folder holding your
    ``CK+/``, ``JAFFE/``, ... copies) and ``strip_prefix="../datasets"``.

    Returns:
        The folder, a real directory of the installed package.

    Example:
        >>> sorted(p.name for p in protocol_lists_dir().glob("*.txt"))[:3]
        ['CK.txt', 'FER2013_test.txt', 'FER2013_train.txt']
    """
    return pathlib.Path(str(importlib.resources.files("lacmfer.data").joinpath("protocol_lists")))


_SUBJECT_PATTERNS = (
    re.compile(r"(?:^|/)(S\d{3})_\d{3}_"),  # CK+: S010_004_00000017.png
    re.compile(r"(?:^|/)(P\d{3})/"),  # Oulu-CASIA: .../Strong/P001/Anger/014.jpeg
    re.compile(r"(?:^|/)([A-Z]{2})\.[A-Z]{2}\d\.\d+\.\w+$"),  # JAFFE originals: KA.AN1.39.tiff
)


def subject_of(key: Hashable) -> Optional[str]:
    """The subject id in a sample key, if one can be read from it (CK+, Oulu-CASIA, JAFFE).

    Example:
        >>> subject_of("../datasets/CK+/anger/S010_004_00000017.png")
        'S010'
        >>> subject_of("../datasets/Oulu_CASIA/VL/Strong/P001/Anger/014.jpeg")
        'P001'
        >>> subject_of("../datasets/JAFFE/images/surprise_1.jpg") is None
        True
    """
    if not isinstance(key, str):
        return None
    text = key.replace("\\", "/")
    for pattern in _SUBJECT_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


@dataclass
class LeaveOneDomainOutTask:
    """One leave-one-domain-out task.

    Attributes:
        target: The target domain.
        sources: The source domains, in domain-id order.
        source_sets: Their labelled adaptation sets.
        source: ``ConcatDataset`` of ``source_sets``.
        source_labels: ``(N,)`` int64 labels of ``source``.
        domain_ids: ``(N,)`` int64 source id (index into ``sources``) of every sample of ``source``.
        target_adapt: The target adaptation set (do not use its labels for training).
        target_test: The target test set.
        leakage_free: Whether target test images were kept out of ``target_adapt``.
        removed: Number of target adaptation samples dropped because they are test samples.
        notes: What was found and done, in words (overlaps, splits, flaws of the protocol).
    """

    target: str
    sources: tuple[str, ...]
    source_sets: tuple[Any, ...]
    source: ConcatDataset[Any]
    source_labels: Tensor
    domain_ids: Tensor
    target_adapt: Any
    target_test: Any
    leakage_free: bool
    removed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def source_sizes(self) -> list[int]:
        """Number of samples of each source."""
        return [len(s) for s in self.source_sets]

    def source_sampler(self, batch_size: int, **kwargs: Any) -> MultiSourceSampler:
        """A :class:`MultiSourceSampler` over ``source`` (``labels`` filled in)."""
        kwargs.setdefault("labels", self.source_labels)
        return MultiSourceSampler(self.source_sizes, batch_size, **kwargs)

    def target_sampler(self, batch_size: int, **kwargs: Any) -> InfiniteSampler:
        """An :class:`InfiniteSampler` over ``target_adapt``."""
        return InfiniteSampler(len(self.target_adapt), batch_size, **kwargs)

    def split_sources(
        self, fraction: float, *, seed: int = 0
    ) -> tuple[LeaveOneDomainOutTask, ConcatDataset[Any]]:
        """Hold out a share of every source, e.g. to score checkpoints by source accuracy.

        Each source loses ``max(1, round(fraction * n))`` of its ``n`` samples, drawn by one
        generator seeded with ``seed`` (sources in order).

        Args:
            fraction: Share of each source held out, in ``(0, 1)``.
            seed: Seed of the draw.

        Returns:
            The task with the remaining source samples, and the held-out samples pooled.

        Raises:
            ValueError: If ``fraction`` is outside ``(0, 1)`` or would leave a source empty.

        Example:
            >>> from lacmfer.data.synthetic import synthetic_domains
            >>> task = leave_one_domain_out(synthetic_domains(10, 4, image_size=16), "JAFFE")
            >>> train, held = task.split_sources(0.2)
            >>> train.source_sizes, len(held)
            ([8, 8, 8, 8, 8], 10)
        """
        check_probability(fraction, "fraction", high_inclusive=False)
        gen = torch.Generator().manual_seed(seed)
        kept, held = [], []
        for name, ds in zip(self.sources, self.source_sets):
            order = torch.randperm(len(ds), generator=gen)
            cut = max(1, round(fraction * len(ds)))
            if cut >= len(ds):
                raise ValueError(
                    f"`fraction` ({fraction}) would hold out all {len(ds)} samples of {name}"
                )
            held.append(LabelledSubset(ds, order[:cut]))
            kept.append(LabelledSubset(ds, order[cut:]))
        sizes = torch.tensor([len(ds) for ds in kept])
        task = dataclasses.replace(
            self,
            source_sets=tuple(kept),
            source=ConcatDataset(kept),
            source_labels=torch.cat([ds.labels for ds in kept]),
            domain_ids=torch.repeat_interleave(torch.arange(len(kept)), sizes),
        )
        return task, ConcatDataset(held)


def _split_by_group(
    dataset: Any,
    fraction: float,
    group_of: Callable[[Hashable], Optional[Hashable]],
    seed: int,
) -> tuple[list[int], list[int], int]:
    """Disjoint (adapt, test) positions, whole groups on one side, test share ~ ``fraction``;
    and the number of groups."""
    keys = list(dataset.keys)
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        g = group_of(k)
        groups.setdefault(("key", k) if g is None else ("group", g), []).append(i)
    names = sorted(groups, key=repr)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    test: list[int] = []
    adapt: list[int] = []
    goal = fraction * len(keys)
    for j in order:
        members = groups[names[j]]
        (test if len(test) < goal else adapt).extend(members)
    return sorted(adapt), sorted(test), len(names)


def leave_one_domain_out(
    domains: Mapping[str, DomainSplits],
    target: str,
    *,
    leakage_free: bool = True,
    test_fraction: float = 0.5,
    group_of: Callable[[Hashable], Optional[Hashable]] = subject_of,
    seed: int = 0,
) -> LeaveOneDomainOutTask:
    """Build the task with ``target`` as the unlabelled target and the other domains as sources.

    Args:
        domains: ``name -> DomainSplits(adapt, test)``; sources keep the mapping's order.
        target: The target's name (matched case-insensitively, with the usual aliases).
        leakage_free: Keep target test samples out of the adaptation set (see the module
            docstring); ``False`` reproduces the published protocol as it is.
        test_fraction: Share of the list held out for testing when adaptation and test are one
            list and ``leakage_free`` is set.
        group_of: Maps a sample key to its group (subject) for that split; ``None`` groups the
            sample with its own copies only.
        seed: Seed of that split.

    Returns:
        A :class:`LeaveOneDomainOutTask`.

    Note:
        ``leakage_free=False`` is the published protocol with its known flaws (see above): the RAF-DB
        and AffectNet adaptation lists hold their test images, CK+/JAFFE/Oulu-CASIA use one list
        for adaptation and test, and the published numbers are the best test accuracy over
        training. Report final-iteration accuracy, and best-over-training only labelled as such.

    Raises:
        TypeError: If ``target`` is not a string.
        ValueError: If ``target`` is not among ``domains``, fewer than two domains are given,
            ``test_fraction`` is outside ``(0, 1)``, a source's adaptation set or the target's
            adaptation or test set is empty, or the split of a shared list (``leakage_free``)
            would leave no adaptation sample because ``group_of`` puts too many samples in one
            group for ``test_fraction``.

    Example:
        >>> from lacmfer.data.synthetic import synthetic_domains
        >>> doms = synthetic_domains(20, 10, domains=("CK+", "JAFFE", "RAF-DB"), image_size=16)
        >>> task = leave_one_domain_out(doms, "raf")
        >>> task.sources, task.source_sizes, len(task.target_test)
        (('CK+', 'JAFFE'), [20, 20], 10)
    """
    if len(domains) < 2:
        raise ValueError(f"`domains` must hold at least two domains, got {list(domains)}")
    check_probability(test_fraction, "test_fraction", high_inclusive=False)
    names = list(domains)
    name = canonical_dataset(target, names, argument="target")
    sources = tuple(n for n in names if n != name)
    source_sets = tuple(domains[n].adapt for n in sources)
    for n, s in zip(sources, source_sets):
        if len(s) == 0:
            raise ValueError(
                f"source {n} has an empty adaptation set (`domains[{n!r}].adapt` holds no "
                "sample): every source needs labelled samples"
            )
    source_labels = torch.cat([s.labels.to(torch.int64) for s in source_sets])
    domain_ids = torch.repeat_interleave(
        torch.arange(len(sources)), torch.tensor([len(s) for s in source_sets])
    )
    adapt, test = domains[name]
    for role, part, field_name in (("adaptation", adapt, "adapt"), ("test", test, "test")):
        if len(part) == 0:
            raise ValueError(
                f"the target {role} set of {name} is empty: `domains[{name!r}].{field_name}` "
                "holds no sample"
            )
    notes: list[str] = []
    removed = 0
    adapt_keys = list(adapt.keys)
    test_keys = set(test.keys)
    inside = [i for i, k in enumerate(adapt_keys) if k in test_keys]
    same = len(inside) == len(adapt_keys) and len(adapt_keys) > 0
    if inside:
        notes.append(
            f"{name}: the adaptation set holds {len(inside)} of its {len(adapt_keys)} samples "
            f"from the test set ({len(test_keys)} distinct test samples)"
        )
    distinct = len(set(adapt_keys))
    if distinct < len(adapt_keys):
        notes.append(f"{name}: the adaptation set lists {len(adapt_keys) - distinct} duplicates")
    if leakage_free and inside:
        if same:
            keep_a, keep_t, num_groups = _split_by_group(test, test_fraction, group_of, seed)
            if not keep_a:  # the test side takes the first group drawn, so it is never empty
                raise ValueError(
                    f"the target adaptation set of {name} would be empty: its adaptation and "
                    "test sets are one list, which leakage_free=True splits keeping each group "
                    f"of `group_of` on one side; `group_of` puts the list's {len(keep_t)} "
                    f"samples in {num_groups} group{'s' if num_groups != 1 else ''}, and filling "
                    f"the test share (test_fraction={test_fraction}) took all of them. Pass a "
                    "`group_of` with more, smaller groups, a smaller `test_fraction`, or "
                    "leakage_free=False"
                )
            grouped = sum(group_of(k) is not None for k in test.keys)
            if grouped == len(keep_a) + len(keep_t):
                apart = "no shared subject or image"
            elif grouped == 0:
                apart = (
                    "no shared image (no subject id in the paths: the split is per image, so a "
                    "subject can be on both sides)"
                )
            else:
                apart = (
                    f"no shared image, and no shared subject among the {grouped} samples whose "
                    "paths name one"
                )
            adapt, test = LabelledSubset(test, keep_a), LabelledSubset(test, keep_t)
            removed = len(adapt_keys) - len(keep_a)
            notes.append(
                f"{name}: adaptation and test are one list; split it into {len(keep_a)} "
                f"adaptation and {len(keep_t)} test samples with {apart} "
                "(not comparable with published numbers)"
            )
        else:
            keep = [i for i, k in enumerate(adapt_keys) if k not in test_keys]
            adapt = LabelledSubset(adapt, keep)
            removed = len(inside)
            notes.append(f"{name}: removed {removed} test samples from the adaptation set")
    elif inside:
        notes.append(
            f"{name}: published protocol kept as is -- target test samples are part of the "
            "unlabelled adaptation set (transductive, leaks test images)"
        )
    return LeaveOneDomainOutTask(
        target=name,
        sources=sources,
        source_sets=source_sets,
        source=ConcatDataset(list(source_sets)),
        source_labels=source_labels,
        domain_ids=domain_ids,
        target_adapt=adapt,
        target_test=test,
        leakage_free=leakage_free,
        removed=removed,
        notes=notes,
    )


def leave_one_domain_out_tasks(
    domains: Mapping[str, DomainSplits], **kwargs: Any
) -> Iterator[LeaveOneDomainOutTask]:
    """Yield :func:`leave_one_domain_out` for every domain in turn (arguments passed through)."""
    for name in domains:
        yield leave_one_domain_out(domains, name, **kwargs)


def fer_list_domains(
    lists_dir: Optional[PathLike] = None,
    *,
    domains: Sequence[str] = SIX_DOMAINS,
    lists: Optional[Mapping[str, tuple[PathLike, PathLike]]] = None,
    root: Optional[PathLike] = None,
    strip_prefix: Optional[str] = None,
    image_size: Optional[int] = 112,
    **dataset_kwargs: Any,
) -> dict[str, DomainSplits]:
    r"""The protocol's domains as :class:`~lacmfer.data.ImageListDataset` pairs.

    Lists are read now (so malformed lists fail early); images are decoded only when indexed, so
    this works on the lists alone.

    Args:
        lists_dir: Folder holding the list files of :data:`FER_LIST_FILES`.
        domains: Domain names to build, in order.
        lists: ``name -> (adaptation list, test list)`` overriding or adding to the registry --
            needed for AffectNet, whose lists are not distributed (``\`` paths are fine).
        root: Folder the list paths are relative to (default: each list's own folder, as
            published).
        strip_prefix: Prefix removed from every path first (e.g. ``"../datasets"``).
        image_size: Passed to the datasets.
        **dataset_kwargs: Passed to :class:`~lacmfer.data.ImageListDataset`.

    Returns:
        ``name -> DomainSplits(adapt, test)``; one dataset object serves both roles when both
        are the same file.

    Raises:
        TypeError: If a name in ``domains`` or a key of ``lists`` is not a string.
        ValueError: If a name in ``domains`` or a key of ``lists`` is not one of
            :data:`SIX_DOMAINS`, or a domain has no list (AffectNet without ``lists``) or no
            ``lists_dir``.
    """
    extra = {
        canonical_dataset(k, SIX_DOMAINS, argument="lists"): v for k, v in (lists or {}).items()
    }
    out: dict[str, DomainSplits] = {}
    for i, raw in enumerate(domains):
        name = canonical_dataset(raw, SIX_DOMAINS, argument=f"domains[{i}]")
        if name in extra:
            adapt_path, test_path = (os.fspath(p) for p in extra[name])
        else:
            files = FER_LIST_FILES.get(name)
            if files is None:
                raise ValueError(
                    f"no image list for {name}: pass lists={{'{name}': (adapt_list, test_list)}}"
                )
            if lists_dir is None:
                raise ValueError(f"`lists_dir` is needed to find the {name} lists {files}")
            adapt_path, test_path = (os.path.join(os.fspath(lists_dir), f) for f in files)

        def build(path: str) -> ImageListDataset:
            return ImageListDataset(
                path, root, image_size=image_size, strip_prefix=strip_prefix, **dataset_kwargs
            )

        adapt_ds = build(adapt_path)
        same = os.path.abspath(adapt_path) == os.path.abspath(test_path)
        out[name] = DomainSplits(adapt_ds, adapt_ds if same else build(test_path))
    return out
