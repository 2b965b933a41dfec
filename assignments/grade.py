"""Grade a folder of submitted notebooks (one per student) into a gradebook CSV and per-student feedback.

    python assignments/grade.py SUBMISSIONS --out .build/grades [--built .build/assignments] [--jobs 2]

Each submission runs in its own sandbox process (see sandbox.py: time, CPU, memory and file-size limits, an empty
working directory, no tests on disk there). The hidden and public tests (otter-grader's exception-based test files
from `build.py`) run here, in the grader, with each tested name bound to a stub that calls the submission's function
in its sandbox and gets back plain values. So nothing the submission patches (numpy.allclose, torch.allclose, otter,
print) is ever used to judge it. Writes OUT/<assignment>/gradebook.csv (student, one column per question, total,
possible, status), OUT/<assignment>/feedback/<student>.txt and OUT/<assignment>/logs/<student>.txt (what the
submission printed; for instructors only).
"""

import argparse
import csv
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from otter.test_files.exception_test import ExceptionTestFile
from sandbox import Limits, Private, Sandbox, SandboxError


@dataclass
class Result:
    """One student's grade: points per question (name -> (score, possible)), a status line and the feedback text."""

    student: str
    assignment: str
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    status: str = "ok"
    feedback: str = ""
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(s for s, _ in self.scores.values())

    @property
    def possible(self) -> float:
        return sum(p for _, p in self.scores.values())


class Remote:
    """Stands for the submission's function `name`: calling it runs it in the sandbox and returns plain values."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self.sandbox, self.name = sandbox, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.sandbox.call(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<submitted function {self.name}>"


def load_tests(tests_dir: Path) -> list[ExceptionTestFile]:
    """Fresh otter test-file objects for one grading (q1.py, q2.py, ... in name order)."""
    files = sorted(tests_dir.glob("*.py"))
    if not files:
        raise ValueError(f"no test files in {tests_dir}; run `make assignments` first")
    return [ExceptionTestFile.from_file(str(f)) for f in files]


def read_cells(path: Path) -> list[str]:
    """The code cells of a notebook, as source strings; ValueError if it is not a readable notebook."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in nb["cells"] if c.get("cell_type") == "code"]
        return ["".join(c["source"]) if isinstance(c["source"], list) else str(c["source"]) for c in cells]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"could not read the notebook ({type(e).__name__}); submit the .ipynb file itself") from None


def assignment_of(path: Path) -> str | None:
    """The assignment a student notebook declares in its metadata (set by build.py), if any."""
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["metadata"]["lmcourse"]["assignment"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def private_paths(built: Path, out: Path, enabled: bool = True) -> Private:
    """What a submission may not read (tests, sources with solutions, other submissions' files and grades) and may
    not change (this repository, the Python installation, the home folder)."""
    source = Path(__file__).resolve().parent / "source"
    hide = [built, out, source, Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]
    readonly = [Path(__file__).resolve().parents[1], Path(sys.prefix), Path(sys.base_prefix), Path.home()]
    unique = lambda paths: tuple(dict.fromkeys(str(p.resolve()) for p in paths))  # noqa: E731
    return Private(unique(hide), unique(readonly), enabled)


def grade_one(path: Path, assignment: str, built: Path, out: Path, limits: Limits, private: Private) -> Result:
    """Grade one notebook against the tests of `assignment`; never raises for anything the submission does."""
    start = time.perf_counter()
    result = Result(path.stem, assignment)
    tests = load_tests(built / assignment / "autograder" / "tests")
    names = sorted({p for tf in tests for tc in tf.test_cases for p in tc.body._get_func_params()} - {"env"})
    env: dict[str, Any] = {}
    notes: list[str] = []
    (out / "logs").mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="lmcourse-submission-")
    sandbox = None
    try:
        sandbox = Sandbox(read_cells(path), workdir, str(out / "logs" / f"{path.stem}.txt"), limits, names,
                          private)
        ready = sandbox.start()
        if ready["errors"]:
            notes.append("cells that raised: " + ", ".join(f"code cell {i + 1} ({e})" for i, e in ready["errors"]))
        for name, kind in ready["names"].items():
            if kind == "function":
                env[name] = Remote(sandbox, name)
            elif kind == "value":
                env[name] = sandbox.call(name, (), {})
        missing = sorted(n for n, k in ready["names"].items() if k == "missing")
        if missing:
            notes.append("not defined: " + ", ".join(missing))
    except (ValueError, SandboxError) as e:
        result.status = str(e)
    try:
        for tf in tests:
            try:
                tf.run(env)
            except Exception as e:  # a test that cannot even report counts as failed
                tf.test_case_results = []
                notes.append(f"{tf.name}: grading error {type(e).__name__}")
            result.scores[tf.name] = (float(tf.score), float(tf.possible))
    finally:
        if sandbox is not None:
            if sandbox.dead and result.status == "ok":
                result.status = sandbox.dead
            sandbox.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    result.feedback = feedback(result, tests, notes)
    return result


def feedback(result: Result, tests: list[ExceptionTestFile], notes: list[str]) -> str:
    """What the student sees: points per question, public test messages, hidden tests as passed/failed only."""
    lines = [f"Assignment {result.assignment}, submission {result.student}",
             f"Total: {result.total:g} / {result.possible:g}", f"Status: {result.status}", *notes, ""]
    for tf in tests:
        score, possible = result.scores[tf.name]
        lines.append(f"{tf.name}: {score:g} / {possible:g}")
        for r in tf.test_case_results:
            tc = r.test_case
            verdict = "passed" if r.passed else "failed"
            if tc.hidden:
                lines.append(f"  hidden test ({tc.points:g} pt): {verdict}")
            else:
                lines.append(f"  {tc.name} ({tc.points:g} pt): {verdict}")
                if not r.passed:
                    lines += ["    " + line for line in r.message.splitlines()[1:12]]
    return "\n".join(lines) + "\n"


def write_gradebook(results: list[Result], out: Path) -> Path:
    """OUT/gradebook.csv and OUT/feedback/<student>.txt for one assignment's results."""
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    questions = sorted({q for r in results for q in r.scores})
    path = out / "gradebook.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *questions, "total", "possible", "status"])
        for r in sorted(results, key=lambda r: r.student):
            w.writerow([r.student, *(f"{r.scores.get(q, (0, 0))[0]:g}" for q in questions), f"{r.total:g}",
                        f"{r.possible:g}", r.status])
            (out / "feedback" / f"{r.student}.txt").write_text(r.feedback)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("submissions", type=Path, help="folder of submitted .ipynb files, one per student")
    p.add_argument("--out", type=Path, default=Path(".build/grades"))
    p.add_argument("--built", type=Path, default=Path(".build/assignments"), help="output of build.py")
    p.add_argument("--assignment", help="grade every notebook against this assignment (default: from metadata)")
    p.add_argument("--jobs", type=int, default=2, help="submissions graded at the same time")
    p.add_argument("--timeout", type=float, default=Limits.notebook_s, help="seconds to run a notebook's cells")
    p.add_argument("--call-timeout", type=float, default=Limits.call_s, help="seconds per tested function call")
    p.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="address-space limit per submission")
    p.add_argument("--cpu-s", type=int, default=Limits.cpu_s, help="CPU-seconds limit per submission")
    p.add_argument("--no-namespaces", action="store_true", help="skip the user/mount namespace isolation")
    a = p.parse_args(argv)
    if not a.submissions.is_dir():
        p.error(f"{a.submissions} is not a folder; pass the folder that holds the submitted notebooks")
    known = sorted(d.name for d in a.built.glob("*") if (d / "autograder" / "tests").is_dir())
    if not known:
        p.error(f"no built assignments under {a.built}; run `make assignments` first")
    if a.assignment and a.assignment not in known:
        p.error(f"unknown assignment {a.assignment!r}; built ones: {', '.join(known)}")
    limits = Limits(a.timeout, a.call_timeout, a.cpu_s, a.memory_mb)
    torch.set_num_threads(1)  # the tests' references are small; leave the cores to the submissions
    a.out.mkdir(parents=True, exist_ok=True)
    private = private_paths(a.built, a.out, not a.no_namespaces)
    multiprocessing.get_context("forkserver").set_forkserver_preload(["wire", "sandbox", "torch", "numpy"])

    def grade(path: Path) -> Result:
        name = a.assignment or assignment_of(path)
        if name not in known:
            r = Result(path.stem, "unknown", status=f"cannot tell the assignment (metadata says {name!r})")
            r.feedback = f"{r.status}; submit the notebook you were given, with its metadata\n"
            return r
        return grade_one(path, name, a.built, a.out / name, limits, private)

    submissions = sorted(a.submissions.glob("*.ipynb"))
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(grade, submissions))
    for name in sorted({r.assignment for r in results}):
        group = [r for r in results if r.assignment == name]
        path = write_gradebook(group, a.out / name)
        print(f"{name}: {len(group)} submissions -> {path}")
    for r in results:
        print(f"  {r.assignment:14s} {r.student:28s} {r.total:4g}/{r.possible:<4g} {r.seconds:6.1f}s  {r.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
