r"""Feature-space diagnostics of domain shift: did the domains come together, did the classes stay apart?

An adaptation method such as LA-CMFER (:doc:`/method`) pulls the domains together in feature space
while it tries to keep the classes apart. These functions measure both on features collected from
a model, so that a run can be checked beyond its accuracy:

* :class:`FeatureCollector`: runs a model over loaders (eval mode, no gradients) and keeps
  features, labels, domains and logits, at most ``max_samples`` rows per domain, on the CPU;
  gathers all ranks under :mod:`torch.distributed` with ``sync_dist=True``.
* :func:`proxy_a_distance`: how well a linear probe tells two domains apart (Ben-David et al.,
  2007/2010), 0 (indistinguishable) to 2 (separable), seeded and cross-validated.
* :func:`domain_distance_matrix`: the squared MMD (or mean-embedding distance) between every pair
  of domains, and, with labels, between the same class in different domains.
* :func:`class_separation`: within-class spread over between-class distance, pooled and per
  domain: lower is better separated; a rise while the domain distances fall is the signature of an
  alignment that collapses the classes.
* :func:`embed_2d`: two-dimensional t-SNE (scikit-learn, optional) or PCA coordinates for plots.
* :func:`confusion_matrix`, :func:`classification_metrics` and :func:`plot_confusion`: the
  labelled side of an evaluation (accuracy, per-class accuracy, macro-F1), additive over batches
  and ranks.
* :func:`shift_report` and :func:`plot_shift`: all of the above at once on collected features,
  as one JSON-ready report, and its figures (before and after adaptation side by side).

Conventions: inputs are tensors of features :math:`(N, D)` with integer domain indices and labels
:math:`(N,)` (negative labels mean "unlabelled" and are left out of class-wise numbers); results
are NamedTuples of tensors; the maths is vectorised over samples, classes and domain pairs (one-hot
membership matrices, one kernel matrix), runs in float32 or better with autocast disabled, and
marks missing data with NaN instead of failing. These are evaluation tools, not losses: they may
read values (host synchronisation) and their inputs are detached where a fit is involved. Argument
errors follow the package's conventions (``TypeError`` for types and dtypes, ``ValueError`` for
shapes and values, the message names the argument). scikit-learn (for t-SNE) and matplotlib (for
plotting) are optional: ``pip install lacmfer[analysis]``.

Example:
    >>> import torch
    >>> from lacmfer.analysis import class_separation, domain_distance_matrix
    >>> g = torch.Generator().manual_seed(0)
    >>> centres = 4.0 * torch.eye(3)
    >>> labels = torch.arange(3).repeat(40)
    >>> domains = torch.arange(2).repeat_interleave(60)
    >>> features = centres[labels] + 0.5 * torch.randn(120, 3, generator=g)
    >>> features[domains == 1] += 1.0  # domain 1 is shifted
    >>> out = domain_distance_matrix(features, domains, labels=labels)
    >>> bool(out.matrix[0, 1] > 0.1), out.per_class.shape, out.class_matrix.shape
    (True, torch.Size([3, 2, 2]), torch.Size([3, 3]))
    >>> bool(class_separation(features, labels, domains).ratio < 0.1)
    True
"""

from ._class_separation import ClassSeparation, class_separation
from ._collector import SUBSAMPLE_MODES, CollectedFeatures, FeatureCollector
from ._domain_distance import DISTANCE_KINDS, DomainDistances, domain_distance_matrix
from ._embedding import EMBED_METHODS, Embedding, embed_2d
from ._metrics import (
    ClassificationMetrics,
    classification_metrics,
    confusion_matrix,
    plot_confusion,
)
from ._proxy_a_distance import ProxyADistance, proxy_a_distance
from ._report import ShiftReport, plot_shift, shift_report

__all__ = [
    "DISTANCE_KINDS",
    "EMBED_METHODS",
    "SUBSAMPLE_MODES",
    "ClassSeparation",
    "ClassificationMetrics",
    "CollectedFeatures",
    "DomainDistances",
    "Embedding",
    "FeatureCollector",
    "ProxyADistance",
    "ShiftReport",
    "class_separation",
    "classification_metrics",
    "confusion_matrix",
    "domain_distance_matrix",
    "embed_2d",
    "plot_confusion",
    "plot_shift",
    "proxy_a_distance",
    "shift_report",
]
