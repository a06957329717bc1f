r"""The maths of LA-CMFER as plain functions (the :mod:`lacmfer.losses` modules call these).

Shape glossary: ``B_s``/``B_t`` source/target batch, ``K`` classes, ``D`` features, ``G`` source
domains, ``P`` patches, ``C``/``H``/``W`` feature maps.

Common behaviour of the loss functions:

* Settings are keyword-only and validated on every call (static checks only: shapes, dtypes and
  Python values). Label ranges are checked when ``validate_args`` is True, or by default on CPU,
  where reading values costs nothing; never while ``torch.compile`` traces.
* No Python loop over samples, classes or class pairs and no data-dependent shape: they compile with
  ``torch.compile(fullgraph=True)``. With ``sync_dist=False`` (the default) a loss reads nothing back
  to the host, except the opt-in label-range check above (on CPU by default, where it is free).
  With ``sync_dist=True`` in a multi-rank group, the inter-domain alignment functions (which gather
  the source and target batches) exchange the per-rank batch sizes and read them on the host, one
  small all-gather per gathered batch; the consistency and voting losses only all-reduce
  fixed-shape tensors and read nothing.
  Outputs stay on the inputs' device; the loss modules' buffers (``kept_fraction``) follow it too.
* Kernel maths runs in float32 (or the input's float64) with autocast disabled; half-precision inputs
  give float32 losses.
* ``sync_dist=True`` computes the loss over the global batch of all ranks of a
  :mod:`torch.distributed` group (differentiable gathers / all-reduces). Each rank gets the same
  value; gradients follow the DistributedDataParallel convention (each rank's inputs receive
  ``world_size`` times the partial derivative, so DDP's averaging gives the parameters exactly the
  single-process gradient on the concatenated batch). Ranks may hold different batch sizes.
"""

from ._alignment import (
    AlignmentTerms,
    cluster_level_alignment,
    dual_level_alignment,
    hardness_weights,
    sample_level_alignment,
)
from ._class_confusion import minimum_class_confusion
from ._consistency import multi_view_clustering_consistency, prediction_similarity_matrix
from ._coral import coral
from ._dann import domain_adversarial_loss, gradient_reversal
from ._kernel import gaussian_kernel, mmd2
from ._moment_matching import moment_matching
from ._objective import CONSISTENCY_KINDS, LACMFERTerms, TwoViewOutput, lacmfer_loss
from ._patches import merge_patches, split_patches
from ._pseudo_label import (
    RefinedPseudoLabels,
    multi_view_pseudo_label_loss,
    pseudo_label_refinement,
    refine_pseudo_labels,
)
from ._schedules import linear_warmup, sigmoid_ramp

__all__ = [
    "CONSISTENCY_KINDS",
    "AlignmentTerms",
    "LACMFERTerms",
    "RefinedPseudoLabels",
    "TwoViewOutput",
    "cluster_level_alignment",
    "coral",
    "domain_adversarial_loss",
    "dual_level_alignment",
    "gaussian_kernel",
    "gradient_reversal",
    "hardness_weights",
    "lacmfer_loss",
    "linear_warmup",
    "merge_patches",
    "minimum_class_confusion",
    "mmd2",
    "moment_matching",
    "multi_view_clustering_consistency",
    "multi_view_pseudo_label_loss",
    "prediction_similarity_matrix",
    "pseudo_label_refinement",
    "refine_pseudo_labels",
    "sample_level_alignment",
    "sigmoid_ramp",
    "split_patches",
]
