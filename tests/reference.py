"""Naive loop transcriptions of the equations of ``docs/method.rst`` ("Dual-level inter-domain
alignment" and "Multi-view intra-domain alignment"), the independent references of the loss tests.

Written for clarity, not speed: explicit Python loops over samples, classes and pairs, sets built as
lists, distances from explicit differences. Nothing here is imported from :mod:`lacmfer`, so a test
that compares the two compares two independent readings of the equations.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

FLOOR = 1e-12  # documented bandwidth floor, relative to the largest squared feature entry


def softmax_row(z: Tensor) -> list[float]:
    zmax = max(float(v) for v in z)
    e = [math.exp(float(v) - zmax) for v in z]
    s = sum(e)
    return [v / s for v in e]


def argmax(values: list[float]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:
            best = k
    return best


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    total = a.new_zeros(())
    for d in range(a.shape[0]):
        total = total + (a[d] - b[d]) ** 2
    return total


def feature_scale(points: list[Tensor]) -> float:
    s = 0.0
    for p in points:
        for v in p:
            s = max(s, abs(float(v.detach())))
    return max(s, 1e-30)


def bandwidth(points: list[Tensor], scale: float) -> float:
    n = len(points)
    total = 0.0
    for u in range(n):
        for v in range(n):
            if u != v:
                total += float(sqdist(points[u], points[v]).detach())
    beta = total / (n * n - n) if n * n - n > 0 else 0.0
    return max(beta, FLOOR * scale * scale)


def kernel(a: Tensor, b: Tensor, beta: float, kernel_num: int, kernel_mul: float) -> Tensor:
    d = sqdist(a, b)
    out = a.new_zeros(())
    for q in range(kernel_num):
        out = out + torch.exp(-d / (beta * kernel_mul ** (q - kernel_num // 2)))
    return out


def weighted_mmd2(
    xs: list[Tensor],
    ys: list[Tensor],
    wx: list[float],
    wy: list[float],
    beta: float,
    kernel_num: int,
    kernel_mul: float,
) -> Tensor:
    dtype = xs[0].dtype if xs else ys[0].dtype
    total = torch.zeros((), dtype=dtype)
    for i, a in enumerate(xs):
        for j, b in enumerate(xs):
            total = total + wx[i] * wx[j] * kernel(a, b, beta, kernel_num, kernel_mul)
    for i, a in enumerate(ys):
        for j, b in enumerate(ys):
            total = total + wy[i] * wy[j] * kernel(a, b, beta, kernel_num, kernel_mul)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            total = total - 2 * wx[i] * wy[j] * kernel(a, b, beta, kernel_num, kernel_mul)
    return total


def mmd2_reference(
    x: Tensor,
    y: Tensor,
    wx: Optional[list[float]] = None,
    wy: Optional[list[float]] = None,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
) -> Tensor:
    xs = [x[i] for i in range(x.shape[0])]
    ys = [y[j] for j in range(y.shape[0])]
    wx = wx if wx is not None else [1.0 / len(xs)] * len(xs)
    wy = wy if wy is not None else [1.0 / len(ys)] * len(ys)
    beta = bandwidth(xs + ys, feature_scale(xs + ys))
    return weighted_mmd2(xs, ys, wx, wy, beta, kernel_num, kernel_mul)


def gaussian_kernel_reference(
    x: Tensor, y: Optional[Tensor], kernel_num: int = 5, kernel_mul: float = 2.0
) -> Tensor:
    """Kernel matrix; the bandwidth comes from x ∪ y, or from x alone when y is None."""
    xs = [x[i] for i in range(x.shape[0])]
    pool = xs if y is None else xs + [y[j] for j in range(y.shape[0])]
    ys = xs if y is None else [y[j] for j in range(y.shape[0])]
    beta = bandwidth(pool, feature_scale(pool))
    out = torch.zeros(len(xs), len(ys), dtype=x.dtype)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            out[i, j] = kernel(a, b, beta, kernel_num, kernel_mul)
    return out


def masks_and_pseudo(logits: Tensor, threshold: float) -> tuple[list[bool], list[int]]:
    mask, pseudo = [], []
    for i in range(logits.shape[0]):
        p = softmax_row(logits[i])
        mask.append(max(p) >= threshold)
        pseudo.append(argmax(p))
    return mask, pseudo


def margin_mse(z: Tensor, label: int) -> float:
    k_num = z.shape[0]
    zmax = max(float(v) for v in z)
    total = 0.0
    for k in range(k_num):
        target = zmax if k == label else 0.0
        total += (float(z[k]) - target) ** 2
    return total / k_num


def hardness_reference(
    logits_s: Tensor, labels_s: list[int], logits_t: Tensor, threshold: float
) -> tuple[list[float], list[float]]:
    """Normalised hardness weights of one source set against the target (pooled mode)."""
    mask_s, _ = masks_and_pseudo(logits_s, threshold)
    mask_t, pseudo_t = masks_and_pseudo(logits_t, threshold)
    h_s = []
    for i in range(logits_s.shape[0]):
        exists = any(pseudo_t[j] == labels_s[i] for j in range(logits_t.shape[0]))
        h_s.append(margin_mse(logits_s[i], labels_s[i]) if (mask_s[i] and exists) else 0.0)
    h_t = []
    for j in range(logits_t.shape[0]):
        exists = any(labels_s[i] == pseudo_t[j] for i in range(logits_s.shape[0]))
        h_t.append(margin_mse(logits_t[j], pseudo_t[j]) if (mask_t[j] and exists) else 0.0)
    sum_s, sum_t = sum(h_s), sum(h_t)
    w_s = [h / sum_s if sum_s > 0 else 0.0 for h in h_s]
    w_t = [h / sum_t if sum_t > 0 else 0.0 for h in h_t]
    return w_s, w_t


def _split_by_domain(domains_s: Optional[Tensor], n: int) -> list[list[int]]:
    if domains_s is None:
        return [list(range(n))]
    ids = [int(d) for d in domains_s]
    return [[i for i in range(n) if ids[i] == g] for g in sorted(set(ids))]


def sid_reference(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    threshold: float = 0.4,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    domains_s: Optional[Tensor] = None,
) -> Tensor:
    scale = feature_scale([feat_s[i] for i in range(feat_s.shape[0])] + list(feat_t))
    terms = []
    for idx in _split_by_domain(domains_s, feat_s.shape[0]):
        labels = [int(labels_s[i]) for i in idx]
        w_s, w_t = hardness_reference(logits_s[idx], labels, logits_t, threshold)
        xs = [feat_s[i] for i in idx]
        ys = [feat_t[j] for j in range(feat_t.shape[0])]
        beta = bandwidth(xs + ys, scale)
        terms.append(weighted_mmd2(xs, ys, w_s, w_t, beta, kernel_num, kernel_mul))
    return sum(terms) / len(terms)


def cid_reference(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    threshold: float = 0.4,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    domains_s: Optional[Tensor] = None,
) -> Tensor:
    num_classes = logits_s.shape[1]
    scale = feature_scale([feat_s[i] for i in range(feat_s.shape[0])] + list(feat_t))
    mask_t, pseudo_t = masks_and_pseudo(logits_t, threshold)
    terms = []
    for idx in _split_by_domain(domains_s, feat_s.shape[0]):
        mask_s, _ = masks_and_pseudo(logits_s[idx], threshold)
        source_sets = []
        for k in range(num_classes):
            source_sets.append(
                [feat_s[i] for n, i in enumerate(idx) if mask_s[n] and int(labels_s[i]) == k]
            )
        target_sets = []
        for k in range(num_classes):
            target_sets.append(
                [feat_t[j] for j in range(feat_t.shape[0]) if mask_t[j] and pseudo_t[j] == k]
            )
        same, cross = [], []
        for k in range(num_classes):
            for kk in range(num_classes):
                a, b = source_sets[k], target_sets[kk]
                if not a or not b:
                    continue
                beta = bandwidth(a + b, scale)
                value = weighted_mmd2(
                    a, b, [1 / len(a)] * len(a), [1 / len(b)] * len(b), beta, kernel_num, kernel_mul
                )
                (same if k == kk else cross).append(value)
        if same and cross:
            terms.append(sum(same) / len(same) - sum(cross) / len(cross))
        else:
            terms.append(torch.zeros((), dtype=feat_s.dtype))
    return sum(terms) / len(terms)


def mcc_reference(logits_g: Tensor, logits_l: Tensor, from_logits: bool = False) -> Tensor:
    b, k_num = logits_g.shape
    if from_logits:
        pg, pl = logits_g, logits_l
    else:
        pg = torch.stack([torch.softmax(logits_g[i], dim=0) for i in range(b)])
        pl = torch.stack([torch.softmax(logits_l[i], dim=0) for i in range(b)])
    m = [[pg.new_zeros(()) for _ in range(k_num)] for _ in range(k_num)]
    for i in range(b):
        for k in range(k_num):
            for kk in range(k_num):
                m[k][kk] = m[k][kk] + pg[i, k] * pl[i, kk]
    total = pg.new_zeros(())
    for k in range(k_num):
        row = sum(m[k][kk] for kk in range(k_num))
        for kk in range(k_num):
            if kk != k and float(row) != 0.0:
                total = total + m[k][kk] / row
    for kk in range(k_num):
        col = sum(m[k][kk] for k in range(k_num))
        for k in range(k_num):
            if kk != k and float(col) != 0.0:
                total = total + m[k][kk] / col
    return total / (2 * k_num)


def refine_reference(
    logits_g: Tensor, logits_l: Tensor, threshold: float = 0.9
) -> tuple[list[int], list[bool]]:
    labels, keep = [], []
    for i in range(logits_g.shape[0]):
        pg, pl = softmax_row(logits_g[i]), softmax_row(logits_l[i])
        yg, yl = argmax(pg), argmax(pl)
        labels.append(yg)
        keep.append(yg == yl and (max(pg) > threshold or max(pl) > threshold))
    return labels, keep


def mvv_reference(logits_g: Tensor, logits_l: Tensor, threshold: float = 0.9) -> Tensor:
    labels, keep = refine_reference(logits_g, logits_l, threshold)
    kept = [i for i in range(len(keep)) if keep[i]]
    if not kept:
        return (logits_g.sum() + logits_l.sum()) * 0.0
    loss = logits_g.new_zeros(())
    for logits in (logits_g, logits_l):
        part = logits.new_zeros(())
        for i in kept:
            part = part - torch.log_softmax(logits[i], dim=0)[labels[i]]
        loss = loss + part / len(kept)
    return loss


# --------------------------------------------------------------------------------------------------
# Baselines: DANN, CORAL, M3SDA moment matching, Minimum Class Confusion (Jin et al.).


def _scalar_cross_entropy(z: Tensor, label: int) -> Tensor:
    """-log softmax(z)[label] of one row, from explicit sums (shifted by the row maximum)."""
    zmax = max(float(v) for v in z.detach())
    total = z.new_zeros(())
    for k in range(z.shape[0]):
        total = total + torch.exp(z[k] - zmax)
    return torch.log(total) + zmax - z[label]


def dann_reference(
    domain_logits_s: Tensor, domain_logits_t: Tensor, domains_s: Optional[Tensor] = None
) -> Tensor:
    """0.5 (mean source CE + mean target CE); sources labelled by domain (0 pooled), target last."""
    target_label = domain_logits_t.shape[1] - 1
    source = domain_logits_s.new_zeros(())
    for i in range(domain_logits_s.shape[0]):
        label = 0 if domains_s is None else int(domains_s[i])
        source = source + _scalar_cross_entropy(domain_logits_s[i], label)
    target = domain_logits_t.new_zeros(())
    for j in range(domain_logits_t.shape[0]):
        target = target + _scalar_cross_entropy(domain_logits_t[j], target_label)
    return 0.5 * (source / domain_logits_s.shape[0] + target / domain_logits_t.shape[0])


def covariance_reference(rows: list[Tensor]) -> list[list[Tensor]]:
    """Unbiased covariance (divide by n - 1) of a list of feature vectors, entry by entry."""
    n, d = len(rows), rows[0].shape[0]
    mean = []
    for a in range(d):
        total = rows[0].new_zeros(())
        for r in rows:
            total = total + r[a]
        mean.append(total / n)
    cov = []
    for a in range(d):
        line = []
        for b in range(d):
            total = rows[0].new_zeros(())
            for r in rows:
                total = total + (r[a] - mean[a]) * (r[b] - mean[b])
            line.append(total / (n - 1))
        cov.append(line)
    return cov


def coral_reference(feat_s: Tensor, feat_t: Tensor, domains_s: Optional[Tensor] = None) -> Tensor:
    """||C_s - C_t||_F^2 / (4 d^2); per source, the mean over domains with >= 2 samples (else 0)."""
    d = feat_s.shape[1]
    cov_t = covariance_reference([feat_t[j] for j in range(feat_t.shape[0])])
    terms = []
    for idx in _split_by_domain(domains_s, feat_s.shape[0]):
        if len(idx) < 2:
            continue
        cov_s = covariance_reference([feat_s[i] for i in idx])
        total = feat_s.new_zeros(())
        for a in range(d):
            for b in range(d):
                total = total + (cov_s[a][b] - cov_t[a][b]) ** 2
        terms.append(total / (4 * d * d))
    if not terms:
        return feat_s.sum() * 0.0
    return sum(terms) / len(terms)


def _moment(rows: list[Tensor], k: int) -> list[Tensor]:
    d = rows[0].shape[0]
    out = []
    for a in range(d):
        total = rows[0].new_zeros(())
        for r in rows:
            total = total + r[a] ** k
        out.append(total / len(rows))
    return out


def _euclidean(u: list[Tensor], v: list[Tensor]) -> Tensor:
    total = u[0].new_zeros(())
    for a in range(len(u)):
        total = total + (u[a] - v[a]) ** 2
    return torch.sqrt(total)


def moment_matching_reference(
    feat_s: Tensor, domains_s: Tensor, feat_t: Tensor, moments: int = 2
) -> Tensor:
    """Peng et al. (ICCV 2019) eq. (1): means of Euclidean distances of raw moments, k = 1..moments.

    Domains are the ids present in ``domains_s``; the pair term is absent with one present source.
    """
    groups = _split_by_domain(domains_s, feat_s.shape[0])
    target = [feat_t[j] for j in range(feat_t.shape[0])]
    loss = feat_s.new_zeros(())
    for k in range(1, moments + 1):
        means = [_moment([feat_s[i] for i in idx], k) for idx in groups]
        mean_t = _moment(target, k)
        to_target = [_euclidean(m, mean_t) for m in means]
        loss = loss + sum(to_target) / len(to_target)
        pairs = []
        for i in range(len(means)):
            for j in range(i + 1, len(means)):
                pairs.append(_euclidean(means[i], means[j]))
        if pairs:
            loss = loss + sum(pairs) / len(pairs)
    return loss


def minimum_class_confusion_reference(
    logits: Tensor, temperature: float = 2.5, weights: Optional[list[float]] = None
) -> Tensor:
    """Jin et al. (ECCV 2020): entropy-weighted class confusion, row-normalised, off-diagonal / K.

    ``weights`` replaces the entropy weights (e.g. frozen at another input, for a gradient check).
    """
    b, k_num = logits.shape
    probs = [torch.softmax(logits[i] / temperature, dim=0) for i in range(b)]
    raw = []
    for i in range(b):
        entropy = 0.0
        for k in range(k_num):
            p = float(probs[i][k].detach())
            if p > 0:
                entropy -= p * math.log(p)
        raw.append(1.0 + math.exp(-entropy))
    if weights is None:
        weights = [b * r / sum(raw) for r in raw]  # detached: plain floats
    c = [[logits.new_zeros(()) for _ in range(k_num)] for _ in range(k_num)]
    for i in range(b):
        for k in range(k_num):
            for kk in range(k_num):
                c[k][kk] = c[k][kk] + weights[i] * probs[i][k] * probs[i][kk]
    total = logits.new_zeros(())
    for k in range(k_num):
        row = sum(c[k][kk] for kk in range(k_num))
        if float(row.detach()) == 0.0:
            continue
        for kk in range(k_num):
            if kk != k:
                total = total + c[k][kk] / row
    return total / k_num
