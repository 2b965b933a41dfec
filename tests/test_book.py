"""Checks on the built HTML book (``make book-check`` builds it and points LMCOURSE_BOOK_HTML here)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from pathlib import Path

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / os.environ.get("LMCOURSE_BOOK_HTML", "_build/html")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make book-check` (or `make book`) first")
    return {p.relative_to(HTML).as_posix(): p.read_text() for p in HTML.rglob("*.html") if "_static" not in p.parts}


def test_every_notebook_has_a_page(pages):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.stem}.html" in pages


def test_mathjax_is_served_from_the_site(pages):
    assert (HTML / "_static/mathjax/tex-chtml.js").exists()
    assert list((HTML / "_static/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))
    for name, html in pages.items():
        for src in re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, re.I):
            assert not src.startswith(("http:", "https:", "//")), f"{name} loads MathJax from {src}"


def render(url: str) -> str:
    """The DOM of a page after its scripts ran, from headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("LMCOURSE_REQUIRE_BROWSER"),
                    reason="Debian's chromium is not installed (CI installs it)")
def test_math_is_typeset_offline_in_a_browser():
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dom = render(f"http://127.0.0.1:{httpd.server_address[1]}/notebooks/00_setup.html")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert dom.count("<mjx-container") >= 10, "MathJax did not typeset the page"
    body = dom[dom.index("<main"):]
    assert r"\prod_{t=1}" not in re.sub(r"<mjx-container.*?</mjx-container>", "", body, flags=re.S)
