r"""Check FER image lists: format, labels, duplicates, files, and train/test overlap.

Run as a program::

    python -m lacmfer.data.check LIST [LIST ...] [--root DIR] [--strip-prefix P] [--test LIST]
                                 [--num-classes 7] [--no-decode] [--json]
    python -m lacmfer.data.check --protocol [--root DIR] [--strip-prefix P] [--json]

``--protocol`` checks the lists of the six-dataset protocol shipped with the package
(:func:`~lacmfer.data.protocol_lists_dir`; all but AffectNet's), each adaptation list against its
domain's test list, and each separate test list on its own.

For every list it reports the number of entries, the class histogram, labels outside
``[0, num_classes)``, malformed lines (with line numbers), duplicate lines (the same image listed
more than once, and whether the copies disagree on the label) and, when ``--root`` is given,
missing files and files that exist but do not decode (Pillow needed for the decode check). With
``--test`` it reports how many images of the test list each other list contains.

An image is identified by its normalised path (``\`` -> ``/``, ``.``/``..`` resolved) joined to
``--root`` if given, else to the folder of the list that names it (the published lists' paths are
relative to their own folder). On the protocol's lists this shows that ``RAF_train.txt`` holds all
3031 images of ``RAF_test.txt`` under the very same ``test_XXXX_aligned.jpg`` names, that
``CK.txt``, ``JAFFE.txt`` and ``Oulu.txt`` serve as their own test sets, and that ``Oulu.txt``
names 507 images two or more times (1068 extra lines).

The exit status is 1 when any problem is found (malformed or out-of-range lines, duplicates,
missing or unreadable files, overlap with the test list), 2 on a usage error, else 0.

This module is the program's entry point; the code lives in ``lacmfer.data._check`` so that importing
:mod:`lacmfer.data` does not import this module (``python -m`` would then warn that it ran a module
already imported).
"""

from __future__ import annotations

import sys

from ._check import ListReport, check_image_list, check_image_lists, check_protocol_lists, main

__all__ = ["ListReport", "check_image_list", "check_image_lists", "check_protocol_lists", "main"]

if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in the tests
    sys.exit(main())
