"""Model components of LA-CMFER: encoder, CBAM attention blocks, global and local branches, model.

See :class:`LACMFER` for the full model and the note on separate source/target forward calls.
"""

from lacmfer.modules._attention import CBAM, AttentionBasicBlock, BasicBlock, PatchBatchNorm2d
from lacmfer.modules._branches import SHARE_MODES, GlobalBranch, LocalPatchBranch
from lacmfer.modules._encoder import EncoderLoadReport, ResNet18Encoder
from lacmfer.modules._model import LACMFER, LACMFEROutput

__all__ = [
    "CBAM",
    "LACMFER",
    "SHARE_MODES",
    "AttentionBasicBlock",
    "BasicBlock",
    "EncoderLoadReport",
    "GlobalBranch",
    "LACMFEROutput",
    "LocalPatchBranch",
    "PatchBatchNorm2d",
    "ResNet18Encoder",
]
