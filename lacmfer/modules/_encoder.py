r"""The shared encoder :math:`E` of LA-CMFER: ResNet-18 stem + ``layer1`` + ``layer2``."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from lacmfer._checks import _shape
from lacmfer._serialization import load_error_reason
from lacmfer.modules._attention import BasicBlock, init_resnet_weights

__all__ = ["EncoderLoadReport", "ResNet18Encoder"]

_logger = logging.getLogger(__name__)

StateDictOrPath = Union[Mapping[str, Tensor], str, "os.PathLike[str]"]

#: Top-level torchvision ``resnet18`` keys that the encoder does not have (dropped on load).
_TORCHVISION_ONLY_PREFIXES = ("layer3.", "layer4.", "fc.")


class EncoderLoadReport(NamedTuple):
    """What :meth:`ResNet18Encoder.load_torchvision_state_dict` did.

    Attributes:
        loaded_keys: Keys copied into the encoder (sorted).
        ignored_keys: Keys of the checkpoint the encoder has no slot for (``layer3.*``,
            ``layer4.*``, ``fc.*`` for a torchvision ``resnet18`` checkpoint), sorted.
    """

    loaded_keys: tuple[str, ...]
    ignored_keys: tuple[str, ...]


class ResNet18Encoder(nn.Module):
    r"""ResNet-18 stem, ``layer1`` and ``layer2``: the encoder :math:`E` shared by both branches.

    ``conv1 (7×7, stride 2) → bn1 → relu → maxpool (3×3, stride 2) → layer1 (2 basic blocks, 64 ch)
    → layer2 (2 basic blocks, 128 ch, first stride 2)``. Parameter and buffer names are exactly
    those of torchvision's ``resnet18`` (``conv1.weight``, ``bn1.running_mean``,
    ``layer2.0.downsample.0.weight``, ...), so an ImageNet ``resnet18`` checkpoint file loads with
    :meth:`load_torchvision_state_dict` without importing torchvision or downloading anything.

    Note:
        Source and target batches should go through the encoder in *separate* forward calls, so that
        BatchNorm normalises each domain with its own batch statistics in training mode (LA-CMFER,
        Yang et al., ACM MM 2024).

    Args:
        weights: Optional torchvision ``resnet18`` state dict, or a path to a file holding one,
            loaded with :meth:`load_torchvision_state_dict` after initialisation; its report is
            kept in :attr:`load_report` and logged.

    Attributes:
        load_report: The :class:`EncoderLoadReport` of the last
            :meth:`load_torchvision_state_dict` call (also made by ``weights=`` and by
            ``LACMFER(encoder_weights=...)``), or ``None`` if no checkpoint was loaded.

    Shape:
        - Input: :math:`(B, 3, H, W)`.
        - Output: :math:`(B, 128, H', W')` with :math:`H' = \lceil H/8 \rceil` for ``H`` a multiple
          of 8 (``(B, 128, 28, 28)`` for 224×224 input, ``(B, 128, 14, 14)`` for 112×112).

    Raises:
        ValueError: At call time, if the input is not ``(B, 3, H, W)``.
        TypeError: At call time, if the input is not a floating-point tensor.

    Example:
        >>> import torch
        >>> encoder = ResNet18Encoder()
        >>> encoder(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 128, 8, 8])
        >>> encoder.out_channels
        128
    """

    out_channels: int = 128

    def __init__(self, *, weights: Optional[StateDictOrPath] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        init_resnet_weights(self)
        self.load_report: Optional[EncoderLoadReport] = None
        if weights is not None:
            self._load(weights, "weights", warn=True)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"`x` must have shape (B, 3, H, W), got shape {_shape(x)}")
        if not x.is_floating_point():
            raise TypeError(
                f"`x` must be a floating-point tensor (images as floats, e.g. uint8 / 255 and "
                f"normalised), got dtype {x.dtype}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer2(self.layer1(x))

    def load_torchvision_state_dict(
        self, state_dict_or_path: StateDictOrPath, *, warn: bool = True
    ) -> EncoderLoadReport:
        """Load the stem/``layer1``/``layer2`` weights of a torchvision ``resnet18`` checkpoint.

        Every parameter and buffer of the encoder must be present with the right shape (strict);
        ``num_batches_tracked`` may be absent, as in checkpoints saved before PyTorch 0.4.1 such as
        torchvision's original ImageNet file (it is then set to 0). Keys the encoder has no slot
        for (``layer3.*``, ``layer4.*``, ``fc.*``) are ignored and reported: the report is
        returned, kept in :attr:`load_report`, and logged at ``INFO`` level on the
        ``lacmfer.modules._encoder`` logger (:mod:`logging`; ``logging.basicConfig(level="INFO")``
        shows it). Ignored keys outside those three prefixes also raise a :class:`UserWarning`.

        Args:
            state_dict_or_path: A state dict (``str -> Tensor`` mapping), or the path of a file
                holding one, read with ``torch.load(path, map_location="cpu", weights_only=True)``.
            warn: Emit a :class:`UserWarning` for ignored keys that are *not* under ``layer3.``,
                ``layer4.`` or ``fc.`` (usually a sign of a checkpoint of another architecture).

        Returns:
            An :class:`EncoderLoadReport` with the loaded and the ignored keys.

        Raises:
            TypeError: If the argument (or the file's content) is not a mapping of tensors.
            ValueError: If an encoder key is missing or has the wrong shape, or the file is not a
                readable checkpoint (truncated, not written by ``torch.save``, or holding objects
                other than tensors and containers: nothing in it runs).
            FileNotFoundError: If the path names no file.
        """
        return self._load(state_dict_or_path, "state_dict_or_path", warn=warn)

    def _load(self, obj: StateDictOrPath, argument: str, *, warn: bool) -> EncoderLoadReport:
        """:meth:`load_torchvision_state_dict`, its errors naming ``argument`` (the caller's)."""
        state = self._read_state_dict(obj, argument)
        own = self.state_dict()
        missing = sorted(
            k for k in own if k not in state and not k.endswith(".num_batches_tracked")
        )
        if missing:
            raise ValueError(
                f"`{argument}` is missing {len(missing)} key(s) of the ResNet-18 encoder "
                f"(torchvision resnet18 names expected): {missing[:8]}"
                + (" ..." if len(missing) > 8 else "")
                + _prefix_hint(state, missing)
            )
        wrong = [
            f"{k}: expected {tuple(v.shape)}, got {tuple(state[k].shape)}"
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        if wrong:
            raise ValueError(
                f"`{argument}` has key(s) with the wrong shape for the ResNet-18 encoder: "
                + "; ".join(wrong[:8])
                + (" ..." if len(wrong) > 8 else "")
            )
        loaded = {k: v for k, v in state.items() if k in own}
        ignored = tuple(sorted(k for k in state if k not in own))
        loaded_keys = tuple(sorted(loaded))
        for k, v in own.items():  # pre-0.4.1 checkpoints have no `num_batches_tracked`
            if k not in loaded:
                loaded[k] = torch.zeros_like(v)
        self.load_state_dict(loaded, strict=True)
        unexpected = [k for k in ignored if not k.startswith(_TORCHVISION_ONLY_PREFIXES)]
        if warn and unexpected:
            warnings.warn(
                f"ResNet18Encoder ignored {len(unexpected)} checkpoint key(s) that are not part of "
                f"torchvision's resnet18 layer3/layer4/fc: {unexpected[:8]}",
                UserWarning,
                stacklevel=2,
            )
        report = EncoderLoadReport(loaded_keys, ignored)
        self.load_report = report
        prefixes = sorted({k.split(".", 1)[0] + ".*" for k in ignored})
        _logger.info(
            "ResNet18Encoder loaded %d checkpoint key(s) and ignored %d%s",
            len(loaded_keys),
            len(ignored),
            f" ({', '.join(prefixes)})" if ignored else "",
        )
        return report

    @staticmethod
    def _read_state_dict(obj: Any, argument: str) -> dict[str, Tensor]:
        if isinstance(obj, (str, os.PathLike)):
            where = f"the content of {os.fspath(obj)!r} (`{argument}`)"
            try:
                obj = torch.load(os.fspath(obj), map_location="cpu", weights_only=True)
            except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
                if isinstance(err, FileNotFoundError):
                    raise FileNotFoundError(f"`{argument}`: no file {os.fspath(obj)!r}") from err
                raise ValueError(
                    f"`{argument}`: {os.fspath(obj)!r} is not a readable checkpoint "
                    f"({load_error_reason(err)})"
                ) from err
        else:
            where = f"`{argument}`"
        if not isinstance(obj, Mapping):
            raise TypeError(
                f"{where} must be a state dict (a mapping of str to Tensor) or a path, got "
                f"{type(obj).__name__}"
            )
        bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
        if bad:
            nested = [
                k
                for k in bad
                if isinstance(obj[k], Mapping)
                and obj[k]
                and all(isinstance(v, Tensor) for v in obj[k].values())
            ]
            hint = (
                f"; it holds a state dict under {str(nested[0])!r} (a training checkpoint?): pass "
                f"that, e.g. torch.load(path, weights_only=True)[{str(nested[0])!r}]"
                if nested
                else ""
            )
            raise TypeError(
                f"{where} must map str keys to tensors; offending key(s): "
                f"{[str(k) for k in bad[:8]]}{hint}"
            )
        return dict(obj)


def _prefix_hint(state: Mapping[str, Tensor], missing: list[str]) -> str:
    """Where every missing key is in ``state`` behind one prefix (``module.`` of a DDP checkpoint,
    a model's attribute name), a hint that names it; else nothing."""
    prefixes = {k[: -len(m)] for m in missing for k in state if k.endswith("." + m)}
    for prefix in sorted(prefixes, key=len):
        if all(prefix + m in state for m in missing):
            return (
                f"; the checkpoint has them behind the prefix {prefix!r} (a DistributedDataParallel or "
                f"whole-model checkpoint?): pass {{k.removeprefix({prefix!r}): v for k, v in "
                f"state_dict.items()}}"
            )
    return ""
