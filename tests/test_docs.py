"""The documentation site: every public name on an API page, every `:::` reference
real, the solver table and the examples gallery in sync with the code, and the built
HTML carrying its maths and figures (plus, when Chromium is installed, a real
headless-browser render with MathJax)."""

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import sdegen


ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
MAX_FIGURE_BYTES = 200 * 1024


def _public_names(module, prefix):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(module, n)
        if isinstance(obj, types.ModuleType):
            continue
        # `sdegen.metrics` imports typing helpers (Array, Float, ...); keep only what
        # sdegen itself defines there.
        owner = getattr(obj, "__module__", None)
        if module is sdegen.metrics and (
            owner is None or not owner.startswith("sdegen")
        ):
            continue
        out.append(f"{prefix}.{n}")
    return out


def public_names():
    return (
        _public_names(sdegen, "sdegen")
        + _public_names(sdegen.nn, "sdegen.nn")
        + _public_names(sdegen.data, "sdegen.data")
        + _public_names(sdegen.metrics, "sdegen.metrics")
    )


def _api_references():
    refs = {}
    for page in API_PAGES:
        for m in re.finditer(r"^\s*::: ([\w.]+)\s*$", page.read_text(), re.M):
            refs.setdefault(m.group(1), page.name)
    return refs


def _resolve(path):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_public_names_found():
    names = public_names()
    # The core of DESIGN.md's public API is present, so the test below is not vacuous.
    for n in [
        "sdegen.VPSDE",
        "sdegen.sample_sde",
        "sdegen.nn.MLP",
        "sdegen.metrics.mmd",
    ]:
        assert n in names


def test_every_public_name_on_an_api_page():
    refs = _api_references()
    missing = [n for n in public_names() if n not in refs]
    assert not missing, (
        "public names with no `::: NAME` on any docs/api/*.md page: "
        + ", ".join(missing)
    )


def test_every_api_reference_resolves():
    bad = []
    for ref, page in _api_references().items():
        try:
            _resolve(ref)
        except (ImportError, AttributeError):
            bad.append(f"{ref} ({page})")
    assert not bad, "`:::` references to names that do not exist: " + ", ".join(bad)


def test_api_pages_in_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in API_PAGES:
        assert f"api/{page.name}" in nav, (
            f"docs/api/{page.name} is not in mkdocs.yml nav"
        )


def test_solver_table_matches_code():
    text = (DOCS / "howto" / "solvers.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| `(\w+)` \| `(\w+)` \| (yes|no) \| (yes|no) \| ([^|]+) \| (yes|no) \|",
                         text, re.M):  # fmt: skip
        rows[m.group(1)] = m.groups()[1:]
    assert set(rows) == set(sdegen.SOLVERS), (
        f"docs table names {sorted(rows)} != sdegen.SOLVERS {sorted(sdegen.SOLVERS)}"
    )
    yes = lambda b: "yes" if b else "no"
    for name, info in sdegen.SOLVERS.items():
        cls, sde, ode, order, adaptive = rows[name]
        assert cls == type(info.make()).__name__, name
        assert (sde, ode, adaptive) == (
            yes(info.sde),
            yes(info.ode),
            yes(info.adaptive),
        ), name
        assert order.strip() == info.order, name


def _gallery_sections():
    text = (DOCS / "examples.md").read_text()
    return set(re.findall(r"^##+ .*`examples/([\w\-]+\.py)`", text, re.M))


def test_examples_gallery_in_sync():
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    sections = _gallery_sections()
    assert not scripts - sections, (
        f"examples without a gallery section: {scripts - sections}"
    )
    assert not sections - scripts, (
        f"gallery sections without a script: {sections - scripts}"
    )


def test_figures_small_and_referenced_images_exist():
    figures = sorted((DOCS / "_static" / "figures").glob("*.png"))
    assert figures
    for f in figures:
        assert f.stat().st_size < MAX_FIGURE_BYTES, f"{f.name} is {f.stat().st_size} B"
    for page in DOCS.rglob("*.md"):
        for src in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text()):
            assert (page.parent / src).resolve().is_file(), (
                f"{page}: missing image {src}"
            )


def test_mathjax_vendored():
    config = (ROOT / "mkdocs.yml").read_text()
    scripts = re.findall(r"^\s*- (\S+\.js)", config, re.M)
    assert scripts
    for s in scripts:
        assert not s.startswith("http"), f"{s}: the site must build and render offline"
        assert (DOCS / s).is_file(), s
    fonts = DOCS / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert any(fonts.glob("*.woff")), "MathJax's CHTML fonts are missing"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize(
    "page", ["concepts/sde", "concepts/likelihood", "concepts/langevin"]
)
def test_built_concept_page_has_maths_and_figures(site, page):
    html_path = site / page / "index.html"
    html = html_path.read_text()
    assert len(re.findall(r'class="arithmatex"', html)) >= 5
    assert "\\(" in html and "\\[" in html  # inline and display maths for MathJax
    imgs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    assert any("figures/" in s for s in imgs), imgs
    for src in imgs:
        if src.startswith(("http:", "https:", "data:")):
            continue
        assert (html_path.parent / src).resolve().is_file(), (
            f"{page}: broken image {src}"
        )
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
    assert any("mathjax/tex-mml-chtml.js" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith("http")], scripts


def test_built_api_pages_list_public_names(site):
    html = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    missing = [n for n in public_names() if f'id="{n}"' not in html]
    assert not missing, f"public names with no rendered entry: {missing}"


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="Chromium is not installed (apt-get install chromium); it is not part of "
    "`make test`'s install",
)
def test_headless_browser_renders_maths(tmp_path, site):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import screenshot_docs
    finally:
        sys.path.pop(0)
    results = screenshot_docs.run(tmp_path, site=site, build=False)
    by_name = {r["name"]: r for r in results}
    assert {"home", "concepts_sde"} <= set(by_name)
    for r in results:
        assert r["png_bytes"] > 20_000, r  # a real render, not a blank page
        assert r["errors"] == 0, r
        assert r["images"] >= 1, r
    assert (
        by_name["concepts_sde"]["typeset"]
        >= by_name["concepts_sde"]["maths_in_source"]
        > 0
    )
