r"""The maths of LA-CMFER as plain functions (the :mod:`lacmfer.losses` modules call these).

Shape glossary: ``B_s``/``B_t`` source/target batch, ``K`` classes, ``D`` features, ``G`` source
domains, ``P`` patches, ``C``/``H``/``W`` feature maps.

Common behaviour of the loss functions:

* Settings are keyword-only and validated on every call (static checks only: shapes, dtypes and
  Python values). Label ranges are checked when ``validate_args`` is True, or by default on CPU,
  where reading values costs nothing; never while ``torch.compile`` traces.
* No Python loop over samples, classes or class pairs, no host sync, no data-dependent shape: they
  compile with ``torch.compile(fullgraph=True)``.
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
from ._consistency import multi_view_clustering_consistency, prediction_similarity_matrix
from ._kernel import gaussian_kernel, mmd2
from ._patches import merge_patches, split_patches
from ._pseudo_label import (
    RefinedPseudoLabels,
    multi_view_pseudo_label_loss,
    pseudo_label_refinement,
    refine_pseudo_labels,
)

__all__ = [
    "AlignmentTerms",
    "RefinedPseudoLabels",
    "cluster_level_alignment",
    "dual_level_alignment",
    "gaussian_kernel",
    "hardness_weights",
    "merge_patches",
    "mmd2",
    "multi_view_clustering_consistency",
    "multi_view_pseudo_label_loss",
    "prediction_similarity_matrix",
    "pseudo_label_refinement",
    "refine_pseudo_labels",
    "sample_level_alignment",
    "split_patches",
]
