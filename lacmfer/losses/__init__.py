"""LA-CMFER's losses as :class:`torch.nn.Module` objects.

Each module holds keyword-only settings (validated in ``__init__``) and state, and its ``forward`` is
one call of the function of the same name in :mod:`lacmfer.functional`, which holds the maths.
"""

from ._alignment import CLUSTER_RAMPS, DualLevelInterDomainAlignment
from ._intra import MultiViewClusteringConsistency, PseudoLabelRefiner

__all__ = [
    "CLUSTER_RAMPS",
    "DualLevelInterDomainAlignment",
    "MultiViewClusteringConsistency",
    "PseudoLabelRefiner",
]
