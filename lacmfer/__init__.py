"""lacmfer: LA-CMFER for cross-multidomain facial expression recognition in PyTorch.

Implements "Learning with Alignments: Tackling the Inter- and Intra-domain Shifts for
Cross-multidomain Facial Expression Recognition" (Yang et al., ACM MM 2024, arXiv:2407.05688):
dual-level inter-domain alignment, multi-view clustering consistency and multi-view pseudo-label
voting as standalone losses, plus the attention-based global/local model.

Subpackages:
    :mod:`lacmfer.functional` -- the maths, as functions.
    :mod:`lacmfer.losses` -- the same maths as :class:`torch.nn.Module` losses with settings and state.
    :mod:`lacmfer.modules` -- encoder, CBAM attention blocks, global and local branches, the model.
    :mod:`lacmfer.data` -- FER image lists, the six-dataset protocol, samplers.
    :mod:`lacmfer.data.synthetic` -- synthetic FER data in the six datasets' styles.
    :mod:`lacmfer.validation` -- unsupervised model selection (scores without target labels).
    :mod:`lacmfer.analysis` -- feature-space diagnostics: domain distances, class separation, maps.
    :mod:`lacmfer.utils` -- run bookkeeping: atomic checkpoints, random states, metrics log.

Conventions shared by the whole package: tensors follow the inputs' device; argument errors are
``TypeError`` (types, dtypes) or ``ValueError`` (shapes, values) with messages that name the argument
and show what was expected and received; the method is restated in ``docs/method.rst`` and cites
Yang et al., ACM MM 2024.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
