"""Sphinx configuration for lvmjax's API reference and notebooks.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

  sphinx-build -W --keep-going -b html docs docs/_build/html

The API pages are generated from the docstrings: ``api.rst`` lists the public modules, and each
module's page (``_templates/lvmjax_module.rst``) documents its public names: the module's
``__all__``, or without one the names it defines that do not start with an underscore. Docstrings are
Google style (napoleon). Notebooks are rendered by myst-nb without being executed: the test suite
executes them (tests/test_notebooks.py).
"""
import importlib
import inspect
import os
import sys

from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the repository root, for an uninstalled checkout

project = "lvmjax"
copyright = "lvmjax authors"  # pylint: disable=redefined-builtin
author = "lvmjax authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README.md"]
templates_path = ["_templates"]

# autodoc / autosummary / napoleon: Google-style docstrings, one page per public name.
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"member-order": "bysource"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
napoleon_use_ivar = True  # a NamedTuple's "Attributes:" as a field list: autodoc lists the fields

# myst-nb: notebooks are shown as stored (without outputs); the tests execute them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "lvmjax"
html_theme_options = {"show_toc_level": 2}


def public_names(modname: str) -> list[str]:
  """The public names of ``modname``: its ``__all__``, else what it defines without an underscore."""
  module = importlib.import_module(modname)
  names = getattr(module, "__all__", None)
  if names is None:
    names = [n for n, v in vars(module).items()
             if not n.startswith("_") and getattr(v, "__module__", modname) == modname]
  # A submodule named in ``__all__`` (``kmeans.minibatch``) has a page of its own.
  return [n for n in names if not inspect.ismodule(getattr(module, n))]


def object_kind(modname: str, name: str) -> str:
  """The autodoc directive for ``modname.name``: ``class``, ``function`` or ``data``.

  Classes and functions of lvmjax's own are documented as such; aliases (``types.Data =
  Float[Array, "n d"]``), constants and names re-exported from other libraries as data.
  """
  obj = getattr(importlib.import_module(modname), name)
  own = (str(getattr(obj, "__module__", "")).startswith("lvmjax")
         and getattr(obj, "__name__", None) == name)
  if own and inspect.isclass(obj):
    return "class"
  return "function" if own and callable(obj) else "data"


# One page per module (optax's layout): a summary table, then every public name documented in
# place. (A page per name, as autosummary's stubs make, takes the book theme minutes to render.)
autosummary_context = {"public_names": public_names, "object_kind": object_kind}
# The context holds a function, which Sphinx cannot pickle into its cache: only incremental
# rebuilds are affected (the config is re-read), so say so once here instead of at every build.
suppress_warnings = ["config.cache"]


def _skip_member(app, what, name, obj, skip, options):  # pylint: disable=unused-argument
  """Skips scikit-learn's generated ``set_*_request`` methods (their docs link into sklearn's)."""
  if what == "class" and name.startswith("set_") and name.endswith("_request"):
    return True
  return None


def _own_docs_only(app, what, name, obj, options, lines):  # pylint: disable=unused-argument
  """A constant or alias shows its value and its ``#:`` comment, not its type's docstring.

  ``SPLITS = ("train", ...)`` would otherwise show the docstring of ``tuple``, and a name
  re-exported from another library (``types.Float`` from jaxtyping) that library's docstring.
  """
  if what not in ("data", "attribute") or "." not in name:
    return
  modname, attr = name.rsplit(".", 1)
  try:
    comments = ModuleAnalyzer.for_module(modname).find_attr_docs()
  except PycodeError:  # not a module: a class attribute, documented by its class
    return
  if ("", attr) in comments:
    return
  lines.clear()
  module = str(getattr(obj, "__module__", "") or "")
  if module and not module.startswith(("lvmjax", "builtins", "typing")):
    lines.append(f"Re-exported from ``{module.split('.')[0]}``.")


def setup(app):
  app.connect("autodoc-skip-member", _skip_member)
  app.connect("autodoc-process-docstring", _own_docs_only, priority=100)  # before napoleon
