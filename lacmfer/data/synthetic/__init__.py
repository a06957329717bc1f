r"""Synthetic multi-domain FER data: procedural faces in the styles of the protocol's six datasets.

The images of the six FER datasets belong to their owners and are distributed on their terms
(``docs/guides/datasets.rst``); ``lacmfer`` ships none. This module draws faces instead, so that
the method can be run, tested and studied end to end without them. A face is rendered from smooth
shape functions on a coordinate grid -- soft ellipses for the head, eyes and irises, bands along
curves for brows, lips and wrinkles, Gaussians for nostrils -- batched over samples (no per-sample
Python loop) and seeded by a :class:`torch.Generator`, so a given ``(domain, size, image_size,
seed)`` gives the same images on every run.

**Expressions are carried by local cues**, as in the Facial Action Coding System: brow height
(AU1/2, AU4), brow slant (inner ends up for sadness and fear, down for anger), eye openness (AU5
wide, AU6/7 squint), nose wrinkle (AU9), mouth corner height (AU12 smile, AU15 down), mouth
opening and width (AU25/26/27, AU20 stretch), upper-lip raise (AU10), forehead wrinkles, brow
furrow and nasolabial folds (:data:`EXPRESSION_CUES`). Each sample has an **intensity** ``a`` in
``[0, 1]``: its cue values are ``rest + a * (class - rest)`` with ``rest`` the domain's neutral
face, so low-intensity samples drift toward neutral and become ambiguous (intra-domain shift).
Identities vary face shape, feature positions and sizes, skin tone, hair and a resting expression.

**Six styles** named after the datasets differ the way those datasets do (inter-domain shift):

============ ====== ============ ============ ============================================
domain       colour background   subjects     other
============ ====== ============ ============ ============================================
CK+          grey   plain light  118          posed peak intensity, bright even light
JAFFE        grey   plain dark   10           subtle posed intensity, long dark hair
Oulu-CASIA   grey   plain dark   80           side light, darker, slightly soft
AffectNet    colour cluttered    one each     pose, occluders, strong colour casts and
                                              lighting, own display style, 12% label
                                              noise, skewed prior
RAF-DB       colour cluttered    one each     tight aligned crops, occluders, 8% label noise
FER-2013     grey   cluttered    one each     rendered at 0.8 of the size then upsampled,
                                              noise, pose, tight crop, 10% label noise
============ ====== ============ ============ ============================================

Class priors are the class histograms of the protocol's lists (AffectNet's: of its manually
annotated training set), in :attr:`SyntheticStyle.class_counts`. Lab domains draw identities from a
fixed pool (the same subjects in every split, as in the real datasets); in-the-wild domains draw a
new identity per sample. Each domain also carries a small fixed "display style" offset of the
expression cues, its resting face included (posed vs spontaneous expressions, cultural display
rules), so the same class looks slightly different in each domain (most in AffectNet).

Label noise replaces a label, with the domain's rate, by a class often confused with it (e.g.
sadness -> neutral, fear -> surprise); ``labels`` holds the noisy labels, ``clean_labels`` the
rendered expressions.

* :class:`SyntheticFER` -- one domain as a dataset; :func:`synthetic_domains` -- the six as the
  ``name -> DomainSplits`` mapping of :func:`~lacmfer.data.leave_one_domain_out`.
* :func:`render_faces` -- faces of given expressions in a style; :class:`SyntheticStyle`,
  :func:`synthetic_style` and :func:`canonical_domain` -- the styles and their names.
* :func:`pretrained_encoder` -- a ResNet-18 encoder pretrained on synthetic faces in random styles
  without expression labels, this data's stand-in for the ImageNet weights the paper starts from
  (:func:`pretrain_encoder` and :class:`PretrainConfig` for other settings).

``lacmfer.data`` does not import this module: ``from lacmfer.data.synthetic import SyntheticFER``.
"""

from ._dataset import SyntheticFER, synthetic_domains
from ._faces import render_faces
from ._pretrain import PretrainConfig, pretrain_encoder, pretrained_encoder
from ._styles import (
    EXPRESSION_CUES,
    SYNTHETIC_DOMAINS,
    SyntheticStyle,
    canonical_domain,
    synthetic_style,
)

__all__ = [
    "EXPRESSION_CUES",
    "SYNTHETIC_DOMAINS",
    "PretrainConfig",
    "SyntheticFER",
    "SyntheticStyle",
    "canonical_domain",
    "pretrain_encoder",
    "pretrained_encoder",
    "render_faces",
    "synthetic_domains",
    "synthetic_style",
]
