r"""Unsupervised model selection: validators that score a checkpoint without target labels.

Domain adaptation trains without target labels, so it must also *select* without them: which
checkpoint, which loss weight, which schedule. A validator maps a model's outputs on data the
selection may legally use to a score, **higher is better** for every score here, and the selection
keeps the checkpoint or setting with the best score.

**The honest-selection rule.** Target *labels* never enter a selection. Target-side validators may
read the model's predictions on the unlabelled target adaptation set, source-side validators the
labels of a held-out source split that the model never trained on. The target test labels are read
once, to report the accuracy of the model that was selected; choosing the checkpoint with the best
target-test accuracy (what the published LA-CMFER numbers do, :doc:`/method`) is selection on the
test set and overstates the accuracy a user would get.

Target side (predictions only):

* :func:`entropy_score` / :class:`EntropyScore`: negative mean prediction entropy (confidence).
* :func:`im_score` / :class:`IMScore`: information maximisation (confidence and class balance).
* :func:`snd_score` / :class:`SNDScore`: soft neighbourhood density (Saito et al., ICCV 2021).
* :func:`bnm_score` / :class:`BNMScore`: batch nuclear norm (Cui et al., CVPR 2020).
* :func:`agreement_score` / :class:`AgreementScore`: agreement of the global and local views.
* :func:`score_all` / :class:`ValidatorSuite`: all of the above from one pass.

Source side (held-out source labels):

* :func:`source_accuracy` / :class:`SourceAccuracy`: the classic baseline.
* :func:`dev_score` with :func:`density_ratio_weights`: Deep Embedded Validation (You et al., ICML
  2019), the importance-weighted source risk.

Functions score a whole set at once; the classes (``update`` / ``compute`` / ``reset``) accumulate a
loader batch by batch, equal the function on the concatenation, and combine ranks under
:mod:`torch.distributed` with ``sync_dist=True``. All maths runs in float32 or better with autocast
disabled, has no Python loop over samples or classes, and gives finite scores for finite inputs. No
validator is reliable on its own (Musgrave et al., 2022, :doc:`/api/validation`): log them all.
"""

from ._dev import density_ratio_weights, dev_score
from ._scores import (
    agreement_score,
    bnm_score,
    entropy_score,
    im_score,
    score_all,
    snd_score,
    source_accuracy,
)
from ._streaming import (
    TARGET_VALIDATORS,
    AgreementScore,
    BNMScore,
    EntropyScore,
    IMScore,
    SNDScore,
    SourceAccuracy,
    ValidatorSuite,
)

__all__ = [
    "TARGET_VALIDATORS",
    "AgreementScore",
    "BNMScore",
    "EntropyScore",
    "IMScore",
    "SNDScore",
    "SourceAccuracy",
    "ValidatorSuite",
    "agreement_score",
    "bnm_score",
    "density_ratio_weights",
    "dev_score",
    "entropy_score",
    "im_score",
    "score_all",
    "snd_score",
    "source_accuracy",
]
