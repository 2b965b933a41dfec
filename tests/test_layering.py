"""The package reads in chapter order: no module imports a module of a later chapter (``lmcourse.chapters``),
and importing one module loads only the modules it imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmcourse.chapters import CHAPTER

PACKAGE = Path(__file__).resolve().parent.parent / "lmcourse"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def _exports(package: str, sources: dict[str, str]) -> dict[str, str]:
    """A package's ``_EXPORTS`` table (name -> defining module), read from its source without importing it."""
    for node in ast.parse(sources.get(package, "")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imported_modules(source: str, sources: dict[str, str]) -> set[str]:
    """Every lmcourse module a source imports, anywhere in it (module level, functions, TYPE_CHECKING blocks).

    ``from P import name`` counts as an import of the module ``P.name`` when there is one, of the module that
    defines ``name`` when ``P`` is a package that lists it in ``_EXPORTS``, else of ``P`` itself.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "lmcourse"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lmcourse":
            exports = _exports(node.module, sources)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in sources else exports.get(alias.name, node.module))
    return found


def forward_edges(sources: dict[str, str], chapter: dict[str, int]) -> list[str]:
    """Each import of a later chapter's module, as 'a (chapter i) imports b (chapter j)'."""
    edges = []
    for name, source in sources.items():
        for target in sorted(imported_modules(source, sources)):
            if chapter[target] > chapter[name]:
                edges.append(f"{name} (chapter {chapter[name]}) imports {target} (chapter {chapter[target]})")
    return edges


def test_every_module_has_a_chapter():
    sources = package_sources()
    assert sorted(set(sources) - set(CHAPTER)) == [], "add these modules to lmcourse.chapters.CHAPTER"
    assert sorted(set(CHAPTER) - set(sources)) == [], "lmcourse.chapters.CHAPTER names modules that do not exist"


def test_no_module_imports_a_later_chapter():
    assert forward_edges(package_sources(), CHAPTER) == []


def test_a_forward_import_is_caught():
    """The check fails on a deliberate violation: chapter 1's n-gram importing chapter 12's zoo, directly,
    inside a function, or through a package's lazy exports."""
    sources = package_sources()
    for line in ("from lmcourse import zoo", "def f():\n    from lmcourse.zoo import get",
                 "import lmcourse.ladder", "from lmcourse.models import GPT"):
        edges = forward_edges({**sources, "lmcourse.ngram": line}, CHAPTER)
        assert len(edges) == 1 and edges[0].startswith("lmcourse.ngram (chapter 1) imports"), (line, edges)


def test_core_imports_no_chapter_module():
    assert imported_modules(package_sources()["lmcourse.core"], package_sources()) == set()


# Run in a fresh interpreter: torch and NumPy are imported once, then each lmcourse module in a forked child.
_LOADS = """
import importlib, json, os, sys
import numpy, torch, tqdm.auto
out = {}
for module in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        importlib.import_module(module)
        os.write(write, json.dumps(sorted(m for m in sys.modules if m.startswith("lmcourse"))).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out[module] = json.loads(f.read())
    os.wait()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """module -> the lmcourse modules that ``import module`` loads in a fresh interpreter."""
    run = subprocess.run([sys.executable, "-c", _LOADS, *sorted(CHAPTER)], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    return json.loads(run.stdout)


@pytest.mark.parametrize("module", sorted(CHAPTER))
def test_importing_a_module_loads_only_what_it_imports(module, loaded):
    """``import module`` loads only the lmcourse modules its module-level imports reach (and the packages
    that contain them): importing chapter 7's layers does not load the tokenizers or the sampler."""
    sources = package_sources()
    reach, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in reach:
            continue
        reach.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += _module_level_imports(sources[name], sources)
    assert set(loaded[module]) <= reach, f"importing {module} also loads {sorted(set(loaded[module]) - reach)}"


def _module_level_imports(source: str, sources: dict[str, str]) -> list[str]:
    """The lmcourse modules a module imports when it is imported (not those imported inside its functions)."""
    tree = ast.parse(source)
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return sorted(imported_modules(ast.unparse(ast.Module(body=top, type_ignores=[])), sources))
