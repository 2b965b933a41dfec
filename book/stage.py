"""Stage the book's sources for ``make book-check``: ``python book/stage.py DEST``.

Writes _config.yml, _toc.yml, book/ and notebooks/ to DEST, with each notebook replaced by its executed copy
from the last nbval run (.build/executed, written by the root conftest.py) when that copy was made from the
notebook as it is now, so the book shows real outputs without executing the notebooks a second time.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / ".build/executed"


def is_current(nb: Path, executed: Path) -> bool:
    """Whether the executed copy was made from nb as it is now (same cells, same sources)."""
    try:
        ours, theirs = (json.loads(p.read_text())["cells"] for p in (nb, executed))
    except (OSError, ValueError, KeyError):
        return False
    strip = lambda cells: [(c["cell_type"], "".join(c["source"]), c.get("metadata", {})) for c in cells]
    return strip(ours) == strip(theirs)


def stage(dest: Path) -> None:
    """Write the book's sources to dest, with executed copies of the notebooks where they are current."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("book", "notebooks"):
        shutil.copytree(ROOT / folder, dest / folder)
    (dest / ".build").mkdir()
    (dest / ".build/assets").symlink_to(ROOT / ".build/assets")  # html_static_path (MathJax)
    used, stale = [], []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        executed = EXECUTED / "notebooks" / nb.name
        if executed.exists() and is_current(nb, executed):
            shutil.copy(executed, dest / "notebooks" / nb.name)
            used.append(nb.stem)
        elif executed.exists():
            stale.append(nb.stem)
    missing = sorted({nb.stem for nb in (ROOT / "notebooks").glob("*.ipynb")} - set(used) - set(stale))
    print(f"book sources in {dest}: {len(used)} notebooks with outputs from the last nbval run", file=sys.stderr)
    if stale:
        print(f"  without outputs, changed since nbval ran them: {', '.join(stale)}", file=sys.stderr)
    if missing:
        print(f"  without outputs, not run by nbval (`make nbval` first): {', '.join(missing)}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python book/stage.py DEST")
    stage(Path(sys.argv[1]))
