"""nbval settings for the notebooks, a record of how long each notebook takes, and executed copies for the book.

The run time of a notebook is the sum of its cells' setup, call and teardown; the table is printed at the
end of the run and written to ``.build/nbval-times.json``.

nbval keeps the outputs each cell produced (``IPyNbCell.test_outputs``). At the end of the run every notebook
that ran is written with those outputs to ``.build/executed/<path>``, so that ``make book-check`` can build the
book with real outputs (figures, printed numbers, progress bars) without executing the notebooks a second time.
Progress bars are ipywidgets whose final state reaches the kernel's frontend only as widget messages, which nbval
reads and drops; they are tracked here and written into the copy as the text of the finished bar.
"""

from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

# nbval does not read a kernel's messages while a cell runs; a progress bar redrawn many times a second
# for minutes fills the queue and the cell's final messages are lost ("Timeout ... waiting for output").
# One redraw a second at most keeps long training cells within what nbval can hold. Kernels inherit this.
os.environ.setdefault("TQDM_MININTERVAL", "1")

EXECUTED = Path(".build/executed")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

_seconds: defaultdict[str, float] = defaultdict(float)
_outputs: defaultdict[Path, dict[int, list]] = defaultdict(dict)  # notebook -> code cell number -> outputs
_widgets: defaultdict[Path, dict[str, dict]] = defaultdict(dict)  # notebook -> widget model id -> state


def _track_widgets(notebook) -> None:
    """Wrap the notebook's kernel-message reader so that widget states are recorded as they change."""
    read, states = notebook.get_kernel_message, _widgets[Path(notebook.path)]

    def get_kernel_message(*args, **kwargs):
        msg = read(*args, **kwargs)
        if msg["msg_type"] in ("comm_open", "comm_msg"):
            content = msg["content"]
            states.setdefault(content["comm_id"], {}).update(content.get("data", {}).get("state", {}))
        return msg

    notebook.get_kernel_message = get_kernel_message


def pytest_collection_modifyitems(config, items) -> None:
    # nbval waits only 5 s for a cell's last output message once the cell has finished; on a loaded
    # 2-core machine that wait can expire although the cell succeeded. Give it 60 s.
    notebooks = {}
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 60
            notebooks[id(item.parent)] = item.parent
    for notebook in notebooks.values():
        _track_widgets(notebook)
        (config.rootpath / EXECUTED / Path(notebook.path).relative_to(config.rootpath)).unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    if getattr(item, "test_outputs", None) is not None:
        _outputs[Path(item.path)][item.cell_num] = item.test_outputs


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration


def _widget_text(model_id: str, states: dict[str, dict]) -> str | None:
    """The text of a finished tqdm bar (an HBox of description, progress and statistics), None if it was hidden."""
    box = states.get(model_id, {})
    children = [states.get(c.removeprefix("IPY_MODEL_"), {}) for c in box.get("children", [])]
    if states.get(box.get("layout", "").removeprefix("IPY_MODEL_"), {}).get("visibility") == "hidden":
        return None
    if len(children) != 3 or "max" not in children[1]:
        return ""
    left, bar, right = (html.unescape(str(c.get("value", ""))).replace("\u2007", " ") for c in children)
    filled = round(10 * children[1]["value"] / children[1]["max"]) if children[1]["max"] else 10
    return f"{left}|{'█' * filled}{' ' * (10 - filled)}|{right}".strip()


def _finished(outputs: list, states: dict[str, dict]) -> list:
    """Outputs as a static page shows them: a progress-bar widget becomes the text of the finished bar, printed
    (a stream: a display output would be wrapped in the cell's figure, if it has one, as a second figure)."""
    result = []
    for out in outputs:
        if WIDGET_VIEW in out.get("data", {}):
            text = _widget_text(out["data"][WIDGET_VIEW]["model_id"], states)
            if text is None:
                continue
            text = text or out["data"].get("text/plain", "")
            out = {"output_type": "stream", "name": "stdout", "text": text + "\n"}
        result.append(out)
    return result


def _write_executed(rootpath: Path) -> list[Path]:
    import nbformat

    written = []
    for path, outputs in _outputs.items():
        nb = nbformat.read(path, as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        for number, cell in enumerate(code):
            if number in outputs:
                cell.execution_count = number + 1
                cell.outputs = [nbformat.from_dict(o) for o in _finished(outputs[number], _widgets[path])]
                for out in cell.outputs:
                    if out.output_type == "execute_result":
                        out.execution_count = number + 1
        nb.metadata["lmcourse"] = {"executed_by": "nbval", "cells_run": len(outputs), "code_cells": len(code)}
        out_path = rootpath / EXECUTED / path.relative_to(rootpath)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_path)
        written.append(out_path)
    return written


def pytest_sessionfinish(session) -> None:
    # Under xdist each worker runs whole notebooks (--dist loadfile) and writes the ones it ran.
    if _outputs:
        _write_executed(session.config.rootpath)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.section("notebook run times under nbval")
    for path, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
    terminalreporter.write_line(f"{sum(_seconds.values()):8.1f} s  in all")
    out = Path(".build/nbval-times.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({p: round(s, 1) for p, s in sorted(_seconds.items())}, indent=1) + "\n")
