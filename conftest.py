"""nbval settings for the notebooks, and a record of how long each notebook takes under nbval.

The run time of a notebook is the sum of its cells' setup, call and teardown; the table is printed at the
end of the run and written to ``.build/nbval-times.json``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

# nbval does not read a kernel's messages while a cell runs; a progress bar redrawn many times a second
# for minutes fills the queue and the cell's final messages are lost ("Timeout ... waiting for output").
# One redraw a second at most keeps long training cells within what nbval can hold. Kernels inherit this.
os.environ.setdefault("TQDM_MININTERVAL", "1")

_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_collection_modifyitems(items) -> None:
    # nbval waits only 5 s for a cell's last output message once the cell has finished; on a loaded
    # 2-core machine that wait can expire although the cell succeeded. Give it 60 s.
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 60


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration


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
