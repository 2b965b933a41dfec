"""Build before import: a notebook uses a package name only where the page has built that idea, or where an
earlier chapter introduced it (read from the source with ``ast``; fast, nothing is executed).

The chapter of a notebook is its number. Its code cells are read in order, and every *use* of a package name
is resolved to the module that defines it:

- each name of ``from lmcourse.X import a, b`` is a use, in that cell (a submodule imported that way, like
  ``from lmcourse.tokenizers import bpe_train``, is not: it binds a module);
- ``m.attr``, where ``m`` was bound to a module by ``from lmcourse import mod`` or ``import lmcourse.mod as m``
  (or is ``lmcourse.mod`` itself after ``import lmcourse.mod``), is a use of ``lmcourse.mod.attr`` in that cell.

A name resolves to the ``__module__`` of its class or function, or, for a constant, to the module it is
imported from (through a package's lazy ``_EXPORTS`` table). A use is fine when that module is one of the
course's tools (``lmcourse.chapters.TOOLS``) or belongs to an earlier chapter (``lmcourse.chapters.CHAPTER``).
A module of a later chapter is always a violation. A module of the notebook's own chapter is fine only if a
strictly earlier code cell defines the idea on the page: a top-level ``def``, ``class`` or assignment with the
same name, or with the page's name for it in ``ALIASES``. Upper-case constants of the package (tables of data,
lists of names) are data a chapter reads, not ideas it builds, and may be used where first needed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from lmcourse.chapters import CHAPTER, TOOLS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Package name -> the page's name for the same thing, where a page builds it under another name. Keep it small
# and honest: only where the page really writes the same function or class and then shows the package's equals it.
ALIASES: dict[str, dict[str, str]] = {
    "02_autodiff": {"Value": "Scalar", "topological_order": "topological_sort"},
    "06_attention": {"scaled_dot_product_attention": "attention"},
    "07_transformer": {"Muon": "muon_step"},
    "10_efficiency": {"KVCache": "new_caches_by_hand", "CachedGPT": "forward_padded"},  # the cache; padded rows
}


@dataclass(frozen=True)
class Use:
    cell: int  # index of the cell in the notebook (markdown cells count)
    module: str  # the module that defines the name
    name: str


def cell_trees(nb) -> list[tuple[int, ast.Module]]:
    """(cell index, syntax tree) of every code cell, with IPython's %magic and !shell lines removed."""
    trees = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        src = "".join(cell.source) if isinstance(cell.source, list) else cell.source
        trees.append((i, ast.parse("\n".join(line for line in src.splitlines()
                                             if not line.lstrip().startswith(("%", "!"))))))
    return trees


def is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:  # a parent is not a package
        return False


def defining_module(module: str, name: str) -> str:
    """The lmcourse module that defines ``module.name``: its __module__ for a class or function, else (a
    constant) the module itself, or the submodule a package's lazy ``_EXPORTS`` names for it."""
    mod = importlib.import_module(module)
    obj = getattr(mod, name, None)  # a name the module does not define stays its own (nbval reports the error)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        owner = getattr(obj, "__module__", "") or ""
        if owner == "lmcourse" or owner.startswith("lmcourse."):
            return owner
    return getattr(mod, "_EXPORTS", {}).get(name, module)


def is_data(module: str, name: str) -> bool:
    """A constant of the package (an UPPER_CASE name that is neither a class nor a function, e.g. a table of
    published results or a list of names): data a chapter reads, not an idea it must build first."""
    obj = getattr(importlib.import_module(module), name, None)
    return name.isupper() and obj is not None and not (inspect.isclass(obj) or inspect.isroutine(obj))


def chapter_of(module: str) -> int:
    """The chapter that introduces a module (a module not listed belongs to its closest listed parent)."""
    parts = module.split(".")
    while parts:
        if ".".join(parts) in CHAPTER:
            return CHAPTER[".".join(parts)]
        parts.pop()
    raise KeyError(f"{module} is not in lmcourse.chapters.CHAPTER")


def _bound_names(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds that count as building an idea: def, class, assignment targets."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, ast.AnnAssign | ast.AugAssign) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _dotted(node: ast.expr) -> str | None:
    """'a.b.c' for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def package_uses(nb) -> tuple[list[Use], dict[int, set[str]]]:
    """Every use of a package name, in cell order, and the names each code cell defines at top level."""
    uses: list[Use] = []
    defined: dict[int, set[str]] = {}
    modules: dict[str, str] = {}  # local name -> the lmcourse module it is bound to
    for i, tree in cell_trees(nb):
        defined[i] = set()
        for stmt in tree.body:
            rebound = _bound_names(stmt)
            defined[i] |= rebound
            for name in rebound:
                modules.pop(name, None)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    (node.module == "lmcourse" or node.module.startswith("lmcourse.")):
                for alias in node.names:
                    if is_module(f"{node.module}.{alias.name}"):
                        modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    else:
                        uses.append(Use(i, defining_module(node.module, alias.name), alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "lmcourse" or alias.name.startswith("lmcourse."):
                        if alias.asname:  # import lmcourse.mod as m
                            modules[alias.asname] = alias.name
                        else:  # import lmcourse.mod binds lmcourse; its uses are lmcourse.mod.attr
                            modules["lmcourse"] = "lmcourse"
        for node in ast.walk(tree):  # module.attr, after every import of the cell is known
            if not isinstance(node, ast.Attribute):
                continue
            dotted = _dotted(node)
            if dotted is None or dotted.split(".")[0] not in modules:
                continue
            head, *rest = dotted.split(".")
            module = modules[head]
            while rest and is_module(f"{module}.{rest[0]}"):  # lmcourse.mod.attr: walk down to the module
                module = f"{module}.{rest.pop(0)}"
            if rest and module != "lmcourse":
                uses.append(Use(i, defining_module(module, rest[0]), rest[0]))
    return uses, defined


def violations(nb, stem: str) -> set[str]:
    """The package names ``nb`` (notebook ``stem``, e.g. '02_autodiff') uses before its page builds them."""
    chapter, aliases = int(stem[:2]), ALIASES.get(stem, {})
    uses, defined = package_uses(nb)
    found = set()
    for use in uses:
        if use.module in TOOLS or is_data(use.module, use.name):
            continue
        c = chapter_of(use.module)
        where = f"{stem}: cell {use.cell} uses {use.module}.{use.name} (chapter {c})"
        if c > chapter:
            found.add(f"{where} from a later chapter")
        elif c == chapter:
            page_name = aliases.get(use.name, use.name)
            if not any(page_name in names for cell, names in defined.items() if cell < use.cell):
                found.add(f"{where} before the page builds it")
    return found


def notebook_violations(path: Path) -> set[str]:
    return violations(nbformat.read(path, as_version=4), path.stem)


# --- the notebooks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_package_name_is_used_before_the_page_builds_it(nb):
    found = notebook_violations(nb)
    assert not found, "a notebook uses a package name before the page has built it (import it in the cell after " \
        "the one that builds it; tools and earlier chapters may be imported where first needed):\n" + \
        "\n".join(sorted(found))


def test_aliases_name_what_the_page_defines():
    """An alias is honest only if its notebook really defines the page name (before it uses the package's)."""
    by_stem = {nb.stem: nb for nb in NOTEBOOKS}
    for stem, aliases in ALIASES.items():
        _, defined = package_uses(nbformat.read(by_stem[stem], as_version=4))
        on_page = set().union(*defined.values())
        assert set(aliases.values()) <= on_page, f"{stem}: ALIASES names {set(aliases.values()) - on_page}, " \
            "which the page never defines"


# --- the checker on small notebooks built here -----------------------------------------------------------------

def synthetic(*sources: str):
    """A notebook of code cells (and a title cell first, so that cell k is sources[k - 1])."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 2. A synthetic chapter"),
                                           *map(nbformat.v4.new_code_cell, sources)])


def test_names_resolve_to_their_defining_module():
    assert defining_module("lmcourse.autodiff", "MLP") == "lmcourse.autodiff"
    assert defining_module("lmcourse.models", "MLPLM") == "lmcourse.models.mlp"  # a lazy package export
    assert defining_module("lmcourse.tokenizers", "GPT2_PATTERN") == "lmcourse.tokenizers.bpe"  # a constant
    assert defining_module("lmcourse.ngram", "BOS") == "lmcourse.ngram"
    assert chapter_of("lmcourse.tokenizers.bpe") == 8 and chapter_of("lmcourse.models.gpt") == 7


def test_an_import_in_the_setup_cell_before_the_page_builds_it_is_reported():
    nb = synthetic(
        "%matplotlib inline\nimport torch\n\nfrom lmcourse.autodiff import MLP\n"
        "from lmcourse.runtime import seed_everything",
        "!pip list\nfrom lmcourse.models import GPT  # chapter 7, in chapter 2",
        "from lmcourse import autodiff\n\ndef f(z):\n    return autodiff.softmax(z)",
        "class MLP:\n    pass\n\n\ndef softmax(z):\n    return z",
        "from lmcourse.autodiff import MLP\nimport lmcourse.autodiff as ad\n\nad.softmax([1.0])",
    )
    assert violations(nb, "02_synthetic") == {
        "02_synthetic: cell 1 uses lmcourse.autodiff.MLP (chapter 2) before the page builds it",
        "02_synthetic: cell 2 uses lmcourse.models.gpt.GPT (chapter 7) from a later chapter",
        "02_synthetic: cell 3 uses lmcourse.autodiff.softmax (chapter 2) before the page builds it",
    }


def test_a_later_chapter_is_reported_even_after_the_page_builds_it():
    nb = synthetic("class GPT:\n    pass", "import lmcourse.models\n\nlmcourse.models.GPT")
    assert violations(nb, "02_synthetic") == {
        "02_synthetic: cell 2 uses lmcourse.models.gpt.GPT (chapter 7) from a later chapter"}


def test_nothing_is_reported_when_the_page_builds_first():
    nb = synthetic(
        "import math\n\nfrom lmcourse import data\nfrom lmcourse.runtime import seed_everything\n\nseed_everything(0)",
        "text = data.load_text('names')",  # a tool, anywhere
        "class MLP:\n    pass\n\n\nclass Scalar:\n    pass",
        "from lmcourse.autodiff import MLP, Value",  # MLP built above, Value under its page name (ALIASES)
        "from lmcourse.ngram import NGramLM\nfrom lmcourse.tokenizers import CharTokenizer",  # earlier chapters
        "from lmcourse.tokenizers import bpe_train",  # binds a module: not a use by itself
    )
    assert violations(nb, "02_autodiff") == set()
    assert violations(nb, "02_synthetic") == {
        "02_synthetic: cell 4 uses lmcourse.autodiff.Value (chapter 2) before the page builds it"}
