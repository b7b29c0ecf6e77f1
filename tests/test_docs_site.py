"""The documentation site (mkdocs.yml): built in strict mode, its API reference complete, opened in Chromium.

Strict mode turns every warning into a failure: a broken link or anchor, a page left out of the navigation, a
reference mkdocstrings cannot resolve, a docstring naming a parameter the function does not have. The other
direction — every parameter of every function on the API pages has its line in the docstring — is checked here.
"""

import ast
import dataclasses
import enum
import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import griffe
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


def references():
    """(identifier, members option) of every ``::: identifier`` block of the API pages."""
    for page in API_PAGES:
        for match in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", page.read_text(), re.M):
            options = (yaml.safe_load(textwrap.dedent(match.group(2))) or {}).get("options", {})
            yield match.group(1), options.get("members")


def resolve(identifier: str):
    module, name = identifier.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def documented(obj, kinds=("parameters", "other parameters")) -> set[str]:
    """The names a Google-style docstring's sections of these kinds list (as mkdocstrings reads them)."""
    sections = griffe.Docstring(inspect.getdoc(obj) or "", parser="google").parse(warn_missing_types=False)
    return {item.name.lstrip("*") for s in sections if s.kind.value in kinds for item in s.value}


def needed(function) -> list[str]:
    """The parameters a caller gives (not self or cls, not *args)."""
    skip = (inspect.Parameter.VAR_POSITIONAL,)
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.name not in ("self", "cls") and p.kind not in skip
    ]


def api_entries():
    """(name, object, what must be documented, what is) for every function, method and class on the API pages."""
    for identifier, members in references():
        obj = resolve(identifier)
        if not inspect.isclass(obj):
            yield identifier, obj, needed(obj), documented(obj)
            continue
        if issubclass(obj, enum.Enum):
            pass  # its members are its documentation
        elif dataclasses.is_dataclass(obj):
            yield identifier, obj, [f.name for f in dataclasses.fields(obj)], documented(obj, ("attributes",))
        elif "__init__" in vars(obj):
            yield identifier, obj, needed(obj.__init__), documented(obj)
        if members is False:
            continue
        names = members or [m for m, v in vars(obj).items() if not m.startswith("_") and inspect.isfunction(v)]
        for name in names:
            member = inspect.getattr_static(obj, name)
            if inspect.isfunction(member):
                yield f"{identifier}.{name}", member, needed(member), documented(member)


ENTRIES = list(api_entries())


def test_the_api_pages_cover_the_public_api():
    import gradfit
    import gradfit.plots

    on_pages = {identifier for identifier, _ in references()} | {"gradfit.demo"}  # as gradfit.demo.demo: the
    assert "gradfit.demo.demo" in on_pages  # module gradfit.demo and its function share the name
    public = {f"gradfit.{n}" for n in gradfit.__all__ if n not in ("LIBRARY", "METHODS")}
    assert public - on_pages == set()
    assert {"gradfit.plots.plot_fit", "gradfit.dask.fit_many"} <= on_pages
    assert len(ENTRIES) > 60


@pytest.mark.parametrize("name, obj, needs, has", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_every_public_function_documents_each_of_its_parameters(name, obj, needs, has):
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"
    missing = [p for p in needs if p not in has]
    assert missing == [], f"{name}'s docstring does not describe {missing}"


def test_the_package_s_lazy_names_and_its_type_checking_imports_agree():
    """gradfit's names are imported when first used (_WHERE); griffe and type checkers read the TYPE_CHECKING
    imports instead: the two must name the same objects."""
    import gradfit

    tree = ast.parse((ROOT / "src" / "gradfit" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {
        alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert set(imported) == set(gradfit._WHERE)  # noqa: SLF001 - the lazy imports' table is what is checked
    for name, module in imported.items():
        assert getattr(importlib.import_module(f"gradfit.{module}"), name) is getattr(gradfit, name), name


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as `make docs` builds it, in strict mode."""
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    return out


def test_the_site_holds_the_guide_the_pages_the_notebook_and_the_reference(site):
    index = (site / "index.html").read_text()
    assert "gradfit demo" in index and 'href="fitting.html' in index  # the README, its links into docs/ made local
    for page in ("fitting.html", "models.html", "playground.html", "teaching.html", "from-lmfit.html"):
        assert (site / page).exists(), page
    notebook = (site / "tutorial.html").read_text()
    assert "120.45" in notebook  # the article's first RMSE, among the kept outputs
    api = (site / "api" / "fit.html").read_text()
    assert 'id="gradfit.fit"' in api and "learning_rate" in api and "absolute_sigma" in api
    assert "fonts.googleapis" not in index  # read offline: no web fonts


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_the_site_opens_in_the_browser_offline_with_the_api_page_of_fit(browser, served):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(served + "index.html")
        assert page.title().startswith("gradfit")
        assert "gradfit" in page.locator("article h1").first.text_content()
        page.get_by_role("link", name="gradfit.fit and friends").first.click()
        page.wait_for_url("**/api/fit.html")
        heading = page.locator('[id="gradfit.fit"]')
        assert heading.count() == 1 and "gradfit.fit" in heading.text_content()
        # the function's documentation: its heading's block (signature, text, parameters, returns)
        text = page.locator('div.doc-function:has(> [id="gradfit.fit"])').text_content()
        for name in ("model", "learning_rate", "sigma", "bounds", "callback"):
            assert re.search(rf"\b{name}\b", text), name
        assert "Returns" in text and "FitResult" in text
        assert page.locator("table:has-text('learning_rate')").count() >= 1  # the parameters, as a table
        if os.environ.get("GRADFIT_SHOTS"):
            page.screenshot(path=str(Path(os.environ["GRADFIT_SHOTS"]) / "site-api-fit.png"))
        assert problems == []
        assert all(u.startswith(served) or u.startswith("data:") for u in requests), requests  # nothing leaves
    finally:
        page.close()
