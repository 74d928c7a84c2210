"""The course website (`make site`, scripts/build_site.py): built offline, then read by a crawler and by headless
Chromium, as a student's browser would.

The site is built from the notebooks the test run executes once (conftest.py: notebook 1 and notebook 2); the
other six are shown without outputs under a notice (`--allow-unexecuted`), as `make site` would before `make run`
has finished. The checks:

- every page the index links to renders, and each executed notebook page shows every figure its executed
  notebook holds (the <img> elements load in Chromium, with non-zero size);
- every link and image on every page of the site resolves (the crawler follows them all, anchors included, over
  HTTP from `python -m http.server`'s handler): no 404s, and no page asks for anything outside the site;
- the API pages exist, one per maelib module, and each notebook's "maelib API used" links land on documented
  objects;
- the index lists the course in order with its Colab and Binder badges.

Screenshots land in runs/browser/ (site_index.png, site_notebook.png, site_api.png).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
from test_browser import CHROMIUM_FLAGS, SCREENSHOTS, _chromium

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = {"01_patches_and_masking": "01@0.5", "02_building_the_mae": "02_alone"}


def _build_site_module():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _build_site_module()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request in the test's output
        pass


class _Links(HTMLParser):
    """The links (a href, link href) and resources (img/script src) of a page, and its element ids."""

    def __init__(self):
        super().__init__()
        self.links, self.resources, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])
        elif tag in ("img", "script", "source", "iframe") and attrs.get("src"):
            self.resources.append(attrs["src"])


@pytest.fixture(scope="module")
def site(executed_notebooks, tmp_path_factory):
    """The site built from the test run's executed notebooks, served on 127.0.0.1: (base URL, out dir)."""
    work = tmp_path_factory.mktemp("site")
    suite = work / "suite"
    for stem, key in EXECUTED.items():
        (suite / stem).mkdir(parents=True)
        shutil.copy(executed_notebooks[key], suite / stem / f"{stem}.ipynb")
    out = work / "site"
    assert build_site.main(["--suite", str(suite), "--out", str(out), "--allow-unexecuted"]) == 0
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", out
    finally:
        server.shutdown()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_the_build_refuses_without_executed_notebooks_and_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match=r"Run `make run` first"):
        build_site.main(["--suite", str(tmp_path / "nothing"), "--out", str(tmp_path / "site")])
    assert not (tmp_path / "site").exists()


def test_every_link_and_image_of_every_page_resolves(site):
    base, _ = site
    pages, queue, broken, outside, anchors = {}, [base + "index.html"], [], set(), []
    while queue:  # crawl every page the site links to
        url = queue.pop()
        if url in pages:
            continue
        try:
            body = _get(url)
        except urllib.error.HTTPError as err:
            broken.append(f"{url}: {err.code}")
            pages[url] = None
            continue
        parser = _Links()
        if url.endswith(".html"):
            parser.feed(body.decode("utf-8", errors="replace"))
        pages[url] = parser
        for ref in parser.links + parser.resources:
            target, fragment = urldefrag(urljoin(url, ref))
            if urlparse(target).scheme not in ("http", "https"):
                continue
            if not target.startswith(base):
                if ref in parser.resources:
                    outside.add(target)  # a resource a page loads from the internet: not offline
                continue
            if fragment and target.endswith(".html"):
                anchors.append((url, target, fragment))
            if target not in pages:
                queue.append(target)
    assert not broken, f"links that do not resolve: {broken[:20]}"
    assert not outside, f"pages load these from outside the site (they would fail offline): {sorted(outside)[:10]}"
    missing = [f"{page} -> {target}#{frag}" for page, target, frag in anchors
               if pages.get(target) is not None and frag not in pages[target].ids]
    assert not missing, f"links to anchors that do not exist: {missing[:20]}"
    html = [u for u in pages if u.endswith(".html")]
    for nb in NOTEBOOKS:
        assert f"{base}notebooks/{nb.stem}.html" in html, f"no page for {nb.name}"
    for module in build_site.api_modules():
        assert f"{base}api/{module}.html" in html, f"no API page for {module}"
    assert any("/_modules/maelib/" in u for u in html), "no source pages (viewcode)"


def test_the_index_is_the_course_in_order_with_its_badges(site):
    base, _ = site
    index = _get(base + "index.html").decode()
    positions = [index.find(f"notebooks/{nb.stem}.html") for nb in NOTEBOOKS]
    assert -1 not in positions and positions == sorted(positions), "the index does not list the course in order"
    for nb in NOTEBOOKS:
        assert f"colab.research.google.com/github/maelib/maelib/blob/main/notebooks/{nb.name}" in index
        assert f"mybinder.org/v2/gh/maelib/maelib/main?urlpath=lab/tree/notebooks/{nb.name}" in index
    assert "colab-badge.svg" in index and "binder-badge.svg" in index  # served by the site itself


def test_notebook_pages_render_with_their_figures_and_api_links_in_chromium(site, executed_notebooks):
    from playwright.sync_api import sync_playwright

    base, _ = site
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expected_figures = {}
    for stem, key in EXECUTED.items():
        nb = json.loads(Path(executed_notebooks[key]).read_text())
        expected_figures[stem] = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
        assert expected_figures[stem] > 0, f"the executed {stem} has no figures to show"
    failed = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else route.abort())  # offline: nothing outside the site may be needed
            page.goto(base + "index.html")
            assert "a course on Masked Autoencoders" in page.title()
            page.screenshot(path=str(SCREENSHOTS / "site_index.png"))
            for nb in NOTEBOOKS:
                page.goto(f"{base}notebooks/{nb.stem}.html")
                page.wait_for_load_state("load")
                main = page.locator("main")
                assert main.locator("h1 >> visible=true").count() == 1, f"{nb.stem}: no title rendered"
                images = page.evaluate("""() => Array.from(document.querySelectorAll('main .cell_output img'))
                    .map(i => ({ok: i.complete && i.naturalWidth > 0, src: i.src.slice(0, 60)}))""")
                if nb.stem in EXECUTED:
                    assert len(images) == expected_figures[nb.stem], (nb.stem, len(images), expected_figures[nb.stem])
                    assert all(i["ok"] for i in images), f"{nb.stem}: figures that did not load: {images}"
                    assert page.locator(".cell_output").count() > 5
                else:
                    assert "without its outputs" in main.inner_text(), f"{nb.stem}: no notice that it is not executed"
                api = main.locator("section#maelib-api-used-in-this-notebook a.reference.internal")
                assert api.count() >= 3, f"{nb.stem}: too few links to the API pages ({api.count()})"
                for href in api.evaluate_all("els => els.map(e => e.href)"):
                    assert "/api/maelib" in href and "#" in href, (nb.stem, href)
                unresolved = main.locator("section#maelib-api-used-in-this-notebook .xref").evaluate_all(
                    "els => els.filter(e => !e.closest('a')).map(e => e.textContent)")
                assert not unresolved, f"{nb.stem}: API names without a page to link to: {unresolved}"
            page.goto(f"{base}notebooks/02_building_the_mae.html")
            page.screenshot(path=str(SCREENSHOTS / "site_notebook.png"))
            page.goto(f"{base}api/maelib.analysis.viz.html#maelib.analysis.viz.show_reconstruction")
            assert page.locator("[id='maelib.analysis.viz.show_reconstruction']").is_visible()
            assert "Rows = images" in page.locator("main").inner_text()  # the docstring, as written
            page.screenshot(path=str(SCREENSHOTS / "site_api.png"))
        finally:
            browser.close()
    assert not failed, f"responses with errors: {failed[:10]}"
