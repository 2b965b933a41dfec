"""The shape of every chapter notebook, read from its source (fast; the built book is checked in test_book.py).

A chapter opens with `# N. Title` and a bullet list of learning objectives, numbers its sections N.1, N.2, ...,
ends with "N.k What we learned" and "N.k+1 Exercises" whose solutions sit in toggles, gives every code cell that
draws a figure a caption in its cell metadata, and links to the other chapters it mentions with relative .ipynb
links (which work in Jupyter and Colab, and which Sphinx resolves to pages and checks under -n).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTION_BLOCK = re.compile(r"^\s*(`{3,}|:{3,})\s*\{(admonition|dropdown|toggle)\}[^\n]*\n(?:\s*:[a-z-]+:[^\n]*\n)*",
                            re.M)
LINK = re.compile(r"\]\(([^)\s#]+?\.(?:ipynb|md))(?:#[^)]*)?\)|\{doc\}`(?:[^`<]*<)?([^`>]+)>?`")


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def chapter(nb: Path) -> int:
    return int(nb.name[:2])


def drawing_cells(nb_cells: list[dict]) -> list[int]:
    """Indices of the code cells that draw a figure: they call plt.show() or savefig at top level, or call a
    function defined in an earlier cell that does."""
    drawers: set[str] = set()
    found = []

    def draws(node: ast.AST) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.Call):
                if isinstance(n.func, ast.Attribute) and n.func.attr in ("show", "savefig"):
                    return True
                if isinstance(n.func, ast.Name) and n.func.id in drawers:
                    return True
        return False

    for i, cell in enumerate(nb_cells):
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in source(cell).splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(code)
        drawers |= {s.name for s in tree.body if isinstance(s, ast.FunctionDef) and draws(s)}
        if any(draws(s) for s in tree.body if not isinstance(s, ast.FunctionDef | ast.ClassDef)):
            found.append(i)
    return found


def headings(nb: Path) -> list[tuple[int, str]]:
    """(cell index, text) of every level-2 heading."""
    return [(i, line[3:].strip()) for i, cell in enumerate(cells(nb)) if cell["cell_type"] == "markdown"
            for line in source(cell).splitlines() if line.startswith("## ")]


def toc_files() -> set[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return {toc["root"]} | {c["file"] for part in toc.get("parts", []) for c in part["chapters"]}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_title_and_learning_objectives(nb):
    first = source(cells(nb)[0])
    assert re.match(rf"# {chapter(nb)}\. \S", first), f"{nb.name}: the first cell must open with '# {chapter(nb)}. '"
    objectives = re.findall(r"^- \S", first, re.M)
    assert 3 <= len(objectives) <= 6, f"{nb.name}: the first cell must list 3-6 learning objectives as bullets"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_sections_are_numbered_and_end_with_summary_and_exercises(nb):
    titles = [text for _, text in headings(nb)]
    numbers = [re.match(rf"{chapter(nb)}\.(\d+) ", t) for t in titles]
    assert all(numbers), f"{nb.name}: sections must be numbered '## {chapter(nb)}.k ...': {titles}"
    assert [int(m.group(1)) for m in numbers] == list(range(1, len(titles) + 1)), f"{nb.name}: numbering has gaps"
    assert titles[-2].endswith(" What we learned") and titles[-1].endswith(" Exercises"), \
        f"{nb.name}: the last two sections must be 'What we learned' and 'Exercises': {titles[-2:]}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_solutions_are_in_toggles(nb):
    start, _ = headings(nb)[-1]
    after = cells(nb)[start:]
    text = source(after[0]).split("Exercises", 1)[1]
    text += "".join(source(c) for c in after[1:] if c["cell_type"] == "markdown")
    blocks = SOLUTION_BLOCK.findall(text)
    assert blocks, f"{nb.name}: the exercises need solutions in a dropdown (an admonition with :class: dropdown)"
    for match in SOLUTION_BLOCK.finditer(text):
        if match.group(2) == "admonition":
            assert ":class: dropdown" in match.group(0), f"{nb.name}: a solution admonition is not a dropdown"
    for cell in after[1:]:
        if cell["cell_type"] == "code":
            tags = set(cell["metadata"].get("tags", []))
            assert tags & {"hide-input", "hide-cell", "hide-output", "remove-cell"}, \
                f"{nb.name}: a code cell among the exercises must be hidden (tag hide-cell) so it does not give it away"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_have_captions(nb):
    nb_cells = cells(nb)
    drawing = drawing_cells(nb_cells)
    for i, cell in enumerate(nb_cells):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if i in drawing:
            assert figure.get("caption", "").strip(), f"{nb.name} cell {i} draws a figure: give it a caption in " \
                "its metadata, {'mystnb': {'figure': {'caption': '...', 'name': 'fig-NN-short-name'}}}"
            assert re.fullmatch(rf"fig-{nb.name[:2]}-[a-z0-9-]+", figure.get("name", "")), \
                f"{nb.name} cell {i}: figure name must look like fig-{nb.name[:2]}-short-name"
        else:
            assert not figure, f"{nb.name} cell {i} has a figure caption but draws no figure"


def test_figure_names_are_unique():
    names = [c["metadata"]["mystnb"]["figure"]["name"] for nb in NOTEBOOKS for c in cells(nb)
             if "name" in c.get("metadata", {}).get("mystnb", {}).get("figure", {})]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_cross_references_resolve(nb):
    pages = toc_files()
    linked = set()
    for cell in cells(nb):
        if cell["cell_type"] != "markdown":
            continue
        for rel, doc in LINK.findall(source(cell)):
            target = (nb.parent / (rel or doc)).resolve()
            if doc and not target.suffix:
                target = next((target.with_suffix(s) for s in (".ipynb", ".md") if target.with_suffix(s).exists()),
                              target)
            assert target.exists(), f"{nb.name}: link to {rel or doc}, which does not exist"
            entry = target.relative_to(ROOT).with_suffix("").as_posix()
            assert entry in pages, f"{nb.name}: link to {entry}, which is not in _toc.yml (it would not be built)"
            if target.parent == nb.parent and target != nb:
                linked.add(target.name)
    assert linked, f"{nb.name}: link the chapters it builds on, e.g. [chapter 1](01_ngram.ipynb)"
