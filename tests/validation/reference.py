"""Naive loop transcriptions of the validators, the independent references of their tests.

Plain Python floats and loops over samples, classes and pairs; nothing imported from
:mod:`lacmfer`. Inputs are tensors (read once with ``tolist()``), outputs Python floats.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

EPS64 = 2.220446049250313e-16


def rows_of(x: Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in x.tolist()]


def log_softmax(z: list[float]) -> list[float]:
    m = max(z)
    total = 0.0
    for v in z:
        total += math.exp(v - m)
    lse = m + math.log(total)
    return [v - lse for v in z]


def entropy_of_log_probs(logp: list[float]) -> float:
    h = 0.0
    for lp in logp:
        p = math.exp(lp)
        if p > 0.0:
            h -= p * lp
    return h


def entropy_of_probs(p: list[float]) -> float:
    h = 0.0
    for v in p:
        if v > 0.0:
            h -= v * math.log(v)
    return h


def argmax(values: list[float]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:
            best = k
    return best


def entropy_reference(logits: Tensor) -> float:
    rows = rows_of(logits)
    total = 0.0
    for z in rows:
        total += entropy_of_log_probs(log_softmax(z))
    return -total / len(rows)


def im_reference(logits: Tensor) -> float:
    rows = rows_of(logits)
    n, k = len(rows), len(rows[0])
    mean_p = [0.0] * k
    mean_h = 0.0
    for z in rows:
        logp = log_softmax(z)
        mean_h += entropy_of_log_probs(logp) / n
        for j in range(k):
            mean_p[j] += math.exp(logp[j]) / n
    return entropy_of_probs(mean_p) - mean_h


def snd_reference(logits: Tensor, temperature: float) -> float:
    rows = rows_of(logits)
    n = len(rows)
    unit = []
    for z in rows:
        p = [math.exp(v) for v in log_softmax(z)]
        norm = math.sqrt(sum(v * v for v in p))
        unit.append([v / norm for v in p])
    total = 0.0
    for i in range(n):
        sims = []
        for j in range(n):
            if j != i:
                dot = 0.0
                for a, b in zip(unit[i], unit[j]):
                    dot += a * b
                sims.append(dot / temperature)
        total += entropy_of_log_probs(log_softmax(sims))
    return total / n


def singular_values(a: list[list[float]]) -> list[float]:
    """One-sided Jacobi (Hestenes) SVD: rotate column pairs until they are orthogonal."""
    m, n = len(a), len(a[0])
    cols = [[a[i][j] for i in range(m)] for j in range(n)]
    for _ in range(60):
        rotated = False
        for p in range(n - 1):
            for q in range(p + 1, n):
                alpha = sum(x * x for x in cols[p])
                beta = sum(x * x for x in cols[q])
                gamma = sum(x * y for x, y in zip(cols[p], cols[q]))
                if abs(gamma) <= 1e-16 * math.sqrt(alpha * beta):
                    continue
                rotated = True
                zeta = (beta - alpha) / (2.0 * gamma)
                t = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
                c = 1.0 / math.sqrt(1.0 + t * t)
                s = c * t
                for i in range(m):
                    xp, xq = cols[p][i], cols[q][i]
                    cols[p][i] = c * xp - s * xq
                    cols[q][i] = s * xp + c * xq
        if not rotated:
            break
    return [math.sqrt(sum(x * x for x in col)) for col in cols]


def bnm_reference(logits: Tensor) -> float:
    probs = [[math.exp(v) for v in log_softmax(z)] for z in rows_of(logits)]
    return sum(singular_values(probs)) / len(probs)


def agreement_reference(logits_g: Tensor, logits_l: Tensor) -> float:
    rows_g, rows_l = rows_of(logits_g), rows_of(logits_l)
    agree = 0
    for zg, zl in zip(rows_g, rows_l):
        if argmax(zg) == argmax(zl):
            agree += 1
    return agree / len(rows_g)


def accuracy_reference(logits: Tensor, labels: Tensor) -> float:
    rows = rows_of(logits)
    correct = 0
    for z, y in zip(rows, labels.tolist()):
        if argmax(z) == y:
            correct += 1
    return correct / len(rows)


def dev_reference(losses: Tensor, weights: Tensor) -> float:
    """You et al. (ICML 2019), Algorithm 1; eta = 0 when the weights' spread is rounding noise."""
    ls = [float(v) for v in losses.tolist()]
    ws = [float(v) for v in weights.tolist()]
    n = len(ls)
    weighted = [w * v for w, v in zip(ws, ls)]
    mean_l = sum(weighted) / n
    mean_w = sum(ws) / n
    cov = 0.0
    var = 0.0
    for i in range(n):
        cov += (weighted[i] - mean_l) * (ws[i] - mean_w) / (n - 1)
        var += (ws[i] - mean_w) ** 2 / (n - 1)
    largest = max(abs(w) for w in ws)
    eta = 0.0 if math.sqrt(var) <= 32 * EPS64 * largest else -cov / var
    return -(mean_l + eta * mean_w - eta)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _softplus(u: float) -> float:
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


def density_ratio_reference(
    feat_s_train: Tensor,
    feat_t: Tensor,
    feat_s_val: Tensor,
    l2: float,
    max_weight: Optional[float] = None,
) -> list[float]:
    """Balanced L2-regularised logistic regression (target = 1) by damped Newton; odds of val."""
    fs, ft, fv = rows_of(feat_s_train), rows_of(feat_t), rows_of(feat_s_val)
    dim = len(fs[0])
    fit = fs + ft
    n = len(fit)
    mean = [sum(x[j] for x in fit) / n for j in range(dim)]
    scale = max(abs(v) for x in fit + fv for v in x)
    std = []
    for j in range(dim):
        sd = math.sqrt(sum((x[j] - mean[j]) ** 2 for x in fit) / n)
        std.append(sd if sd > 1e-6 * scale else 1.0)

    def design(x: list[float]) -> list[float]:
        return [(x[j] - mean[j]) / std[j] for j in range(dim)] + [1.0]

    z = [design(x) for x in fit]
    y = [0.0] * len(fs) + [1.0] * len(ft)
    c = [0.5 / len(fs)] * len(fs) + [0.5 / len(ft)] * len(ft)
    reg = [l2] * dim + [0.0]

    def objective(theta: list[float]) -> float:
        total = 0.0
        for i in range(n):
            u = sum(a * b for a, b in zip(z[i], theta))
            total += c[i] * (_softplus(u) - y[i] * u)
        return total + 0.5 * sum(r * t * t for r, t in zip(reg, theta))

    theta = [0.0] * (dim + 1)
    for _ in range(100):
        grad = [reg[j] * theta[j] for j in range(dim + 1)]
        hess = [[reg[j] if j == k else 0.0 for k in range(dim + 1)] for j in range(dim + 1)]
        for i in range(n):
            u = sum(a * b for a, b in zip(z[i], theta))
            p = 1.0 / (1.0 + math.exp(-u))
            for j in range(dim + 1):
                grad[j] += c[i] * (p - y[i]) * z[i][j]
                for k in range(dim + 1):
                    hess[j][k] += c[i] * p * (1.0 - p) * z[i][j] * z[i][k]
        step = _solve(hess, grad)
        t = 1.0
        f0 = objective(theta)
        # full Newton steps; halve only on a real increase (beyond the objective's rounding)
        while objective([a - t * s for a, s in zip(theta, step)]) > f0 + 1e-14 and t > 1e-10:
            t /= 2.0
        theta = [a - t * s for a, s in zip(theta, step)]
        if max(abs(t * s) for s in step) < 1e-15:
            break
    out = []
    for x in fv:
        w = math.exp(sum(a * b for a, b in zip(design(x), theta)))
        out.append(w if max_weight is None else min(w, max_weight))
    return out
