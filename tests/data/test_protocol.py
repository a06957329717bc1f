"""Leave-one-domain-out tasks on the real lists and on synthetic data, leakage-free or published."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lacmfer.data import (
    SIX_DOMAINS,
    DomainSplits,
    LabelledSubset,
    fer_list_domains,
    leave_one_domain_out,
    leave_one_domain_out_tasks,
    subject_of,
)
from lacmfer.data.synthetic import synthetic_domains

FIVE = ("CK+", "JAFFE", "Oulu-CASIA", "RAF-DB", "FER-2013")


@pytest.fixture(scope="module")
def real(fer_lists: Path) -> dict[str, DomainSplits]:
    return fer_list_domains(fer_lists, domains=FIVE)


def _keys(ds: object) -> list[object]:
    return list(ds.keys)  # type: ignore[attr-defined]


def test_registry_builds_the_real_domains(real: dict[str, DomainSplits]) -> None:
    sizes = {n: (len(s.adapt), len(s.test)) for n, s in real.items()}
    assert sizes == {
        "CK+": (1050, 1050),
        "JAFFE": (213, 213),
        "Oulu-CASIA": (2988, 2988),
        "RAF-DB": (15206, 3031),
        "FER-2013": (28709, 3589),
    }
    assert real["CK+"].adapt is real["CK+"].test  # one list, one dataset


def test_affectnet_needs_user_lists(fer_lists: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image list for AffectNet"):
        fer_list_domains(fer_lists, domains=("AffectNet",))
    # User lists in the published style: Windows separators, test images inside the train list.
    (tmp_path / "an_train.txt").write_bytes(b"..\\AN\\0\\a.jpg 6\r\n..\\AN\\1\\b.jpg 3\r\n")
    (tmp_path / "an_test.txt").write_bytes(b"../AN/1/b.jpg 3\r\n../AN/2/c.jpg 4\r\n")
    doms = fer_list_domains(
        fer_lists,
        domains=("JAFFE", "affectnet"),
        lists={"AffectNet": (tmp_path / "an_train.txt", tmp_path / "an_test.txt")},
    )
    task = leave_one_domain_out(doms, "AffectNet")
    assert task.removed == 1 and len(task.target_adapt) == 1
    assert task.target_adapt.labels.tolist() == [6]
    with pytest.raises(ValueError, match="lists_dir"):
        fer_list_domains(domains=("CK+",))
    with pytest.raises(ValueError, match=r"^`domains\[1\]` must name one of .*; got 'mnist'$"):
        fer_list_domains(fer_lists, domains=("CK+", "mnist"))
    with pytest.raises(ValueError, match=r"^`lists` must name one of .*; got 'SFEW'$"):
        fer_list_domains(fer_lists, domains=("CK+",), lists={"SFEW": ("a.txt", "b.txt")})


def test_raf_target_leakage_free_and_published(real: dict[str, DomainSplits]) -> None:
    free = leave_one_domain_out(real, "raf")
    assert free.target == "RAF-DB" and free.sources == ("CK+", "JAFFE", "Oulu-CASIA", "FER-2013")
    assert free.removed == 3031 and len(free.target_adapt) == 15206 - 3031
    assert not set(_keys(free.target_adapt)) & set(_keys(free.target_test))
    assert len(free.target_test) == 3031
    assert any("removed 3031" in n for n in free.notes)
    pub = leave_one_domain_out(real, "RAF-DB", leakage_free=False)
    assert len(pub.target_adapt) == 15206 and pub.removed == 0
    assert len(set(_keys(pub.target_adapt)) & set(_keys(pub.target_test))) == 3031
    assert any("published protocol kept as is" in n for n in pub.notes)


def test_sources_domain_ids_and_sampler(real: dict[str, DomainSplits]) -> None:
    task = leave_one_domain_out(real, "FER-2013")
    assert task.source_sizes == [1050, 213, 2988, 15206]
    assert len(task.source) == sum(task.source_sizes) == task.domain_ids.shape[0]
    ref_ids = torch.cat([torch.full((n,), d) for d, n in enumerate(task.source_sizes)])
    assert torch.equal(task.domain_ids, ref_ids)
    ref_labels = torch.cat([s.labels for s in task.source_sets])
    assert torch.equal(task.source_labels, ref_labels)
    sampler = task.source_sampler(32, mode="balanced", class_balanced=True)
    b = sampler.sample()
    assert torch.equal(b.domains, task.domain_ids[b.indices])
    assert torch.bincount(b.domains, minlength=4).tolist() == [8, 8, 8, 8]
    assert task.target_sampler(16).sample().shape == (16,)
    assert task.removed == 0 and not task.notes  # FER-2013 train and test are disjoint


@pytest.mark.parametrize("target", ["CK+", "JAFFE", "Oulu-CASIA"])
def test_same_list_domains_are_split_without_leakage(
    real: dict[str, DomainSplits], target: str
) -> None:
    task = leave_one_domain_out(real, target, seed=3)
    n = len(real[target].test)
    adapt, test = _keys(task.target_adapt), _keys(task.target_test)
    assert len(adapt) + len(test) == n
    assert not set(adapt) & set(test)
    assert 0.4 < len(test) / n < 0.6
    subjects_a = {subject_of(k) for k in adapt} - {None}
    subjects_t = {subject_of(k) for k in test} - {None}
    assert not subjects_a & subjects_t
    if target != "JAFFE":  # CK+ and Oulu paths name their subjects
        assert len(subjects_a) > 5 and len(subjects_t) > 5
    assert any("split it" in note for note in task.notes)
    again = leave_one_domain_out(real, target, seed=3)
    assert _keys(again.target_test) == test  # seeded
    published = leave_one_domain_out(real, target, leakage_free=False)
    assert _keys(published.target_adapt) == _keys(published.target_test)
    if target == "Oulu-CASIA":
        assert any("1068 duplicates" in note for note in published.notes)


def test_synthetic_tasks() -> None:
    doms = synthetic_domains(12, 6, image_size=16, seed=0)
    assert tuple(doms) == SIX_DOMAINS
    tasks = list(leave_one_domain_out_tasks(doms))
    assert [t.target for t in tasks] == list(SIX_DOMAINS)
    for t in tasks:
        assert len(t.sources) == 5 and t.target not in t.sources
        assert t.source_sizes == [12] * 5 and len(t.target_test) == 6
        assert t.removed == 0 and not t.notes
        image, label = t.source[13]
        assert image.shape == (3, 16, 16) and 0 <= label < 7
        assert int(t.domain_ids[13]) == 1


def test_subject_of() -> None:
    assert subject_of("../datasets/CK+/anger/S010_004_00000017.png") == "S010"
    assert subject_of("..\\Oulu_CASIA\\VL\\Strong\\P080\\Fear\\1.jpeg") == "P080"
    assert subject_of("/data/jaffe/KA.AN1.39.tiff") == "KA"
    assert subject_of("../datasets/Oulu_CASIA/VL/Neutral/478.jpeg") is None
    assert subject_of(("tuple", 1)) is None


def test_errors() -> None:
    doms = synthetic_domains(4, 2, domains=("CK+", "JAFFE"), image_size=8)
    with pytest.raises(ValueError, match=r"^`target` must name one of CK\+, JAFFE; got 'RAF-DB'$"):
        leave_one_domain_out(doms, "RAF-DB")
    with pytest.raises(TypeError, match=r"^`target` must be a dataset name \(str\), got int$"):
        leave_one_domain_out(doms, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two domains"):
        leave_one_domain_out({"CK+": doms["CK+"]}, "CK+")
    with pytest.raises(ValueError, match="test_fraction"):
        leave_one_domain_out(doms, "CK+", test_fraction=1.0)


def _one_list(domain: str, size: int) -> DomainSplits:
    """A domain whose adaptation and test sets are one dataset (as CK+, JAFFE, Oulu-CASIA)."""
    data = synthetic_domains(size, size, domains=(domain,), image_size=8)[domain].test
    return DomainSplits(data, data)


def test_a_split_that_empties_the_target_adaptation_set_is_refused() -> None:
    doms = {"CK+": _one_list("CK+", 6), "JAFFE": _one_list("JAFFE", 4)}
    assert len(leave_one_domain_out(doms, "CK+").target_adapt) == 3  # each key its own group
    # One group: the whole list goes to the test side and nothing is left to adapt on.
    with pytest.raises(ValueError, match="target adaptation set of CK\\+ would be empty") as info:
        leave_one_domain_out(doms, "CK+", group_of=lambda k: "s")
    message = str(info.value)
    assert "`group_of` puts the list's 6 samples in 1 group," in message
    assert "test_fraction=0.5" in message
    # Two groups of 3: at test_fraction 0.5 one group is each side, at 0.9 both are test.
    halves = lambda k: int(str(k).rsplit(":", 1)[1]) < 3  # noqa: E731
    task = leave_one_domain_out(doms, "CK+", group_of=halves)
    assert sorted(halves(k) for k in task.target_adapt.keys) in ([True] * 3, [False] * 3)
    with pytest.raises(ValueError, match="puts the list's 6 samples in 2 groups"):
        leave_one_domain_out(doms, "CK+", group_of=halves, test_fraction=0.9)
    # The published protocol does not split, so any grouping is fine there.
    task = leave_one_domain_out(doms, "CK+", group_of=lambda k: "s", leakage_free=False)
    assert len(task.target_adapt) == 6


def test_empty_sets_are_refused() -> None:
    doms = synthetic_domains(4, 2, domains=("CK+", "JAFFE", "RAF-DB"), image_size=8)
    empty_ck = LabelledSubset(doms["CK+"].adapt, [])
    with pytest.raises(ValueError, match="source CK\\+ has an empty adaptation set"):
        leave_one_domain_out({**doms, "CK+": DomainSplits(empty_ck, doms["CK+"].test)}, "JAFFE")
    with pytest.raises(ValueError, match="target adaptation set of CK\\+ is empty"):
        leave_one_domain_out({**doms, "CK+": DomainSplits(empty_ck, doms["CK+"].test)}, "CK+")
    empty_test = LabelledSubset(doms["RAF-DB"].test, [])
    with pytest.raises(ValueError, match="target test set of RAF-DB is empty"):
        leave_one_domain_out(
            {**doms, "RAF-DB": DomainSplits(doms["RAF-DB"].adapt, empty_test)}, "raf"
        )
    # The same domain as a source needs no test set.
    task = leave_one_domain_out(
        {**doms, "RAF-DB": DomainSplits(doms["RAF-DB"].adapt, empty_test)}, "CK+"
    )
    assert task.source_sizes == [4, 4]


def test_split_notes_say_whether_subjects_were_kept_apart(real: dict[str, DomainSplits]) -> None:
    """CK+ paths name their subjects; the published JAFFE paths do not, so its split is per image."""
    ck = leave_one_domain_out(real, "CK+")
    assert any("with no shared subject or image" in n for n in ck.notes), ck.notes
    assert all(subject_of(k) is not None for k in _keys(real["CK+"].test))
    jaffe = leave_one_domain_out(real, "JAFFE")
    assert all(subject_of(k) is None for k in _keys(real["JAFFE"].test))
    note = next(n for n in jaffe.notes if "one list" in n)
    assert "no subject id in the paths: the split is per image" in note, note
    assert "no shared subject" not in note
    # Disjoint by image all the same.
    assert not set(_keys(jaffe.target_adapt)) & set(_keys(jaffe.target_test))


def test_split_sources_holds_out_a_seeded_share_of_each_source() -> None:
    domains = synthetic_domains(10, 4, domains=("CK+", "JAFFE", "RAF-DB"), image_size=16)
    task = leave_one_domain_out(domains, "RAF-DB")
    train, held = task.split_sources(0.3, seed=5)
    assert train.source_sizes == [7, 7] and len(held) == 6
    gen = torch.Generator().manual_seed(5)
    for ds, part, start in zip(task.source_sets, train.source_sets, (0, 3)):
        order = torch.randperm(len(ds), generator=gen)  # the draw, written out
        assert part.keys == [ds.keys[i] for i in order[3:].tolist()]
        assert [held[start + i][1] for i in range(3)] == [int(ds.labels[i]) for i in order[:3]]
    assert torch.equal(train.source_labels, torch.cat([ds.labels for ds in train.source_sets]))
    assert train.domain_ids.tolist() == [0] * 7 + [1] * 7
    assert train.target_test is task.target_test and train.target == "RAF-DB"
    again, _ = task.split_sources(0.3, seed=5)
    assert again.source_sets[0].keys == train.source_sets[0].keys
    with pytest.raises(ValueError, match="`fraction`"):
        task.split_sources(1.0)
    with pytest.raises(ValueError, match="would hold out all"):
        leave_one_domain_out(
            synthetic_domains(1, 1, domains=("CK+", "JAFFE"), image_size=16), "CK+"
        ).split_sources(0.5)
