"""Graded assignments: build them with otter assign, then grade solutions, blank student versions, partial and
hostile submissions in one batch (the slow part: about a minute or two on 2 cores, run once per module)."""

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NAMES = ["01_ngram", "02_bptt", "03_attention", "04_bpe", "05_decoding"]
POSSIBLE = {"01_ngram": 8, "02_bptt": 5, "03_attention": 7, "04_bpe": 5, "05_decoding": 6}

MONKEYPATCH = '''
import builtins, math, numpy, torch, otter
numpy.allclose = torch.allclose = math.isclose = lambda *a, **k: True
numpy.testing.assert_allclose = torch.testing.assert_close = lambda *a, **k: None
otter.Notebook.check = lambda *a, **k: True
builtins.abs = lambda x: 0.0
builtins.max = lambda *a, **k: 0.0

class AlwaysEqual(float):
    def __eq__(self, other): return True
    def __sub__(self, other): return AlwaysEqual(0)
    def __abs__(self): return AlwaysEqual(0)
    def __lt__(self, other): return True
    def __getattr__(self, name): return lambda *a, **k: self

def attention(*a, **k): return AlwaysEqual(0)
multi_head_attention = transformer_block = attention
print("All tests passed!")
'''
READ_TESTS = '''
import os, sys
from pathlib import Path

def search(root, limit=20000):
    files = []
    for folder, _, names in os.walk(root):
        files += [os.path.join(folder, n) for n in names]
        if len(files) > limit:
            break
    return files

def leaks(files):
    out = []
    for f in files:
        try:
            text = open(f, errors="replace").read(200000)
        except OSError:
            continue
        if "hidden=True" in text or "END SOLUTION" in text:
            out.append(f)
    return out

print("CWD:", leaks(search(".")))
print("ANYWHERE:", leaks(search("..") + search("/tmp") + search(Path(sys.modules["sandbox"].__file__).parent)))
'''
FAKE = '''
import json
print("q1 results: All test cases passed!\\nq2 results: All test cases passed!\\nq3 results: All test cases passed!")
json.dump({"tests": [{"name": "q1", "score": 1, "max_score": 1}]}, open("results.json", "w"))
open("gradebook.csv", "w").write("student,total\\nfake_results,6\\n")
'''


def cell_with(nb: nbformat.NotebookNode, marker: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)


def edit(nb: nbformat.NotebookNode, marker: str, old: str, new: str) -> nbformat.NotebookNode:
    cell = cell_with(nb, marker)
    assert old in cell.source, (marker, old)
    cell.source = cell.source.replace(old, new)
    return nb


def add(nb: nbformat.NotebookNode, source: str, at: int | None = None) -> nbformat.NotebookNode:
    nb.cells.insert(len(nb.cells) if at is None else at, nbformat.v4.new_code_cell(source))
    return nb


def drop(nb: nbformat.NotebookNode, marker: str) -> nbformat.NotebookNode:
    nb.cells.remove(cell_with(nb, marker))
    return nb


def edited_checks(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Public tests replaced by ones that always pass, check cells by fake 'passed' prints, cells renamed."""
    setup = nb.cells[0]
    setup.source = setup.source.split("PUBLIC_TESTS =")[0] + "PUBLIC_TESTS = {}\nimport otter\n"
    setup.source += "grader = otter.Notebook()"
    for i, cell in enumerate(nb.cells):
        cell["id"], cell.metadata = f"renamed-{i}", {}
        if cell.source.startswith("grader.check"):
            cell.source = 'print("All tests passed!")'
    return nb


# student name -> (assignment, base notebook, change, expected total, text expected in the status or feedback)
CASES = {
    "partial_bptt_no_backward": ("02_bptt", "solution", lambda nb: edit(
        nb, "def rnn_backward", "_, hs = rnn_forward", "return {n: torch.zeros_like(t) for n, t in params.items()}\n"
        "    _, hs = rnn_forward"), 2, "q2: 0 / 3"),
    "partial_bpe_no_value_error": ("04_bpe", "solution", lambda nb: edit(
        nb, "def train_bpe", "if vocab_size < 256:", "if False:"), 4, "q1: 1 / 2"),
    "partial_ngram_deleted_cell": ("01_ngram", "solution", lambda nb: drop(nb, "def add_k"), 6, "not defined: add_k"),
    "syntax_error": ("01_ngram", "solution", lambda nb: edit(nb, "def perplexity", "(probs:", "(probs"), 6,
                     "(SyntaxError)"),
    "loop_in_cell": ("05_decoding", "solution", lambda nb: add(nb, "while True:\n    pass"), 0, "wall-clock limit"),
    "loop_in_function": ("01_ngram", "solution", lambda nb: edit(
        nb, "def perplexity", "bigrams = list(", "while True:\n        pass\n    bigrams = list("), 6,
        "in perplexity()"),
    "memory_bomb_cell": ("04_bpe", "solution", lambda nb: add(nb, "hog = bytearray(64 * 2**30)"), 5, "(MemoryError)"),
    "memory_bomb_function": ("05_decoding", "solution", lambda nb: edit(
        nb, "def top_k_filter", "kth = ", "hog = [0] * 10**10\n    kth = "), 5, "q2: 1 / 2"),
    "sys_exit_blank": ("03_attention", "student", lambda nb: add(nb, "import sys\nsys.exit(0)", 1), 0, "(SystemExit)"),
    "sys_exit_solution": ("03_attention", "solution", lambda nb: add(nb, "import sys\nsys.exit(1)", 4), 7,
                          "(SystemExit)"),
    "os_exit": ("03_attention", "solution", lambda nb: add(nb, "import os\nos._exit(3)"), 0, "exit code 3"),
    "edited_checks": ("02_bptt", "student", edited_checks, 0, "Total: 0 / 5"),
    "monkeypatch": ("03_attention", "student", lambda nb: add(nb, MONKEYPATCH), 0, "Total: 0 / 7"),
    "fake_results": ("05_decoding", "student", lambda nb: add(nb, FAKE), 0, "Total: 0 / 6"),
    "read_hidden_tests": ("04_bpe", "student", lambda nb: add(nb, READ_TESTS), 0, "Total: 0 / 5"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built")
    subprocess.run([PY, "assignments/build.py", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def load(built: Path, name: str, part: str) -> nbformat.NotebookNode:
    return nbformat.read(built / name / part / f"{name}.ipynb", as_version=4)


@pytest.fixture(scope="module")
def graded(built: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, float]:
    """Grade every case in one batch (2 at a time); returns ({student: gradebook row}, output folder, seconds)."""
    subs, out = tmp_path_factory.mktemp("submissions"), tmp_path_factory.mktemp("grades")
    for name in NAMES:
        nbformat.write(load(built, name, "solution"), subs / f"solution_{name}.ipynb")
        nbformat.write(load(built, name, "student"), subs / f"blank_{name}.ipynb")
    for student, (name, part, change, _, _) in CASES.items():
        nbformat.write(change(load(built, name, part)), subs / f"{student}.ipynb")
    (subs / "not_json.ipynb").write_text("this is not a notebook {")
    (subs / "broken_cells.ipynb").write_text(json.dumps({"metadata": {"lmcourse": {"assignment": "01_ngram"}},
                                                         "cells": 5}))
    start = time.perf_counter()
    cmd = [PY, "assignments/grade.py", str(subs), "--out", str(out), "--built", str(built), "--jobs", "2",
           "--timeout", "20", "--call-timeout", "8"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for book in out.glob("*/gradebook.csv"):
        with book.open() as f:
            rows |= {r["student"]: r | {"assignment": book.parent.name} for r in csv.DictReader(f)}
    return rows, out, seconds


def check_batch(rows: dict, out: Path) -> list[str]:
    """Every expectation on the batch, as a list of failures (empty when all hold)."""
    errors = []
    for name in NAMES:
        solution, blank = rows[f"solution_{name}"], rows[f"blank_{name}"]
        if not float(solution["total"]) == float(solution["possible"]) == POSSIBLE[name] or solution["status"] != "ok":
            errors.append(f"solution of {name} is not full marks: {solution}")
        if float(blank["total"]) != 0 or float(blank["possible"]) != POSSIBLE[name] or blank["status"] != "ok":
            errors.append(f"blank {name} is not 0 after running to the end: {blank}")
    for student, (name, _, _, expected, text) in CASES.items():
        row = rows[student]
        feedback = (out / name / "feedback" / f"{student}.txt").read_text()
        if row["assignment"] != name or float(row["total"]) != expected or text not in feedback:
            errors.append(f"{student}: expected {expected} and {text!r}, got {row}\n{feedback}")
    if rows["not_json"]["assignment"] != "unknown" or "cannot tell the assignment" not in rows["not_json"]["status"]:
        errors.append(f"not_json: {rows['not_json']}")
    if "could not read the notebook" not in rows["broken_cells"]["status"] or float(rows["broken_cells"]["total"]):
        errors.append(f"broken_cells: {rows['broken_cells']}")
    log = (out / "04_bpe" / "logs" / "read_hidden_tests.txt").read_text()
    if "CWD: []" not in log:  # otter run would have put every test in the working directory
        errors.append(f"hidden tests or solutions readable from the working directory: {log}")
    if "filesystem isolation: on" in log and "ANYWHERE: []" not in log:  # where user namespaces are allowed
        errors.append(f"hidden tests or solutions readable on disk: {log}")
    for feedback in (out / "04_bpe" / "feedback").glob("*.txt"):
        if "test_encode_random" in feedback.read_text():  # a hidden test's name
            errors.append(f"feedback shows a hidden test: {feedback}")
    return errors


def test_grading_batch(graded: tuple) -> None:
    """Solutions get full marks, blanks 0, partial and hostile submissions exactly what their tests give, within
    a few minutes for the whole batch (one test, so that pytest-xdist grades the batch once)."""
    rows, out, seconds = graded
    print(f"graded {len(rows)} submissions in {seconds:.1f} s")
    errors = check_batch(rows, out)
    assert not errors, "\n\n".join(errors)
    assert seconds < 300  # measured 2-3 min with the 2 cores shared by ~10 busy processes


def test_grading_without_namespaces(built: Path, tmp_path: Path) -> None:
    """Where user namespaces are not allowed (some CI runners), the limits and the judging still hold."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    nbformat.write(load(built, "03_attention", "solution"), subs / "solution.ipynb")
    for student in ("monkeypatch", "os_exit", "memory_bomb_cell", "read_hidden_tests"):
        name, part, change, _, _ = CASES[student]
        nbformat.write(change(load(built, name, part)), subs / f"{student}.ipynb")
    proc = subprocess.run([PY, "assignments/grade.py", str(subs), "--out", str(out), "--built", str(built),
                           "--no-namespaces"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for book in out.glob("*/gradebook.csv"):
        with book.open() as f:
            rows |= {r["student"]: float(r["total"]) for r in csv.DictReader(f)}
    assert rows == {"solution": 7, "monkeypatch": 0, "os_exit": 0, "memory_bomb_cell": 5, "read_hidden_tests": 0}
    log = (out / "04_bpe" / "logs" / "read_hidden_tests.txt").read_text()
    assert "filesystem isolation: off" in log and "CWD: []" in log, log


def test_student_version_has_no_solutions_or_hidden_tests(built: Path) -> None:
    for name in NAMES:
        student = (built / name / "student" / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in student and "hidden=True" not in student
        assert "ref_beam" not in student and "test_encode_random" not in student
        nb = load(built, name, "student")
        assert nb.cells[0].source.startswith("# Jupyter or Colab: install") and "otter-grader" in nb.cells[0].source
        assert nb.metadata["lmcourse"]["assignment"] == name


PUBLIC_CHECKS = '''
import json, os, sys, nbformat
from pathlib import Path
results = {}
for nb_path in sys.argv[1:]:
    workdir = Path(nb_path).with_suffix(".run")
    workdir.mkdir()
    os.chdir(workdir)
    ns = {"__name__": "__main__"}
    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, "<cell>", "exec"), ns)  # any error fails the test: the notebook must run
    tests = sorted(p.stem for p in Path("tests").glob("*.py"))
    exec(f"checks = {{q: grader.check(q).passed_all for q in {tests!r}}}", ns)  # called from the notebook's globals
    results[nb_path] = ns["checks"]
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def public_checks(built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every solution and student notebook run top to bottom in a plain Python process with real otter (as a
    student's Jupyter or Colab would), then grader.check(q) for each public test; {(name, part): {q: passed}}."""
    folder = tmp_path_factory.mktemp("public")
    paths = {}
    for name in NAMES:
        for part in ("solution", "student"):
            paths[(name, part)] = folder / f"{part}_{name}.ipynb"
            shutil.copy(built / name / part / f"{name}.ipynb", paths[(name, part)])
    proc = subprocess.run([PY, "-c", PUBLIC_CHECKS, *map(str, paths.values())], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: results[str(path)] for key, path in paths.items()}


def test_public_checks(public_checks: dict) -> None:
    """In the student's own environment (real otter, real grader.check): the solution passes, the blank fails."""
    for name in NAMES:
        solution, student = public_checks[(name, "solution")], public_checks[(name, "student")]
        assert solution and all(solution.values()), (name, solution)
        assert student.keys() == solution.keys() and not any(student.values()), (name, student)


def test_wire_round_trip_and_rejects_objects() -> None:
    """Only plain values and tensors cross between a submission and the grader; anything else is refused."""
    sys.path.insert(0, str(ROOT / "assignments"))
    try:
        import torch
        import wire
    finally:
        sys.path.pop(0)
    value = {("a", 1): [1.5, None, True, "x"], "t": torch.arange(6.0).reshape(2, 3), "e": torch.zeros(0, 4),
             "inf": float("-inf"), "i": torch.tensor([1, 2])}
    back = wire.decode(wire.loads(wire.dumps({"v": wire.encode(value)}))["v"])
    assert back.keys() == value.keys() and back[("a", 1)] == [1.5, None, True, "x"] and back["inf"] == float("-inf")
    for key in ("t", "e", "i"):
        assert back[key].dtype == value[key].dtype and torch.equal(back[key], value[key])
    with pytest.raises(ValueError, match="cannot send a value of type"):
        wire.encode(object())
    for bad in ({"pickle": "..."}, {"torch": [1], "dtype": "object", "shape": [1]}, {"dict": [[[1], 2]]}):
        with pytest.raises(ValueError):
            wire.decode(bad)


def test_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([PY, "assignments/grade.py", str(tmp_path / "missing")], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
    proc = subprocess.run([PY, "assignments/build.py", "--out", str(tmp_path), "--only", "99_nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no source for 99_nope" in proc.stderr
