"""Build the docs and open them in a real headless browser (Chromium).

Builds the site with `mkdocs build --strict`, serves it on 127.0.0.1 (no network
needed: MathJax is vendored in docs/_static/mathjax), and for each page

- takes a screenshot (`<name>.png`), and
- dumps the DOM after the scripts have run (`<name>.html`) and counts the formulas
  that MathJax typeset (`<mjx-container>` elements) and the ones it failed on
  (`<mjx-merror>`).

    .venv/bin/python scripts/screenshot_docs.py [--out DIR] [--site DIR]
        [--pages index.html concepts/sde/index.html ...]

Prints one line per page and exits non-zero if a page has no typeset maths where the
source has some, or any formula failed. Needs `chromium` (Debian: `apt-get install
chromium`) or `chromium-browser` / `google-chrome` on the PATH.
"""

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAGES = (
    "index.html",
    "concepts/sde/index.html",
    "concepts/likelihood/index.html",
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def build_site(site: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _chromium(browser: str, *args: str, timeout: float = 120.0) -> str:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",  # let MathJax finish typesetting
        *args,
    ]
    with tempfile.TemporaryDirectory() as profile:
        cmd.insert(1, f"--user-data-dir={profile}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{browser} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout


def check_page(browser: str, url: str, source_html: str, out: Path, name: str) -> dict:
    png = out / f"{name}.png"
    _chromium(browser, f"--screenshot={png}", "--window-size=1280,2000", url)
    dom = _chromium(browser, "--dump-dom", "--window-size=1280,2000", url)
    (out / f"{name}.html").write_text(dom)
    return {
        "name": name,
        "png": png,
        "png_bytes": png.stat().st_size if png.exists() else 0,
        "maths_in_source": source_html.count('class="arithmatex"'),
        "typeset": len(re.findall(r"<mjx-container", dom)),
        "errors": len(re.findall(r"<mjx-merror", dom)),
        "images": len(re.findall(r"<img\b", dom)),
    }


def run(
    out: Path, site: Path | None = None, pages=DEFAULT_PAGES, *, build: bool = True
) -> list[dict]:
    """Render `pages` of the site (built into `site`, or a temporary folder, unless
    `build=False` and `site` already holds a build); one result dict per page."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium / chrome on the PATH")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(site) if site is not None else Path(tmp) / "site"
        if build or not (site / "index.html").is_file():
            build_site(site)
        server, base = serve(site)
        try:
            results = []
            for page in pages:
                name = page.removesuffix("index.html").strip("/").replace("/", "_")
                source = (site / page).read_text()
                results.append(
                    check_page(browser, base + page, source, out, name or "home")
                )
        finally:
            server.shutdown()
            server.server_close()
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/sdegen-screenshots"))
    p.add_argument("--site", type=Path, default=None, help="build the site here")
    p.add_argument("--pages", nargs="+", default=list(DEFAULT_PAGES))
    args = p.parse_args(argv)
    results = run(args.out, args.site, args.pages)
    ok = True
    for r in results:
        bad = (r["maths_in_source"] > 0 and r["typeset"] == 0) or r["errors"] > 0
        ok &= not bad
        print(
            f"{'FAIL' if bad else 'ok  '} {r['name']}: {r['png']} ({r['png_bytes']} B), "
            f"{r['typeset']} formulas typeset of {r['maths_in_source']} in the source, "
            f"{r['errors']} errors, {r['images']} images"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
