"""Sphinx configuration of convbench's documentation (built by ``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The repository first, so that autodoc documents this checkout's convbench; _ext for the
# results extension.
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

project = "convbench"
author = "the convbench authors"
copyright = "the convbench authors"  # noqa: A001 -- Sphinx's name for it
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # MathJax from the built site, not a CDN: the pages render their maths offline.
    "sphinx-mathjax-offline",
    "convbench_results",
    "convbench_reference",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Commands, descriptors and options keep their own quotes and dashes.
smartquotes = False
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ maths, ::: fences, definition lists, heading anchors for in-page links.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# numpydoc renders the docstrings; the API pages name their members themselves.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autosummary_generate = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
# -n checks every cross-reference of the pages. Docstrings also name convbench's internal
# helpers (relative names, or modules the API pages leave out) and other projects' types:
# those are no part of this site, and are not links here.
nitpick_ignore_regex = [
    (r"py:.*", r"(np|numpy|cupy|torch|onnx|argparse|collections|typing|os|pathlib)\..*"),
    (r"py:.*", r"(?s)convbench\..*"),
    (r"py:.*", r"[A-Za-z_]\w*"),
]

# The results extension reads results/ of this checkout.
convbench_results_root = ".."

html_theme = "pydata_sphinx_theme"
html_title = "convbench"
html_static_path = ["_static"]
html_css_files = ["results.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
# The light theme unless the reader chose another: with none set, the theme's script logs a
# console error on a page opened from disk.
html_context = {"default_mode": "light"}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
html_copy_source = False
