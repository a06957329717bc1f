r"""Validators computed from a model's predictions: target-side scores and source accuracy.

Each function scores a whole evaluation set at once (the streaming classes of
:mod:`lacmfer.validation` accumulate a loader and call these); higher is better for every score.
Probabilities are :math:`p = \operatorname{softmax}(z)` of the logits :math:`z`, and the entropy of a
distribution is exact, :math:`H(p) = -\sum_k p_k \log p_k` with :math:`0 \log 0 = 0`, computed from
``log_softmax`` so that no finite logits give NaN or inf. Logits holding a NaN or an infinity (a
diverged model) give a NaN score, never a good one and never an exception (no host sync).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    check_label_range,
    check_labels,
    check_logits,
    check_min_size,
    check_same_device,
    check_size,
    check_snd_settings,
    check_views,
    resolve_validate_args,
)
from .._precision import compute_dtype, no_autocast

__all__ = [
    "agreement_score",
    "bnm_score",
    "entropy_score",
    "im_score",
    "score_all",
    "snd_score",
    "source_accuracy",
]

# SND processes its (N, N) similarity matrix in row blocks of at most this many entries, so its
# memory stays O(N) per row block (64 MiB in float32) while the result is exact.
_SND_BLOCK_ENTRIES = 1 << 24


# --------------------------------------------------------------------------------------------------
# checks and shared pieces


def plogp(logp: Tensor) -> Tensor:
    r""":math:`p \log p` from :math:`\log p`, exactly 0 where :math:`p` underflows to 0."""
    p = torch.exp(logp)
    return torch.where(p > 0, p * logp, torch.zeros((), dtype=logp.dtype, device=logp.device))


def row_entropy(logp: Tensor) -> Tensor:
    r"""Entropy of each row of log-probabilities, :math:`-\sum_k p_k \log p_k`; shape ``(B,)``."""
    return -plogp(logp).sum(dim=1)


def distribution_entropy(p: Tensor) -> Tensor:
    r"""Entropy of one probability vector, :math:`0 \log 0 = 0`."""
    safe = torch.where(p > 0, p, torch.ones((), dtype=p.dtype, device=p.device))
    return -torch.where(
        p > 0, p * torch.log(safe), torch.zeros((), dtype=p.dtype, device=p.device)
    ).sum()


def finite_or_nan(score: Tensor, *inputs: Tensor) -> Tensor:
    """``score``, or NaN (every entry) when an input holds a NaN or an infinity: a diverged model's
    predictions never score well. Tensor operations only, so no host sync."""
    ok = torch.stack([torch.isfinite(x).all() for x in inputs]).all()
    return torch.where(ok, score, torch.full_like(score, math.nan))


def subsample(z: Tensor, max_samples: Optional[int], seed: int) -> Tensor:
    """The rows of ``z`` at the first ``max_samples`` positions of a seeded permutation.

    Deterministic (a CPU generator seeded with ``seed``), independent of the device, and the same
    on every rank for the same (gathered) input. ``z`` is returned unchanged when it is small enough.
    """
    n = z.shape[0]
    if max_samples is None or n <= max_samples:
        return z
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=gen)[:max_samples].to(z.device)
    return z.index_select(0, index)


# --------------------------------------------------------------------------------------------------
# target-side scores


def entropy_score(logits: Tensor) -> Tensor:
    r"""Negative mean prediction entropy (higher is better: confident predictions).

    .. math::

        S_{ent} = -\frac{1}{B} \sum_{b=1}^{B} H(p_b), \qquad
        H(p) = -\sum_{k=1}^{K} p_k \log p_k \quad (0 \log 0 = 0).

    Entropy minimisation is a classic unsupervised domain-adaptation objective (Grandvalet &
    Bengio, NeurIPS 2004); as a validator it rewards confident target predictions, whether or not
    they are right (a model that predicts one class everywhere scores the maximum, 0). See
    :doc:`/api/validation` for what each validator measures.

    Args:
        logits: logits of the evaluation set (e.g. the whole target adaptation set).

    Shape:
        - logits: :math:`(B, K)`.
        - Output: scalar in :math:`[-\log K, 0]`, float32 for half-precision inputs, else the input
          dtype.

    Returns:
        The score.

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor.
        ValueError: if ``logits`` is not a non-empty ``(B, K)`` matrix.

    Example:
        >>> entropy_score(torch.zeros(4, 2))  # uniform predictions: -log 2
        tensor(-0.6931)
        >>> entropy_score(torch.tensor([[4.0, 0.0], [0.0, 4.0]]))  # confident predictions
        tensor(-0.0901)
    """
    check_logits(logits)
    with no_autocast(logits.device):
        logp = torch.log_softmax(logits.to(compute_dtype(logits)), dim=1)
        return finite_or_nan(-row_entropy(logp).mean(), logits)


def im_score(logits: Tensor) -> Tensor:
    r"""Information maximisation: diversity of the mean prediction minus the mean entropy.

    .. math::

        S_{IM} = H\Big(\frac{1}{B} \sum_b p_b\Big) - \frac{1}{B} \sum_b H(p_b),

    the mutual information between inputs and predicted classes under the empirical distribution
    (Krause et al., NeurIPS 2010; used for source-free adaptation by Liang et al., SHOT, ICML 2020).
    High when each prediction is confident *and* the classes are used evenly, so unlike
    :func:`entropy_score` it penalises collapse onto one class. It lies in :math:`[0, \log K]`.

    Args:
        logits: logits of the evaluation set.

    Shape:
        - logits: :math:`(B, K)`.
        - Output: scalar, float32 for half-precision inputs, else the input dtype.

    Returns:
        The score.

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor.
        ValueError: if ``logits`` is not a non-empty ``(B, K)`` matrix.

    Example:
        >>> im_score(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]))  # confident and balanced: log 2
        tensor(0.6931)
        >>> im_score(torch.tensor([[50.0, -50.0], [50.0, -50.0]]))  # confident but collapsed
        tensor(0.)
    """
    check_logits(logits)
    with no_autocast(logits.device):
        logp = torch.log_softmax(logits.to(compute_dtype(logits)), dim=1)
        mean_prob = torch.exp(logp).mean(dim=0)
        # in [0, log K]; rounding can take a collapsed set a few ulps below 0
        score = (distribution_entropy(mean_prob) - row_entropy(logp).mean()).clamp_min(0.0)
        return finite_or_nan(score, logits)


def snd_score(
    logits: Tensor,
    *,
    temperature: float = 0.05,
    max_samples: Optional[int] = None,
    seed: int = 0,
) -> Tensor:
    r"""Soft Neighbourhood Density: mean entropy of each sample's soft neighbourhood.

    Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain Adaptation via Soft
    Neighborhood Density", ICCV 2021. With :math:`\hat p_b = p_b / \lVert p_b \rVert_2` the
    L2-normalised probability vectors and :math:`T` the temperature,

    .. math::

        s_{ij} = \frac{\hat p_i^\top \hat p_j}{T}, \qquad
        P_{ij} = \frac{\exp s_{ij}}{\sum_{j' \ne i} \exp s_{ij'}}\ (j \ne i), \qquad
        S_{SND} = \frac{1}{N} \sum_{i=1}^{N} \Big(-\sum_{j \ne i} P_{ij} \log P_{ij}\Big).

    High when samples have many close neighbours in prediction space (dense, well-clustered
    target predictions). Each row's softmax runs over the *other* samples: the diagonal is excluded
    exactly (masked to :math:`-\infty`) and the entropy is exact. The authors' code instead fills
    the diagonal with :math:`-1/T` (so each sample stays in its own neighbourhood with a tiny
    weight) and adds :math:`10^{-5}` inside the logarithm; the two agree up to those
    perturbations.

    Cost: :math:`O(N^2 K)` time. The :math:`N \times N` similarity matrix is processed in row
    blocks of at most :math:`2^{24}` entries, so memory stays :math:`O(N)` per block; for large
    sets, ``max_samples`` bounds the time by scoring a deterministic subsample.

    Args:
        logits: logits of the evaluation set (at least 2 samples).
        temperature: the temperature :math:`T > 0` (0.05 in the paper).
        max_samples: score at most this many samples (int >= 2): when :math:`N` is larger, a
            subsample drawn by a permutation seeded with ``seed`` (the same on every device and
            every call). ``None`` (default) scores all samples.
        seed: seed of the subsample's permutation.

    Shape:
        - logits: :math:`(N, K)`.
        - Output: scalar in :math:`[0, \log(N' - 1)]` with :math:`N' = \min(N,` ``max_samples``
          :math:`)`, float32 for half-precision inputs, else the input dtype.

    Returns:
        The score.

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor or a setting has the wrong type.
        ValueError: if ``logits`` is not a ``(N, K)`` matrix with :math:`N \ge 2, K \ge 1`, or a
            setting is out of range.

    Example:
        >>> logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> snd_score(logits)  # two pairs: each sample's neighbourhood is almost only its twin
        tensor(0.0141)
        >>> snd_score(torch.zeros(5, 3))  # all alike: uniform over the 4 others, log 4
        tensor(1.3863)
    """
    check_logits(logits, axes="(N, K)")
    check_min_size(logits, "logits", 2, reason="each sample's neighbourhood excludes itself")
    temperature = check_snd_settings(temperature, max_samples, seed)
    dtype = compute_dtype(logits)
    with no_autocast(logits.device):
        z = subsample(logits.to(dtype), max_samples, seed)
        q = F.normalize(torch.softmax(z, dim=1), dim=1)
        # cosine similarities lie in [0, 1]: capping 1/T keeps them finite for any T > 0
        inv_t = min(1.0 / temperature, torch.finfo(dtype).max)
        n = q.shape[0]
        block = max(1, _SND_BLOCK_ENTRIES // n)
        cols = torch.arange(n, device=q.device)
        total = torch.zeros((), dtype=dtype, device=q.device)
        for start in range(0, n, block):
            rows = q[start : start + block]
            sim = (rows @ q.T) * inv_t
            self_mask = cols[start : start + rows.shape[0], None] == cols[None, :]
            sim = sim.masked_fill(self_mask, -math.inf)
            total = total + row_entropy(torch.log_softmax(sim, dim=1)).sum()
        return finite_or_nan(total / n, logits)


def bnm_score(logits: Tensor) -> Tensor:
    r"""Batch nuclear norm of the prediction matrix, divided by the number of samples.

    .. math::

        S_{BNM} = \frac{1}{B} \lVert P \rVert_* = \frac{1}{B} \sum_i \sigma_i(P), \qquad
        P = \operatorname{softmax}(Z) \in [0, 1]^{B \times K},

    the sum of the singular values of the probability matrix (Cui et al., "Towards Discriminability
    and Diversity: Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020;
    proposed as a validator by Musgrave et al., 2022). It grows with both the confidence of the
    predictions (the Frobenius norm) and their diversity (the rank). It lies in
    :math:`[1/\sqrt{BK}, \sqrt{\min(B, K)/B}]` and reaches the top, :math:`\sqrt{K/B}` for
    :math:`B \ge K`, for confident predictions spread evenly over the classes; as it depends on
    :math:`B`, compare scores on one evaluation set only.

    A score, not a training loss: it is computed by ``torch.linalg.svdvals`` (finite for every
    finite input; on CUDA the SVD synchronises the device with the host, once per call).

    Args:
        logits: logits of the evaluation set.

    Shape:
        - logits: :math:`(B, K)`.
        - Output: scalar, float32 for half-precision inputs, else the input dtype.

    Returns:
        The score.

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor.
        ValueError: if ``logits`` is not a non-empty ``(B, K)`` matrix.

    Example:
        >>> bnm_score(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]))  # confident, diverse
        tensor(1.)
        >>> bnm_score(torch.tensor([[50.0, -50.0], [50.0, -50.0]]))  # confident, collapsed
        tensor(0.7071)
    """
    check_logits(logits)
    with no_autocast(logits.device):
        z = logits.to(compute_dtype(logits))
        # the SVD of a non-finite matrix fails: it sees zeros there, and the score is NaN
        p = torch.softmax(torch.where(torch.isfinite(z), z, torch.zeros_like(z)), dim=1)
        return finite_or_nan(torch.linalg.svdvals(p).sum() / p.shape[0], z)


def agreement_score(logits_g: Tensor, logits_l: Tensor) -> Tensor:
    r"""Fraction of samples on which two views predict the same class.

    .. math::

        S_{agr} = \frac{1}{B} \sum_b \mathbb{1}\big[\arg\max_k z^G_{bk} = \arg\max_k z^L_{bk}\big].

    For LA-CMFER the views are the global and local heads: their agreement on the target is what the
    multi-view consistency and voting losses push up (:doc:`/method`), so it measures how far the
    intra-domain alignment got. Ties resolve to the first maximal class, as ``torch.argmax``.

    Args:
        logits_g: logits of the first (global) view.
        logits_l: logits of the second (local) view.

    Shape:
        - logits_g, logits_l: :math:`(B, K)`.
        - Output: scalar in :math:`[0, 1]`, float32 for half-precision inputs, else the input dtype.

    Returns:
        The agreement rate.

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions or mismatched batch or class sizes.

    Example:
        >>> logits_g = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> logits_l = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 1.0]])
        >>> agreement_score(logits_g, logits_l)
        tensor(0.6667)
    """
    check_views(logits_g, logits_l)
    dtype = compute_dtype(logits_g, logits_l)
    same = logits_g.argmax(dim=1) == logits_l.argmax(dim=1)
    return finite_or_nan(same.to(dtype).mean(), logits_g, logits_l)


def source_accuracy(
    logits: Tensor, labels: Tensor, *, validate_args: Optional[bool] = None
) -> Tensor:
    r"""Top-1 accuracy on a held-out split of the labelled *source* data.

    .. math::

        S_{src} = \frac{1}{B} \sum_b \mathbb{1}\big[\arg\max_k z_{bk} = y_b\big].

    The classic baseline validator of domain adaptation: honest (it uses only source labels), but
    blind to the shift, since it measures source, not target, accuracy. Compute it on source images
    the model never trained on.

    Args:
        logits: logits of the held-out source samples.
        labels: their class indices (RAF-DB order).
        validate_args: check that labels lie in :math:`[0, K)` (reads values). ``None``: on CPU only.

    Shape:
        - logits: :math:`(B, K)`; labels: :math:`(B,)`.
        - Output: scalar in :math:`[0, 1]`, float32 for half-precision inputs, else the input dtype.

    Returns:
        The accuracy.

    Raises:
        TypeError: if ``logits`` is not floating-point or ``labels`` not an integer tensor.
        ValueError: on wrong dimensions, mismatched batch sizes or (when checked) labels out of
            range.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 1.0]])
        >>> source_accuracy(logits, torch.tensor([0, 1, 1, 1]))
        tensor(0.7500)
    """
    check_logits(logits)
    check_labels(labels, "labels", axes="(B,)")
    check_size(logits, "logits", 0, labels, "labels", 0, "Batch sizes (dim 0)")
    check_same_device([("logits", logits), ("labels", labels)])
    if resolve_validate_args(validate_args, labels):
        check_label_range(labels, "labels", logits.shape[1])
    correct = logits.argmax(dim=1) == labels
    return finite_or_nan(correct.to(compute_dtype(logits)).mean(), logits)


def score_all(
    logits: Tensor,
    logits_g: Optional[Tensor] = None,
    logits_l: Optional[Tensor] = None,
    *,
    temperature: float = 0.05,
    max_samples: Optional[int] = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    r"""Every target-side validator on one evaluation set, by name.

    The one-shot form of :class:`ValidatorSuite`: ``"entropy"`` (:func:`entropy_score`), ``"im"``
    (:func:`im_score`), ``"snd"`` (:func:`snd_score`), ``"bnm"`` (:func:`bnm_score`) on the
    prediction logits, and ``"agreement"`` (:func:`agreement_score`) when both views are given.
    Higher is better for each.

    Args:
        logits: prediction logits of the evaluation set (for LA-CMFER the fused
            :math:`(z_G + z_L)/2`).
        logits_g: logits of the global view (optional, with ``logits_l``).
        logits_l: logits of the local view (optional, with ``logits_g``).
        temperature: SND's temperature.
        max_samples: SND's subsample bound (see :func:`snd_score`).
        seed: SND's subsample seed.

    Shape:
        - logits, logits_g, logits_l: :math:`(N, K)`, :math:`N \ge 2`.
        - Output: a dict of scalars.

    Returns:
        ``{"agreement": ..., "bnm": ..., "entropy": ..., "im": ..., "snd": ...}`` (no
        ``"agreement"`` without views), in the order of :data:`TARGET_VALIDATORS`.

    Raises:
        TypeError: if an input is not a floating-point tensor or a setting has the wrong type.
        ValueError: on wrong shapes, only one of the two views, or bad settings.

    Example:
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
        >>> sorted(score_all(logits, logits, logits - 1.0))
        ['agreement', 'bnm', 'entropy', 'im', 'snd']
    """
    check_logits(logits, axes="(N, K)")
    if (logits_g is None) != (logits_l is None):
        raise ValueError(
            "`logits_g` and `logits_l` must be given together (for the agreement score) or not at "
            f"all, got logits_g={'None' if logits_g is None else 'a tensor'} and "
            f"logits_l={'None' if logits_l is None else 'a tensor'}"
        )
    out: dict[str, Tensor] = {}
    if logits_g is not None and logits_l is not None:
        check_views(logits_g, logits_l)
        check_size(logits, "logits", 0, logits_g, "logits_g", 0, "Batch sizes (dim 0)")
        check_size(logits, "logits", 1, logits_g, "logits_g", 1, "Numbers of classes K (dim 1)")
        out["agreement"] = agreement_score(logits_g, logits_l)
    out["bnm"] = bnm_score(logits)
    out["entropy"] = entropy_score(logits)
    out["im"] = im_score(logits)
    out["snd"] = snd_score(logits, temperature=temperature, max_samples=max_samples, seed=seed)
    return out
