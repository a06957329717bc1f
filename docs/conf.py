"""Sphinx configuration for the lacmfer documentation.

Build (warnings are errors, as in CI)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

The build needs no network: intersphinx is loaded but given no inventories to fetch.

At build time this file also checks that every public name (every entry of ``__all__`` of
:mod:`lacmfer.functional`, :mod:`lacmfer.losses`, :mod:`lacmfer.modules`, :mod:`lacmfer.data`,
:mod:`lacmfer.data.synthetic` and :mod:`lacmfer.validation`) appears in an ``auto*`` directive of a
page under ``docs/api/``; a missing one is a Sphinx warning, so ``-W`` fails the build on an
undocumented public name. Packages that do not import (yet) or that have no ``__all__`` are skipped.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.util import logging as sphinx_logging
from sphinx.util.docutils import SphinxDirective

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent
sys.path.insert(0, str(REPO_ROOT))


def _version() -> str:
    try:
        return str(importlib.import_module("lacmfer").__version__)
    except Exception:  # pragma: no cover - the docs still build from a bare checkout
        return "unknown"


# -- Project -----------------------------------------------------------------------------------

project = "lacmfer"
author = "the lacmfer contributors"
copyright = "2024-2025, the lacmfer contributors"
release = _version()
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "snippets", "figures", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
nitpicky = False
default_role = "code"
# literal blocks (`::`) are mostly shell commands and program output; Python uses code-block
highlight_language = "text"

# -- autodoc / napoleon ------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autoclass_content = "class"
autodoc_preserve_defaults = True
# nn.Module.forward/extra_repr docstrings would otherwise be repeated on every module
autodoc_inherit_docstrings = False
autodoc_default_options: dict[str, Any] = {}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# "Shape:" is not a built-in napoleon section; render it as a generic one (a rubric + its body).
napoleon_custom_sections = ["Shape", "Shapes"]

# -- intersphinx: no inventories, so the build downloads nothing (it must work without a network) -

intersphinx_mapping: dict[str, tuple[str, Any]] = {}
intersphinx_disabled_reftypes = ["*"]

# -- doctest -----------------------------------------------------------------------------------

# The docstrings' own ``>>>`` examples run under pytest (``--doctest-modules``) in their module's
# namespace; the doctest builder runs only the pages' ``.. testcode::``/``.. doctest::`` blocks.
doctest_test_doctest_blocks = ""
doctest_global_setup = f"""
import os
import runpy
import torch
DOCS_DIR = {str(DOCS_DIR)!r}
torch.manual_seed(0)
"""

# -- HTML --------------------------------------------------------------------------------------

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"lacmfer {release}"
html_theme_options = {
    "description": "Cross-multidomain facial expression recognition (LA-CMFER) in PyTorch",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}

# -- API coverage check ------------------------------------------------------------------------

API_PACKAGES = (
    "lacmfer.functional",
    "lacmfer.losses",
    "lacmfer.modules",
    "lacmfer.data",
    "lacmfer.data.synthetic",
    "lacmfer.validation",
    "lacmfer.analysis",
)
_AUTODOC_RE = re.compile(
    r"^\s*\.\.\s+auto(?:function|class|data|attribute|exception|method|decorator)::\s+([\w.]+)",
    re.MULTILINE,
)
_logger = sphinx_logging.getLogger("lacmfer.docs")


def documented_names(api_dir: Path) -> set[str]:
    """Fully qualified names given to ``auto*`` directives in the ``.rst`` files of ``api_dir``."""
    names: set[str] = set()
    for page in sorted(api_dir.glob("**/*.rst")):
        names.update(_AUTODOC_RE.findall(page.read_text(encoding="utf-8")))
    return names


def missing_public_names(api_dir: Path) -> list[str]:
    """Public names (``__all__`` of the API packages that import) with no ``auto*`` directive."""
    documented = documented_names(api_dir)
    missing: list[str] = []
    for package in API_PACKAGES:
        try:
            module = importlib.import_module(package)
        except Exception as exc:  # not written yet, or broken: autodoc reports the latter itself
            _logger.info("[lacmfer] API coverage: skipping %s (%s)", package, exc)
            continue
        public = getattr(module, "__all__", None)
        if not public:
            continue
        missing.extend(
            f"{package}.{name}" for name in public if f"{package}.{name}" not in documented
        )
    return missing


def _check_api_coverage(app: Any, env: Any) -> None:
    for name in missing_public_names(Path(app.srcdir) / "api"):
        _logger.warning(
            "public name %s (in __all__) has no autodoc directive in docs/api/*.rst",
            name,
            type="lacmfer",
            subtype="api-coverage",
        )


# -- docstrings of re-exported constants -------------------------------------------------------
#
# ``.. autodata:: lacmfer.data.CLASSES`` looks for the constant's doc comment in ``lacmfer/data/__init__``,
# finds none (it is defined in ``lacmfer/data/labels.py``) and falls back to ``tuple.__doc__``. Take the
# doc comment (``#:`` or a string after the assignment) from the submodule that defines the constant
# instead, and never show a builtin type's docstring.

_MISSING = object()


def defining_attr_doc(package: str, attr: str, obj: Any) -> list[str] | None:
    """Doc-comment lines of ``attr`` from the (sub)module of ``package`` that binds ``obj``."""
    from sphinx.pycode import ModuleAnalyzer

    for modname in sorted(m for m in sys.modules if m == package or m.startswith(package + ".")):
        module = sys.modules.get(modname)
        if module is None or getattr(module, attr, _MISSING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:
            continue
        if ("", attr) in docs:
            return list(docs[("", attr)])
    return None


def _data_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what != "data":
        return
    package, _, attr = name.rpartition(".")
    doc = defining_attr_doc(package, attr, obj)
    if doc is not None:
        lines[:] = doc
    elif getattr(obj, "__doc__", None) is getattr(type(obj), "__doc__", _MISSING):
        lines[:] = []


# -- result files that may not exist yet -------------------------------------------------------


class ResultFile(SphinxDirective):
    """``.. result-file:: PATH`` shows a results file (e.g. a markdown table) verbatim if it exists.

    ``:start-after:`` / ``:end-before:`` cut out the part between two marker lines (e.g. one section of
    README.md). The directive's content (reST) is shown instead while the file or a marker does not
    exist, so the benchmark page builds before and after the tables are committed.
    """

    required_arguments = 1
    has_content = True
    option_spec = {  # noqa: RUF012 - docutils' API
        "language": lambda arg: arg.strip(),
        "start-after": lambda arg: arg.strip(),
        "end-before": lambda arg: arg.strip(),
    }

    def _excerpt(self, text: str) -> str | None:
        """The part between the ``start-after`` and ``end-before`` lines; None if one is missing."""
        start, end = self.options.get("start-after"), self.options.get("end-before")
        if start is not None:
            if start not in text:
                return None
            text = text.split(start, 1)[1]
        if end is not None:
            if end not in text:
                return None
            text = text.split(end, 1)[0]
        return text.strip("\n")

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        text = None
        if Path(path).is_file():
            self.env.note_dependency(rel)
            text = self._excerpt(Path(path).read_text(encoding="utf-8"))
        if text:
            block = nodes.literal_block(text, text)
            block["language"] = self.options.get("language", "markdown")
            caption = nodes.paragraph()
            caption += nodes.Text("From ")
            caption += nodes.literal(
                self.arguments[0], Path(self.arguments[0]).as_posix().lstrip("./")
            )
            caption += nodes.Text(":")
            return [caption, block]
        return self.parse_content_to_nodes()


class OptionalFigure(SphinxDirective):
    """``.. optional-figure:: PATH`` is a ``figure`` while the image exists, else its caption alone.

    For figures that another part of the project writes (e.g. ``_static/synthetic_grid.png``): the
    page builds (with ``-W``) before and after the image is committed.
    """

    required_arguments = 1
    has_content = True
    option_spec = {  # noqa: RUF012 - docutils' API
        "alt": lambda arg: arg.strip(),
        "width": lambda arg: arg.strip(),
    }

    def run(self) -> list[nodes.Node]:
        _, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        caption = "\n".join(self.content)
        if not Path(path).is_file():
            return self.parse_text_to_nodes(caption)
        options = "".join(f"   :{key}: {value}\n" for key, value in self.options.items())
        body = "\n".join("   " + line if line else "" for line in self.content)
        return self.parse_text_to_nodes(f".. figure:: {self.arguments[0]}\n{options}\n{body}\n")


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("result-file", ResultFile)
    app.add_directive("optional-figure", OptionalFigure)
    app.connect("env-check-consistency", _check_api_coverage)
    app.connect("autodoc-process-docstring", _data_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
