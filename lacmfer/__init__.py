"""lacmfer: LA-CMFER for cross-multidomain facial expression recognition in PyTorch.

Implements "Learning with Alignments: Tackling the Inter- and Intra-domain Shifts for
Cross-multidomain Facial Expression Recognition" (Yang et al., ACM MM 2024, arXiv:2407.05688):
dual-level inter-domain alignment, multi-view clustering consistency and multi-view pseudo-label
voting as standalone losses, plus the attention-based global/local model.

Subpackages:
    :mod:`lacmfer.functional` -- the maths, as functions.
    :mod:`lacmfer.losses` -- the same maths as :class:`torch.nn.Module` losses with settings and state.
    :mod:`lacmfer.modules` -- encoder, CBAM attention blocks, global and local branches, the model.
    :mod:`lacmfer.data` -- FER image lists, the six-dataset protocol, samplers, synthetic FER data.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
