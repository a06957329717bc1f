r"""The LA-CMFER model: shared encoder, global and local branches, one head per branch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

from torch import Tensor, nn

from lacmfer._checks import GridLike, check_choice, check_positive_int, check_real
from lacmfer.modules._branches import GlobalBranch, LocalPatchBranch
from lacmfer.modules._encoder import ResNet18Encoder, StateDictOrPath

__all__ = ["LACMFER", "LACMFEROutput"]

FUSIONS = ("mean", "global", "local")
VIEWS = ("fused", "global", "local")


class LACMFEROutput(NamedTuple):
    r"""Output of :meth:`LACMFER.forward`.

    Attributes:
        feat_g: Global-branch feature :math:`f_G`, shape :math:`(B, D_G)`.
        feat_l: Local-branch feature :math:`f_L`, shape :math:`(B, D_L)`.
        logits_g: Global-head logits :math:`z_G`, shape :math:`(B, K)`.
        logits_l: Local-head logits :math:`z_L`, shape :math:`(B, K)`.
        logits: Prediction logits, :math:`(z_G + z_L)/2` for ``fusion="mean"``, shape
            :math:`(B, K)`.
    """

    feat_g: Tensor
    feat_l: Tensor
    logits_g: Tensor
    logits_l: Tensor
    logits: Tensor


class LACMFER(nn.Module):
    r"""LA-CMFER: a shared ResNet-18 encoder, a global and a local attention branch, two heads.

    Yang et al., "Learning with Alignments: Tackling the Inter- and Intra-domain Shifts for
    Cross-multidomain Facial Expression Recognition", ACM MM 2024 (arXiv:2407.05688):

    .. math::
        m = E(x),\quad f_G = A_G(m),\quad f_L = A_L(m),\quad
        z_G = C_G f_G,\quad z_L = C_L f_L,\quad z = (z_G + z_L)/2,

    with :math:`E` = :class:`ResNet18Encoder`, :math:`A_G` = :class:`GlobalBranch`,
    :math:`A_L` = :class:`LocalPatchBranch`, :math:`C_G, C_L` linear heads. Every sub-network built
    is used by :meth:`forward`.

    **Separate forward calls per domain.** Pass source and target batches through the model in
    *separate* calls (``model(x_s)``, then ``model(x_t)``), never concatenated: in training mode
    BatchNorm then normalises each domain with its own batch statistics, as the method prescribes.

    **Sizes.** The defaults are the paper's (:math:`f_G, f_L \in \mathbb{R}^{1024}` and a
    ``(B, 128, 28, 28)`` encoder map for 224×224 input). For cheap CPU experiments,
    :meth:`tiny` keeps the same architecture family (same encoder, same block types, same 2×2
    patch grid and sharing) with narrower and shallower branches: ``global_channels=(64, 256)``,
    ``global_blocks=(1, 1)``, ``local_channels=64``, ``local_blocks=1`` (:math:`f_G, f_L \in
    \mathbb{R}^{256}`); the branch arguments below set any other size. Feature sizes follow the
    settings, :math:`D_G` = ``global_channels[-1]`` and :math:`D_L = P \cdot` ``local_channels``
    (see :attr:`feature_dims`); the heads are ``Linear(D_G, K)`` and ``Linear(D_L, K)``.

    Args:
        num_classes: Number of classes ``K``.
        encoder_weights: Optional torchvision ``resnet18`` state dict or checkpoint path for the
            encoder (see :meth:`ResNet18Encoder.load_torchvision_state_dict`); what was loaded and
            ignored is logged and kept in ``model.encoder.load_report``.
        share: Sub-network sharing of the local branch: ``"column"`` (paper's code), ``"none"``,
            ``"all"``.
        grid: Patch grid of the local branch.
        global_channels: Output channels of each global-branch stage.
        global_blocks: Attention blocks of each global-branch stage.
        local_channels: Output channels of each local sub-network (per patch).
        local_blocks: Attention blocks of each local sub-network.
        patch_norm: BatchNorm statistics of shared local sub-networks, ``"per_patch"`` or
            ``"joint"`` (see :class:`LocalPatchBranch`).
        reduction: CBAM reduction ratio.
        spatial_kernel_size: CBAM spatial kernel size (49 as in the paper's code, 7 in CBAM's).
        fusion: What ``forward(...).logits`` holds and :meth:`predict` returns by default:
            ``"mean"`` (:math:`(z_G + z_L)/2`), ``"global"`` (:math:`z_G`) or ``"local"``
            (:math:`z_L`).

    Shape:
        - Input: :math:`(B, 3, H, W)` with ``H``, ``W`` such that the encoder map (``H/8``) is
          divisible by the grid, e.g. 224, 112 or 64.
        - Output: :class:`LACMFEROutput` of :math:`(B, D_G)`, :math:`(B, D_L)` features and
          :math:`(B, K)` logits.

    Raises:
        TypeError: If a setting has the wrong type.
        ValueError: If a setting is out of range; at call time for a wrongly shaped input.

    Example:
        >>> import torch
        >>> model = LACMFER.tiny(num_classes=7, spatial_kernel_size=7)
        >>> out = model(torch.randn(2, 3, 64, 64))
        >>> out.feat_g.shape, out.feat_l.shape, out.logits.shape
        (torch.Size([2, 256]), torch.Size([2, 256]), torch.Size([2, 7]))
        >>> torch.allclose(out.logits, (out.logits_g + out.logits_l) / 2)
        True
        >>> model.feature_dims
        (256, 256)
    """

    def __init__(
        self,
        num_classes: int = 7,
        *,
        encoder_weights: Optional[StateDictOrPath] = None,
        share: str = "column",
        grid: GridLike = (2, 2),
        global_channels: Sequence[int] = (256, 1024),
        global_blocks: Sequence[int] = (6, 3),
        local_channels: int = 256,
        local_blocks: int = 2,
        patch_norm: str = "per_patch",
        reduction: int = 16,
        spatial_kernel_size: int = 49,
        fusion: str = "mean",
    ):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.fusion = check_choice(fusion, "fusion", FUSIONS)
        self.encoder = ResNet18Encoder()
        if encoder_weights is not None:
            self.encoder._load(encoder_weights, "encoder_weights", warn=True)
        c = self.encoder.out_channels
        self.global_branch = GlobalBranch(
            c,
            channels=global_channels,
            blocks=global_blocks,
            reduction=reduction,
            spatial_kernel_size=spatial_kernel_size,
        )
        self.local_branch = LocalPatchBranch(
            c,
            local_channels,
            grid=grid,
            blocks=local_blocks,
            share=share,
            patch_norm=patch_norm,
            reduction=reduction,
            spatial_kernel_size=spatial_kernel_size,
        )
        self.head_g = nn.Linear(self.global_branch.out_features, num_classes)
        self.head_l = nn.Linear(self.local_branch.out_features, num_classes)

    @classmethod
    def tiny(cls, num_classes: int = 7, **kwargs: Any) -> LACMFER:
        r"""A narrow, shallow preset of the same architecture for CPU experiments.

        ``global_channels=(64, 256)``, ``global_blocks=(1, 1)``, ``local_channels=64``,
        ``local_blocks=1``; the encoder is the full ResNet-18 stem/layer1/layer2 (so ImageNet
        weights still load). Any constructor argument may be passed to override these.

        Args:
            num_classes: Number of classes ``K``.
            **kwargs: Further :class:`LACMFER` arguments (they take precedence over the preset).

        Returns:
            The model, with :math:`f_G, f_L \in \mathbb{R}^{256}` for the 2×2 grid.
        """
        preset: dict[str, Any] = {
            "global_channels": (64, 256),
            "global_blocks": (1, 1),
            "local_channels": 64,
            "local_blocks": 1,
        }
        preset.update(kwargs)
        return cls(num_classes, **preset)

    @property
    def feature_dims(self) -> tuple[int, int]:
        """Feature sizes ``(D_G, D_L)`` of the global and local branches."""
        return self.global_branch.out_features, self.local_branch.out_features

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, fusion={self.fusion!r}"

    def _fuse(self, logits_g: Tensor, logits_l: Tensor, view: str) -> Tensor:
        if view == "global":
            return logits_g
        if view == "local":
            return logits_l
        return (logits_g + logits_l) / 2

    def _encode(self, x: Tensor) -> Tensor:
        """The encoder map of ``x``, checked against the local branch's patch grid."""
        m = self.encoder(x)
        gh, gw = self.local_branch.grid
        h, w = m.shape[-2], m.shape[-1]
        if self.training and x.shape[0] == 1 and self.global_branch.map_size(h, w) == (1, 1):
            raise ValueError(
                f"`x` with shape {tuple(x.shape)} in training mode: the global branch maps one "
                "image this small to 1×1, and BatchNorm needs more than one value per channel to "
                "train; give a batch of 2 or more, larger images, or call model.eval()"
            )
        if h % gh or w % gw:
            raise ValueError(
                f"`x` with shape {tuple(x.shape)} gives an encoder map of {h}×{w}, which the "
                f"local branch's {gh}×{gw} patch grid cannot split into equal patches; the encoder "
                f"downsamples 8×, so images whose height is a multiple of {8 * gh} and width a "
                f"multiple of {8 * gw} work (e.g. {24 * gh}×{24 * gw})"
            )
        return m

    def forward(self, x: Tensor) -> LACMFEROutput:
        m = self._encode(x)
        feat_g = self.global_branch(m)
        feat_l = self.local_branch(m)
        logits_g = self.head_g(feat_g)
        logits_l = self.head_l(feat_l)
        logits = self._fuse(logits_g, logits_l, self.fusion)
        return LACMFEROutput(feat_g, feat_l, logits_g, logits_l, logits)

    def predict(self, x: Tensor, view: Optional[str] = None) -> Tensor:
        """Prediction logits of one view; only the branches that view needs are run.

        Runs in the module's current mode (call ``model.eval()`` first for inference).

        Args:
            x: Images, shape :math:`(B, 3, H, W)`.
            view: ``"fused"`` (:math:`(z_G + z_L)/2`), ``"global"`` (:math:`z_G`), ``"local"``
                (:math:`z_L`), or ``None`` for the model's ``fusion`` setting.

        Returns:
            Logits of shape :math:`(B, K)`.

        Raises:
            ValueError: If ``view`` is not one of the above, or the local branch's grid cannot
                split the encoder map of ``x`` (a view that uses the local branch).
        """
        if view is None:
            view = {"mean": "fused", "global": "global", "local": "local"}[self.fusion]
        check_choice(view, "view", VIEWS)
        if view == "global":  # the local branch's grid does not constrain the global view
            return self.head_g(self.global_branch(self.encoder(x)))
        m = self._encode(x)
        if view == "local":
            return self.head_l(self.local_branch(m))
        return self._fuse(
            self.head_g(self.global_branch(m)), self.head_l(self.local_branch(m)), "mean"
        )

    def parameter_groups(
        self,
        lr: float,
        *,
        encoder_lr_scale: float = 0.1,
        weight_decay: Optional[float] = None,
    ) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the encoder at ``lr·encoder_lr_scale``, the rest at ``lr``.

        The paper trains the (pretrained) encoder at a tenth of the learning rate of the branches
        and heads (1e-3 vs 1e-2). Each group carries a ``"name"`` (``"encoder"``/``"branches"``).

        Args:
            lr: Learning rate of the branches and heads.
            encoder_lr_scale: Factor applied to ``lr`` for the encoder.
            weight_decay: If given, set on both groups.

        Returns:
            Two parameter-group dicts for a :class:`torch.optim.Optimizer`, covering every
            parameter exactly once.

        Raises:
            TypeError: If a setting is not a real number.
            ValueError: If ``lr`` or ``encoder_lr_scale`` is not positive, or ``weight_decay`` is
                negative.

        Example:
            >>> import torch
            >>> model = LACMFER.tiny(spatial_kernel_size=7)
            >>> groups = model.parameter_groups(1e-2)
            >>> [(g["name"], g["lr"]) for g in groups]
            [('encoder', 0.001), ('branches', 0.01)]
            >>> opt = torch.optim.SGD(groups, lr=1e-2, momentum=0.9, nesterov=True)
        """
        lr = check_real(lr, "lr", minimum=0.0, exclusive_minimum=True)
        scale = check_real(
            encoder_lr_scale, "encoder_lr_scale", minimum=0.0, exclusive_minimum=True
        )
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        groups: list[dict[str, Any]] = [
            {"params": list(self.encoder.parameters()), "lr": lr * scale, "name": "encoder"},
            {
                "params": [p for p in self.parameters() if id(p) not in encoder_ids],
                "lr": lr,
                "name": "branches",
            },
        ]
        if weight_decay is not None:
            wd = check_real(weight_decay, "weight_decay", minimum=0.0)
            for g in groups:
                g["weight_decay"] = wd
        return groups
