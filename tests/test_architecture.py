"""The import graph of lvmjax: imports point down, no circles, no private names across packages.

lvmjax has two layers of packages (``lvmjax/<name>/`` or ``lvmjax/<name>.py``):

* families, the models: gmm, kmeans, ppca, vae, and sklearn (the drop-ins above them);
* shared layers below them: _checks, data, sharding, checkpoint, fixed_point, types, experiment,
  progress, plotting, distributed, and any other top-level module or package.

The checks, read from the source as text (``ast``; nothing is imported or run):

1. no circle between packages (families and shared layers alike);
2. no circle between the modules of one package (its ``__init__`` counts as a module);
3. no module uses a private ``_name`` of another package: neither ``from x import _name``, nor
   ``alias._name`` where ``alias`` is another package's module, nor another package's private
   module (``lvmjax.sklearn._common``), nor a third-party package's (``jax._src``). The top-level
   private module ``lvmjax._checks`` is the whole library's and open to all its modules;
4. shared layers never import a family.

Every ``import`` statement counts, at module level or inside a function, including relative
imports and ``from x import y`` whose ``y`` is a module. The checker is tested on small
synthetic trees, so a rule that stopped catching its violation would fail here too.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib
import sys

import pytest

FAMILIES = frozenset({"gmm", "kmeans", "ppca", "vae", "sklearn"})
ROOT = "lvmjax"


def _is_private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclasses.dataclass
class Graph:
  """What the checker reads from a package tree."""
  modules: dict[str, pathlib.Path]
  edges: dict[str, set[str]]
  private: set[tuple[str, str]]  # (importer, what it uses)

  def package(self, module: str) -> str:
    """``lvmjax.gmm.em`` -> ``gmm``; ``lvmjax.sharding`` -> ``sharding``; root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_names(root: pathlib.Path) -> dict[str, pathlib.Path]:
  mods = {}
  for path in sorted(root.rglob("*.py")):
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    mods[".".join(parts)] = path
  return mods


def _resolve(name: str, mods: dict[str, pathlib.Path]) -> str | None:
  """The module that ``name`` (a dotted module path) lands in: itself or its nearest parent."""
  while name:
    if name in mods:
      return name
    name = name.rpartition(".")[0]
  return None


def read_graph(root: pathlib.Path) -> Graph:
  """Parses every module under ``root`` (the ``lvmjax`` directory)."""
  mods = _module_names(root)
  edges: dict[str, set[str]] = collections.defaultdict(set)
  private: set[tuple[str, str]] = set()
  for m, path in mods.items():
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    pkg_of_m = Graph(mods, edges, private).package(m)
    aliases: dict[str, str] = {}  # local name -> dotted module path (lvmjax or third party)

    def cross(target_module: str) -> bool:
      """True when ``target_module`` is outside m's package (or third party)."""
      if not target_module.startswith(ROOT + ".") and target_module != ROOT:
        return True
      return Graph(mods, edges, private).package(target_module) != pkg_of_m

    def use(target: str, what: str) -> None:
      # A private top-level module (lvmjax._checks) is the library's own, open to every module.
      if target == ROOT and f"{ROOT}.{what}" in mods:
        return
      private.add((m, f"{target}.{what}"))

    def add_module_ref(full: str) -> None:
      """An import of the dotted module path ``full``."""
      if full == ROOT or full.startswith(ROOT + "."):
        t = _resolve(full, mods)
        if t and t != m:
          edges[m].add(t)
      # every private component of a path into another package is a private use
      parts = full.split(".")
      for i, part in enumerate(parts):
        if _is_private(part) and cross(".".join(parts[:i + 1])):
          use(".".join(parts[:i]), part)

    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for a in node.names:
          add_module_ref(a.name)
          if a.asname:
            aliases[a.asname] = a.name
          else:
            aliases.setdefault(a.name.split(".")[0], a.name.split(".")[0])
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          base = m.split(".") if is_pkg else m.split(".")[:-1]
          base = base[:len(base) - (node.level - 1)]
          module = ".".join(base + ([node.module] if node.module else []))
        else:
          module = node.module or ""
        ours = module == ROOT or module.startswith(ROOT + ".")
        # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg.
        if not ours or any(f"{module}.{a.name}" not in mods for a in node.names):
          add_module_ref(module)
        for a in node.names:
          if a.name == "*":
            continue
          full = f"{module}.{a.name}"
          if full in mods:
            add_module_ref(full)
            aliases[a.asname or a.name] = full
          elif not ours:  # a third-party name or submodule
            if _is_private(a.name):
              use(module, a.name)
            else:
              aliases[a.asname or a.name] = full
          elif _is_private(a.name) and cross(_resolve(module, mods) or module):
            use(_resolve(module, mods) or module, a.name)
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and _is_private(node.attr):
        chain = []
        value = node.value
        while isinstance(value, ast.Attribute):
          chain.append(value.attr)
          value = value.value
        if isinstance(value, ast.Name) and value.id in aliases:
          target = ".".join([aliases[value.id]] + chain[::-1])
          if target.startswith(ROOT):
            if target in mods and cross(target):
              use(target, node.attr)
          elif cross(target):  # a third-party module: jax._src, np._core, ...
            use(target, node.attr)
  return Graph(mods, dict(edges), private)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one node (Tarjan), sorted."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
  sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(out)


def package_circles(g: Graph) -> list[list[str]]:
  pkgs = collections.defaultdict(set)
  for a, bs in g.edges.items():
    for b in bs:
      pa, pb = g.package(a), g.package(b)
      if pa and pb and pa != pb:
        pkgs[pa].add(pb)
  return circles(pkgs)


def module_circles(g: Graph) -> list[list[str]]:
  inner = {a: {b for b in bs if g.package(a) and g.package(b) == g.package(a)}
           for a, bs in g.edges.items()}
  return circles(inner)


def upward_imports(g: Graph) -> list[str]:
  out = []
  for a, bs in sorted(g.edges.items()):
    pa = g.package(a)
    for b in sorted(bs):
      pb = g.package(b)
      if pa and pa not in FAMILIES and pb in FAMILIES:
        out.append(f"{a} (shared layer) imports {b} (family {pb})")
      elif pa and b == ROOT:
        out.append(f"{a} imports the top-level package {ROOT}")
  return out


def private_uses(g: Graph) -> list[str]:
  return [f"{m} uses {what}" for m, what in sorted(g.private)]


def _lvmjax_root() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parent.parent / ROOT


@pytest.fixture(scope="module")
def lvmjax_graph() -> Graph:
  return read_graph(_lvmjax_root())


# ------------------------------------------------------------------------------------------------
# The rules on lvmjax itself.


def test_the_families_and_shared_layers_exist(lvmjax_graph):
  packages = {lvmjax_graph.package(m) for m in lvmjax_graph.modules}
  assert FAMILIES <= packages
  assert {"_checks", "data", "sharding"} <= packages
  assert len(lvmjax_graph.modules) > 30  # the walk found the tree


def test_no_circle_between_packages(lvmjax_graph):
  assert package_circles(lvmjax_graph) == []


def test_no_circle_between_modules_of_a_package(lvmjax_graph):
  assert module_circles(lvmjax_graph) == []


# scikit-learn's estimator-developer convention, which the drop-ins follow so that their argument
# checks and messages are scikit-learn's own, word for word: an estimator declares
# ``_parameter_constraints`` built from ``sklearn.utils._param_validation`` (its contributor guide
# documents both). These are the only third-party private names lvmjax may use.
SKLEARN_ESTIMATOR_API = frozenset({
    "lvmjax.sklearn.cluster uses sklearn.cluster.KMeans._parameter_constraints",
    "lvmjax.sklearn.mixture uses sklearn.mixture.GaussianMixture._parameter_constraints",
    "lvmjax.sklearn.bayesian_mixture uses "
    "sklearn.mixture.BayesianGaussianMixture._parameter_constraints",
    "lvmjax.sklearn.decomposition uses sklearn.utils._param_validation",
})


def test_no_private_name_used_across_packages(lvmjax_graph):
  uses = private_uses(lvmjax_graph)
  assert [u for u in uses if u not in SKLEARN_ESTIMATOR_API] == []
  # Only the drop-ins may use scikit-learn's developer API, and no other module starts to.
  assert all(u.startswith("lvmjax.sklearn.") for u in uses)


def test_shared_layers_never_import_a_family(lvmjax_graph):
  assert upward_imports(lvmjax_graph) == []


# ------------------------------------------------------------------------------------------------
# The checker itself, on synthetic trees: each rule catches its violation.


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> Graph:
  root = tmp_path / ROOT
  for name, text in {"__init__.py": "", **files}.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return read_graph(root)


def test_checker_finds_a_circle_between_families_through_a_function_level_import(tmp_path):
  g = _tree(tmp_path, {
      "gmm/__init__.py": "", "gmm/em.py": "def f():\n  from lvmjax import kmeans\n",
      "kmeans/__init__.py": "from lvmjax.kmeans.lloyd import fit\n",
      "kmeans/lloyd.py": "from lvmjax.gmm import em\n",
  })
  assert package_circles(g) == [["gmm", "kmeans"]]


def test_checker_finds_a_circle_between_modules_by_relative_import(tmp_path):
  g = _tree(tmp_path, {
      "kmeans/__init__.py": "", "kmeans/a.py": "from . import b\n",
      "kmeans/b.py": "from .a import x\n",
  })
  assert module_circles(g) == [["lvmjax.kmeans.a", "lvmjax.kmeans.b"]]
  assert package_circles(g) == []


def test_checker_finds_private_names_across_packages(tmp_path):
  g = _tree(tmp_path, {
      "_checks.py": "def check(): ...\n",
      "data/__init__.py": "", "data/streams.py": "def _helper(): ...\n",
      "sklearn/__init__.py": "", "sklearn/_common.py": "",
      "kmeans/__init__.py": "", "kmeans/mini.py": "def _own(): ...\n",
      "gmm/__init__.py": "",
      "gmm/a.py": "from lvmjax.data.streams import _helper\n",
      "gmm/b.py": "import lvmjax.data.streams as s\ns._helper()\n",
      "gmm/c.py": "from lvmjax.data import streams\nstreams._helper()\n",
      "gmm/d.py": "from lvmjax.sklearn import _common\n",
      "gmm/e.py": "import jax._src.core\nimport numpy as np\nnp._core\n",
      "gmm/f.py": "from lvmjax import _checks\nfrom lvmjax.gmm import a\na._x\n_checks.check()\n",
      "kmeans/ok.py": "from lvmjax.kmeans import mini\nmini._own()\nx.__name__\n",
      "gmm/g.py": "def f():\n  import lvmjax.kmeans.mini\n  lvmjax.kmeans.mini._own()\n",
  })
  found = private_uses(g)
  assert found == [
      "lvmjax.gmm.a uses lvmjax.data.streams._helper",
      "lvmjax.gmm.b uses lvmjax.data.streams._helper",
      "lvmjax.gmm.c uses lvmjax.data.streams._helper",
      "lvmjax.gmm.d uses lvmjax.sklearn._common",
      "lvmjax.gmm.e uses jax._src",
      "lvmjax.gmm.e uses numpy._core",
      "lvmjax.gmm.g uses lvmjax.kmeans.mini._own",
  ], found


def test_checker_finds_a_shared_layer_importing_a_family(tmp_path):
  g = _tree(tmp_path, {
      "gmm/__init__.py": "", "data/__init__.py": "def f():\n  from lvmjax.gmm import em\n",
      "gmm/em.py": "from lvmjax import data\n", "sharding.py": "import lvmjax\n",
  })
  assert upward_imports(g) == ["lvmjax.data (shared layer) imports lvmjax.gmm.em (family gmm)",
                               "lvmjax.sharding imports the top-level package lvmjax"]
  assert g.edges["lvmjax.gmm.em"] == {"lvmjax.data"}  # a submodule, not the root package
  assert package_circles(g) == [["data", "gmm"]]
