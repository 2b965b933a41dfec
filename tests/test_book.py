"""Checks on the built HTML book (``make book-check`` builds it and points LMCOURSE_BOOK_HTML here).

Static checks read the HTML files: every table-of-contents entry has a page, internal links and local resources
resolve, nothing is loaded from another host, MathJax is served by the site, and notebook pages carry their
launch (Colab, Binder) and download buttons. The browser checks render every page in Debian's headless Chromium,
driven over the DevTools protocol through a pipe (no extra package), from a server on 127.0.0.1: math is typeset,
every image loads, no cell output holds a traceback, the left navigation lists the table of contents in order,
exercise solutions start hidden, and no request leaves 127.0.0.1. Screenshots go to .build/screenshots.
"""

from __future__ import annotations

import base64
import fcntl
import http.server
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / os.environ.get("LMCOURSE_BOOK_HTML", "_build/html")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / ".build/screenshots"
EXECUTED = ROOT / ".build/executed"
# Pages photographed for a human to look at: (page, element to scroll to or None for the top, file name).
SHOTS = [("book/intro.html", None, "intro"), ("book/notation.html", None, "notation"),
         ("notebooks/00_setup.html", None, "00_setup"),
         ("notebooks/00_setup.html", ".cell_output img", "00_setup-figure"),
         ("notebooks/07_transformer.html", ".cell_output img", "07_transformer-figure"),
         ("notebooks/09_sampling.html", "#exercises", "09_sampling-exercises")]


def toc_pages() -> list[str]:
    """The book's pages in table-of-contents order, as paths of built HTML files (LMCOURSE_BOOK_TOC: another toc)."""
    toc = yaml.safe_load((ROOT / os.environ.get("LMCOURSE_BOOK_TOC", "_toc.yml")).read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return [f"{f}.html" for f in files]


# ---------------------------------------------------------------------------------------------- static checks


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make book-check` (or `make book`) first")
    return {p.relative_to(HTML).as_posix(): p.read_text() for p in HTML.rglob("*.html")
            if not {"_static", "_sources"} & set(p.relative_to(HTML).parts)}


@pytest.fixture(scope="module")
def soups(pages):
    from bs4 import BeautifulSoup

    return {name: BeautifulSoup(html, "html.parser") for name, html in pages.items()}


def test_every_toc_entry_and_notebook_has_a_page(pages):
    for page in toc_pages():
        assert page in pages, f"{page} is in _toc.yml but was not built"
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.stem}.html" in pages


def test_the_front_page_leads_to_the_root_page(pages):
    assert f"url={toc_pages()[0]}" in pages["index.html"], "index.html must redirect to the _toc.yml root"


def is_external(url: str) -> bool:
    return url.startswith(("http:", "https:", "//", "mailto:", "javascript:"))


def test_internal_links_and_local_resources_resolve(soups):
    ids = {name: {tag["id"] for tag in soup.find_all(id=True)} for name, soup in soups.items()}
    broken = []
    for name, soup in soups.items():
        for tag, attr in (("a", "href"), ("img", "src"), ("script", "src"), ("link", "href")):
            for element in soup.find_all(tag, attrs={attr: True}):
                url = element[attr]
                if is_external(url) or url.startswith("data:"):
                    continue
                parts = urlsplit(urljoin(f"http://book/{name}", url))
                target = unquote(parts.path).lstrip("/") or "index.html"
                if not (HTML / target).is_file():
                    broken.append(f"{name}: {tag} {url} (no file {target})")
                elif tag == "a" and parts.fragment and target in ids and unquote(parts.fragment) not in ids[target]:
                    broken.append(f"{name}: {url} (no id {parts.fragment!r} in {target})")
    assert not broken, "\n".join(broken[:30])


def test_nothing_is_loaded_from_another_host(soups):
    """Scripts, styles, fonts and images come from the site: the book must read offline (links may go out)."""
    loaded = []
    for name, soup in soups.items():
        for tag, attr in (("script", "src"), ("img", "src"), ("iframe", "src")):
            loaded += [f"{name}: {e[attr]}" for e in soup.find_all(tag, attrs={attr: True}) if is_external(e[attr])]
        for link in soup.find_all("link", href=True):
            rel = set(link.get("rel", []))
            if rel & {"stylesheet", "preload", "icon", "modulepreload"} and is_external(link["href"]):
                loaded.append(f"{name}: {link['href']}")
    for css in (HTML / "_static").rglob("*.css"):
        text = css.read_text(errors="replace")
        for marker in ("url(http", "url('http", 'url("http', "url(//", "@import url(http"):
            if marker in text:
                loaded.append(f"{css.relative_to(HTML)}: {marker}...")
    assert not loaded, "\n".join(loaded)


def test_mathjax_is_served_from_the_site(soups):
    assert (HTML / "_static/mathjax/tex-chtml.js").exists()
    assert list((HTML / "_static/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))
    for name, soup in soups.items():
        for script in soup.find_all("script", src=True):
            assert not ("mathjax" in script["src"].lower() and is_external(script["src"])), name


def test_notebook_pages_have_launch_and_download_buttons(soups):
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].removeprefix("https://github.com/")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        soup = soups[f"notebooks/{nb.stem}.html"]
        hrefs = [a["href"] for a in soup.find_all("a", href=True)]
        colab = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{nb.name}"
        assert colab in hrefs, f"{nb.name}: no Colab launch button to {colab}"
        assert any(h.startswith(f"https://mybinder.org/v2/gh/{repo}/main") and nb.name in h for h in hrefs), \
            f"{nb.name}: no Binder launch button"
        download = f"../_sources/notebooks/{nb.name}"
        assert download in hrefs and (HTML / "_sources/notebooks" / nb.name).is_file(), \
            f"{nb.name}: no download button for the notebook"


# ---------------------------------------------------------------------------------------------- in a browser


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the browser)."""

    def __init__(self, profile: str) -> None:
        to_browser, from_browser = os.pipe(), os.pipe()
        # Move the browser's ends above 9 so that placing them at 3 and 4 in the child cannot overwrite one.
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser[0], from_browser[1]))
        for fd in (to_browser[0], from_browser[1]):
            os.close(fd)

        def place_fds() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=place_fds, close_fds=False)
        os.close(child_in)
        os.close(child_out)
        self.write, self.read = to_browser[1], from_browser[0]
        self.messages: queue.Queue[dict] = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        while chunk := os.read(self.read, 1 << 20):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self.messages.put(json.loads(message))

    def _next(self, deadline: float) -> dict:
        try:
            return self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("no answer from Chromium") from None

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._next(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._next(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.write)


# Runs in each page once it has loaded: waits for MathJax, fonts and images, then reports what it sees.
INSPECT = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  await Promise.all([...document.images].map(i => i.complete ? null :
    new Promise(done => { i.addEventListener('load', done); i.addEventListener('error', done); })));
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, mjx-container, script, style, .highlight, .cell_output, .math')
    .forEach(e => e.remove());
  const exercises = [...main.querySelectorAll('section')].find(s => /Exercises$/.test(
    (s.querySelector('h1, h2, h3')?.textContent || '').replace('#', '').trim()));
  const solutions = exercises ? [...exercises.querySelectorAll('.admonition.dropdown, details')] : [];
  const visible = e => e.getClientRects().length > 0 && e.offsetHeight > 0;
  return {
    path: location.pathname,
    math: main.querySelectorAll('.math').length,
    typeset: main.querySelectorAll('mjx-container').length,
    untypeset: [...main.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))
      .map(e => e.textContent.slice(0, 80)),
    raw_tex: (prose.textContent.match(/\\[a-zA-Z]{2,}|\$\$|\\\(|\\\[/g) || []).slice(0, 5),
    images: document.images.length,
    broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
      .map(i => i.getAttribute('src').slice(0, 80)),
    output_images: main.querySelectorAll('.cell_output img').length,
    uncaptioned: [...main.querySelectorAll('.cell_output img')]
      .filter(i => !i.closest('figure') || !i.closest('figure').querySelector('figcaption')).length,
    tracebacks: [...main.querySelectorAll('.cell_output')].filter(e =>
      e.querySelector('.traceback, .output.error') || /Traceback \(most recent call last\)/.test(e.textContent))
      .map(e => e.textContent.slice(0, 300)),
    nav: [...document.querySelectorAll('nav.bd-docs-nav a.reference')].map(a => new URL(a.href).pathname),
    exercises: Boolean(exercises),
    solutions: solutions.length,
    solutions_shown: solutions.filter(s => s.tagName === 'DETAILS' ? s.open :
      [...s.children].some(c => !c.classList.contains('admonition-title') && c.tagName !== 'BUTTON' && visible(c)))
      .length,
  };
})()
"""


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def visit(browser: Chromium, session: str, url: str) -> tuple[dict, list[dict]]:
    """Load url in the session's tab and inspect it: (what INSPECT reports, the network events of the load)."""
    browser.events = [e for e in browser.events if e.get("sessionId") != session]
    browser.send("Page.navigate", {"url": url}, session)
    browser.wait_for("Page.loadEventFired", session)
    result = browser.send("Runtime.evaluate", {"expression": INSPECT, "awaitPromise": True, "returnByValue": True},
                          session)
    if "exceptionDetails" in result:
        raise RuntimeError(f"{url}: {result['exceptionDetails']}")
    network = [e for e in browser.events if e.get("sessionId") == session and e["method"].startswith("Network.")]
    return result["result"]["value"], network


def screenshot(browser: Chromium, session: str, url: str, target: str | None, out: Path) -> None:
    browser.send("Page.navigate", {"url": url}, session)
    browser.wait_for("Page.loadEventFired", session)
    scroll = f"document.querySelector({json.dumps(target)})?.scrollIntoView();" if target else ""
    browser.send("Runtime.evaluate", {"expression": f"(async () => {{ {scroll} await MathJax.startup.promise; "
                                      "await document.fonts.ready; })()", "awaitPromise": True}, session)
    out.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session)["data"]))


@pytest.fixture(scope="module")
def rendered(pages) -> dict[str, dict]:
    """Every page rendered in headless Chromium: page -> INSPECT's report plus the hosts and failures it loaded."""
    if CHROMIUM is None:
        if os.environ.get("LMCOURSE_REQUIRE_BROWSER"):
            pytest.fail("LMCOURSE_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (CI installs it)")
    httpd = serve(HTML)
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    reports = {}
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Page.enable", "Network.enable", "Runtime.enable"):
                browser.send(method, session=session)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
            for name in sorted(pages):
                if name == "index.html":  # a redirect to the root page
                    continue
                report, network = visit(browser, session, base + name)
                requests = [e["params"]["request"]["url"] for e in network
                            if e["method"] == "Network.requestWillBeSent"]
                report["external"] = [u for u in requests if not u.startswith((base, "data:", "blob:"))]
                report["failed"] = [f"{e['params']['response']['status']} {e['params']['response']['url']}"
                                    for e in network if e["method"] == "Network.responseReceived"
                                    and e["params"]["response"]["status"] >= 400
                                    and not e["params"]["response"]["url"].endswith("/favicon.ico")]  # the browser's
                report["failed"] += [e["params"].get("errorText", "") for e in network
                                     if e["method"] == "Network.loadingFailed" and not e["params"].get("canceled")]
                reports[name] = report
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for page, element, file in SHOTS:
                if page in pages:
                    screenshot(browser, session, base + page, element, SCREENSHOTS / f"{file}.png")
        finally:
            browser.close()
            httpd.shutdown()
            httpd.server_close()
    return reports


def failures(rendered: dict[str, dict], key: str) -> dict[str, list]:
    return {name: report[key] for name, report in rendered.items() if report[key]}


def test_browser_rendered_every_page(rendered, pages):
    assert set(rendered) == set(pages) - {"index.html"}


def test_math_is_typeset(rendered):
    assert not failures(rendered, "untypeset"), "math left for MathJax that it did not typeset"
    assert not failures(rendered, "raw_tex"), "TeX visible as text outside math"
    assert rendered["notebooks/00_setup.html"]["typeset"] >= 10, "MathJax did not typeset chapter 0"


def test_every_image_loads(rendered):
    assert not failures(rendered, "broken_images")
    assert not failures(rendered, "failed"), "requests that failed while loading pages"


def test_no_request_leaves_the_site(rendered):
    assert not failures(rendered, "external")


def test_no_cell_output_holds_a_traceback(rendered):
    assert not failures(rendered, "tracebacks")


def test_output_figures_have_captions(rendered):
    assert not failures(rendered, "uncaptioned"), "figures from code cells without a caption (cell metadata)"


def test_navigation_lists_the_table_of_contents_in_order(rendered):
    expected = ["/" + page for page in toc_pages()]
    for name, report in rendered.items():
        assert report["nav"] == expected, f"{name}: left navigation differs from _toc.yml"


def test_chapters_end_with_hidden_solutions(rendered):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        report = rendered[f"notebooks/{nb.stem}.html"]
        assert report["exercises"] and report["solutions"] > 0, f"{nb.name}: no exercises with solutions"
        assert report["solutions_shown"] == 0, f"{nb.name}: solutions visible before a click"


def test_executed_pages_show_their_figures(rendered):
    """A page built from an executed notebook shows each captioned cell's figure (the caption is on the right cell)."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        built = [c for c in json.loads((HTML / "_sources/notebooks" / nb.name).read_text())["cells"]
                 if c["cell_type"] == "code"]
        if not any(c["outputs"] for c in built):
            continue  # built without outputs
        images = [sum("image/png" in o.get("data", {}) for o in c["outputs"]) for c in built]
        for i, cell in enumerate(built):
            if "caption" in cell["metadata"].get("mystnb", {}).get("figure", {}):
                assert images[i], f"{nb.name}: code cell {i} has a figure caption but drew no figure"
        assert rendered[f"notebooks/{nb.stem}.html"]["output_images"] >= sum(images), nb.name
