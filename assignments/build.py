"""Build every assignment from its instructor source with otter-grader's `otter assign`.

    python assignments/build.py --out .build/assignments [--only 03_attention]

For each assignments/source/NN_name.ipynb this writes OUT/NN_name/:
  student/NN_name.ipynb    the student version: solutions and hidden tests removed; its first cell installs what the
                           checks need when missing (Jupyter or Colab) and writes the public tests next to it
  solution/NN_name.ipynb   the same notebook with the solutions (what a perfect submission looks like)
  autograder/tests/*.py    every test, public and hidden (otter's exception-based format), used by grade.py
Everything here is generated: edit the sources, never the output.
"""

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from otter.assign import main as otter_assign

SOURCES = Path(__file__).resolve().parent / "source"
PIP_NAMES = {"otter": "otter-grader==7.0.0", "torch": "torch", "numpy": "numpy", "nltk": "nltk",
             "tiktoken": "tiktoken", "transformers": "transformers"}
SETUP = '''\
# Jupyter or Colab: install what the checks need if it is missing, and write the public tests next to this notebook.
import importlib.util
import pathlib
import subprocess
import sys

NEEDS = {needs}
missing = [pip for module, pip in NEEDS.items() if importlib.util.find_spec(module) is None]
if missing:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])

PUBLIC_TESTS = {tests}
pathlib.Path("tests").mkdir(exist_ok=True)
for name, source in PUBLIC_TESTS.items():
    pathlib.Path("tests", name).write_text(source)

import otter  # noqa: E402

grader = otter.Notebook(tests_dir="tests")'''


def imported_modules(sources: list[str]) -> set[str]:
    """Top-level module names imported anywhere in the given code."""
    found = set()
    for src in sources:
        found |= set(re.findall(r"^\s*(?:from|import)\s+(\w+)", src, flags=re.MULTILINE))
    return found


def setup_cell(code: list[str], public_tests: dict[str, str]) -> nbformat.NotebookNode:
    """The student version's first cell: installs, public tests, otter's grader object."""
    modules = imported_modules(code + list(public_tests.values())) | {"otter"}
    needs = {m: pip for m, pip in PIP_NAMES.items() if m in modules}
    tests = "{\n" + "".join(f"    {name!r}: {source!r},\n" for name, source in public_tests.items()) + "}"
    return nbformat.v4.new_code_cell(SETUP.format(needs=json.dumps(needs), tests=tests))


def finish(nb: nbformat.NotebookNode, setup: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """Prepend the setup cell, tag the assignment in the metadata, clear outputs and cell ids for stable output."""
    nb.cells.insert(0, setup)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["lmcourse"] = {"assignment": stem}
    return nb


def build(source: Path, out: Path) -> Path:
    """Run otter assign on one source and lay out OUT/<stem>/{student,solution,autograder}."""
    stem = source.stem
    target = out / stem
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                otter_assign(str(source), str(Path(tmp) / "dist"), no_pdfs=True, no_run_tests=True)
            except Exception as e:
                raise ValueError(f"otter assign failed on {source}: {e}\n{err.getvalue()}") from e
        dist = Path(tmp) / "dist"
        public = {p.name: p.read_text() for p in sorted((dist / "student" / "tests").glob("*.py"))}
        student = nbformat.read(dist / "student" / f"{stem}.ipynb", as_version=4)
        solution = nbformat.read(dist / "autograder" / f"{stem}.ipynb", as_version=4)
        setup = setup_cell([c.source for c in solution.cells if c.cell_type == "code"], public)
        shutil.rmtree(target, ignore_errors=True)
        for part, nb in (("student", student), ("solution", solution)):
            (target / part).mkdir(parents=True)
            nbformat.write(finish(nb, setup, stem), target / part / f"{stem}.ipynb")
        shutil.copytree(dist / "autograder" / "tests", target / "autograder" / "tests")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(".build/assignments"))
    p.add_argument("--only", action="append", help="build only this assignment (repeatable), e.g. 01_ngram")
    a = p.parse_args(argv)
    sources = sorted(SOURCES.glob("*.ipynb"))
    if a.only:
        unknown = set(a.only) - {s.stem for s in sources}
        if unknown:
            p.error(f"no source for {', '.join(sorted(unknown))}; sources: {', '.join(s.stem for s in sources)}")
        sources = [s for s in sources if s.stem in a.only]
    for source in sources:
        print(f"built {build(source.resolve(), a.out.resolve())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
