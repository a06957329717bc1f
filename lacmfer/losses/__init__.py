"""LA-CMFER's losses as :class:`torch.nn.Module` objects.

Each module holds keyword-only settings and state, and its ``forward`` is one call of the function of
the same name in :mod:`lacmfer.functional`, which holds the maths (and whose docstring holds the
equations; the module's own docstring keeps its settings, shapes and an example).

Common behaviour of the loss modules:

* The function checks its settings and inputs at every call. The module stores its settings and
  checks them once more at construction, through the same helpers, so that a wrong setting fails
  where it is written: a ``TypeError`` or ``ValueError`` names the argument, the allowed values and
  the value received.
* ``extra_repr`` shows the settings. ``state_dict`` holds only real state: the step counters of the
  schedules (the alignment's and the objective's ramps, DANN's reversal coefficient) and the weights
  of DANN's discriminator. Pickling drops the process group (which cannot be pickled).
* Buffers follow the input: the refiner's ``kept_fraction`` is assigned from each call's result, on the
  logits' device, so a training step on a GPU transfers nothing to or from the host.
* ``sync_dist`` and ``validate_args`` behave as described in :mod:`lacmfer.functional`.
"""

from ._alignment import DualLevelInterDomainAlignment
from ._base import CLUSTER_RAMPS
from ._class_confusion import MinimumClassConfusionLoss
from ._consistency import MultiViewClusteringConsistency
from ._coral import CORALLoss
from ._dann import DomainAdversarialLoss, GradientReversal
from ._moment_matching import MomentMatchingLoss
from ._objective import LACMFERLoss
from ._pseudo_label import PseudoLabelRefiner

__all__ = [
    "CLUSTER_RAMPS",
    "CORALLoss",
    "DomainAdversarialLoss",
    "DualLevelInterDomainAlignment",
    "GradientReversal",
    "LACMFERLoss",
    "MinimumClassConfusionLoss",
    "MomentMatchingLoss",
    "MultiViewClusteringConsistency",
    "PseudoLabelRefiner",
]
