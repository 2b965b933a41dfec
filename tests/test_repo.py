"""Checks that keep the repository honest: notebooks, table of contents, install cell, pins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def cells(nb_path: Path) -> list[dict]:
    return json.loads(nb_path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def install_cell() -> str:
    """The Colab cell every notebook starts with, built from the repository URL in _config.yml."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    comment = ("# Colab, or any fresh environment: install the course package if it is missing "
               "(otherwise this does nothing).")
    return comment + f'''
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("lmcourse") is None:
    url = "{url}"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"lmcourse[notebooks] @ git+{{url}}"])'''


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    in_toc = sorted(f for f in listed if f.startswith("notebooks/"))
    assert in_toc == [f"notebooks/{p.stem}" for p in NOTEBOOKS]
    for entry in listed:
        exists = any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb"))
        assert exists, f"{entry} is in _toc.yml but missing"
    assert in_toc == sorted(in_toc, key=listed.index), "notebooks must appear in _toc.yml in chapter order"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(nb):
    for i, cell in enumerate(cells(nb)):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{nb.name} cell {i} has outputs"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(nb):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", nb.name)
    first = cells(nb)[0]
    assert first["cell_type"] == "markdown" and source(first).startswith(f"# {int(nb.name[:2])}. "), \
        f"{nb.name} must open with the title '# {int(nb.name[:2])}. ...'"
    code = [c for c in cells(nb) if c["cell_type"] == "code"]
    assert source(code[0]) == install_cell(), f"{nb.name}: the first code cell must be the Colab install cell"
    assert "seed_everything(" in source(code[1]), f"{nb.name}: the setup cell must seed everything"


def test_citations_exist_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book/references.bib").read_text(), re.M))
    pages = NOTEBOOKS + sorted((ROOT / "book").glob("*.md"))
    cited = {k.strip() for p in pages for group in re.findall(r"\{cite[:a-z]*\}`([^`]+)`", p.read_text())
             for k in group.split(",")}
    assert cited <= keys, f"cited but not in book/references.bib: {sorted(cited - keys)}"


def test_torch_is_a_range_for_users_and_pinned_for_ci():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.3" in deps
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
