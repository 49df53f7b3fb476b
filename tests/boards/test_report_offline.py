"""`einvoice-monitor report --format html|png`: the boards' key views without Grafana (embedded mode)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright
from typer.testing import CliRunner

from boards.offline import AMBER, BLUE, GREEN, RED
from cli.main import app
from tests.filled import LAST_COMPLETE, FilledDeployment

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage

PNG = b"\x89PNG\r\n\x1a\n"
CHARTS = {"adoption_by_unit", "adoption_by_sector", "sector_by_unit", "trend_adoption", "trend_invoices",
          "trend_non_cash"}  # fmt: skip
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`make chromium`), not a browser playwright downloads
# spelled out even where playwright passes them too, so the flags do not hang on its defaults
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip
WINDOW = {"width": 1280, "height": 900}
FONT = "DejaVu Sans"  # the page's first choice; fontconfig-config pulls fonts-dejavu-core in with Chromium


def run(filled: FilledDeployment, *args: str) -> str:
    env = {k: v for k, v in filled.settings.to_env().items()}
    result = CliRunner().invoke(app, ["report", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_html_report_is_one_self_contained_page_in_vietnamese(filled_deployment, tmp_path):
    out = tmp_path / "report.html"
    printed = run(filled_deployment, "--format", "html", "--from", "2024-06-03", "--to", LAST_COMPLETE.isoformat(),
                  "--out", str(out))  # fmt: skip
    assert printed == str(out)
    page = out.read_text(encoding="utf-8")
    assert "<html lang='vi'>" in page and "Báo cáo áp dụng hóa đơn điện tử từ máy tính tiền" in page
    assert "Tỷ lệ áp dụng theo đơn vị" in page and "Thành phố Thanh Hóa" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(CHARTS)
    assert all(base64.b64decode(image).startswith(PNG) for image in images)
    assert "src='http" not in page and "<script" not in page  # nothing fetched when opened
    # the alerts and the silent filling station are in it
    assert "adoption_drop" in page and filled_deployment.silent_seller in page


def test_png_report_writes_one_image_per_chart_and_english_with_lang_en(filled_deployment, tmp_path):
    printed = run(filled_deployment, "--format", "png", "--lang", "en", "--out", str(tmp_path / "png"))
    files = {p.stem: p for p in (tmp_path / "png").glob("*.png")}
    assert printed == str(tmp_path / "png") and set(files) == CHARTS
    for path in files.values():
        header = path.read_bytes()[:24]
        assert header.startswith(PNG)
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
        assert width >= 800 and height >= 300, (path.name, width, height)
    html = tmp_path / "en.html"
    run(filled_deployment, "--format", "html", "--lang", "en", "--out", str(html))
    assert "Adoption rate by unit" in html.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "pdf"], "--format must be table, json, html or png"),
    (["--format", "html", "--lang", "fr"], "--lang must be vi or en"),
    (["--format", "html", "--from", "2024-06-20", "--to", "2024-06-10"], "ends (2024-06-10) before it starts"),
])  # fmt: skip
def test_bad_report_options_say_what_to_do(filled_deployment, args, message):
    result = CliRunner().invoke(app, ["report", *args], env=filled_deployment.settings.to_env())
    assert result.exit_code == 2
    assert message in result.output


@dataclass
class Opened:
    """What Chromium made of a page: its images, what went wrong while loading it, the fonts its text used."""

    url: str
    images: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text_elements: int = 0
    odd_fonts: dict[str, list[str]] = field(default_factory=dict)  # element -> families, when not FONT alone
    wider_than_window: bool = False

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def problems(self, charts: int) -> list[str]:
        """Everything a reader would notice, as sentences; empty when the page is fine."""
        found = [] if len(self.images) == charts else [f"{len(self.images)} images, expected {charts} charts"]
        found += [f"image {i['alt'] or i['src']} did not load: {i}" for i in self.images
                  if not (i["complete"] and i["naturalWidth"] > 0 and i["shownWidth"] > 0)]  # fmt: skip
        found += [f"console {message}" for message in self.console]
        found += [f"page error {error}" for error in self.page_errors]
        found += [f"request failed {request}" for request in self.failed_requests]
        found += [f"fetched {url}" for url in self.requests if url != self.url and not url.startswith("data:")]
        found += [f"{element} drawn with {families}, not {FONT} alone: glyphs missing?"
                  for element, families in self.odd_fonts.items()]  # fmt: skip
        return found + (["the page is wider than the window: something is cut off"] if self.wider_than_window else [])


def open_in_chromium(page_file: Path, screenshot: Path | None = None) -> Opened:
    """Open a page from disk (file://, as a mailed or archived report is opened), in a browser of its own."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (Debian's chromium package) to install it")
    opened = Opened(page_file.resolve().as_uri())
    with sync_playwright() as playwright:
        # launch() gives each browser a fresh throwaway --user-data-dir (it refuses one in args)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport=WINDOW)
            page.on("console", opened.on_console)
            page.on("pageerror", lambda error: opened.page_errors.append(str(error)))
            page.on("requestfailed", lambda r: opened.failed_requests.append(f"{r.url[:120]}: {r.failure}"))
            page.on("request", lambda request: opened.requests.append(request.url[:120]))
            page.goto(opened.url, wait_until="load")  # the load event waits for every image
            opened.images = page.evaluate(
                """Array.from(document.images, i => ({alt: i.alt, src: i.src.slice(0, 60), complete: i.complete,
                    naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                    shownWidth: i.getBoundingClientRect().width}))"""
            )
            opened.wider_than_window = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
            cdp = page.context.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument")["root"]["nodeId"]
            for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "h1, h2, p, th, td"})["nodeIds"]:
                # a glyph the first font lacks is drawn with a fallback font, which then shows up here
                families = sorted(
                    {f["familyName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]}
                )
                if families and families != [FONT]:  # empty cells draw nothing
                    opened.odd_fonts[cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"][:80]] = families
                opened.text_elements += 1
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return opened


def _colour_shares(shot: Image.Image, colours: list[str]) -> dict[str, float]:
    """The share of the screenshot's pixels in each of the charts' colours (exactly: bars and lines are flat)."""
    pixels = shot.width * shot.height
    counts = {rgb: n for n, rgb in shot.getcolors(maxcolors=pixels)}
    return {c: counts.get(tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)), 0) / pixels for c in colours}


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_html_report_opens_in_chromium_with_every_chart_and_nothing_in_the_console(filled_deployment, tmp_path, lang):
    """Chromium as the reader's browser, from file:// as a mailed report is opened: no server can hide a bad URL."""
    out = tmp_path / f"report-{lang}.html"
    period = ["--from", "2024-06-03", "--to", LAST_COMPLETE.isoformat()]
    run(filled_deployment, "--format", "html", "--lang", lang, *period, "--out", str(out))
    page = out.read_text(encoding="utf-8")
    inline = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(inline) == len(CHARTS)
    opened = open_in_chromium(out, tmp_path / f"screenshot-{lang}.png")
    assert opened.problems(len(CHARTS)) == []
    assert opened.text_elements > 50  # the fonts were looked at: headings, totals, alerts, dormant sellers
    # the browser decoded the whole image: the same size as the PNG, which PIL reads to the end
    for image, data in zip(opened.images, inline, strict=True):
        png = Image.open(io.BytesIO(base64.b64decode(data)))
        png.load()
        assert (image["naturalWidth"], image["naturalHeight"]) == png.size, image["alt"]

    shot = Image.open(tmp_path / f"screenshot-{lang}.png").convert("RGB")
    assert shot.width == WINDOW["width"] and shot.height > 3 * WINDOW["height"], shot.size  # the whole page
    assert len(shot.getcolors(maxcolors=shot.width * shot.height)) > 1000  # text, tables and charts, not one colour
    shares = _colour_shares(shot, [RED, AMBER, GREEN, BLUE])
    assert all(share > 0.0001 for share in shares.values()), shares  # the charts are on screen, not just in the DOM


def test_the_browser_check_reports_a_broken_chart_and_a_failing_page(filled_deployment, tmp_path):
    """The check above can fail: a copy with one chart's PNG corrupted, a script error, a missing file."""
    out = tmp_path / "report.html"
    run(filled_deployment, "--format", "html", "--lang", "en", "--out", str(out))
    page = out.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.replace("src='data:image/png;base64,iVBOR", "src='data:image/png;base64,AAAAA", 1).replace(
            "</body>",
            "<script>console.warn('odd'); undefinedFunction();</script><img alt='gone' src='gone.png'>"
            "<p style='font-family:\"DejaVu Serif\"'>Thanh Hóa</p></body>",
        ),
        encoding="utf-8",
    )
    problems = "\n".join(open_in_chromium(broken).problems(len(CHARTS)))
    assert f"{len(CHARTS) + 1} images, expected {len(CHARTS)} charts" in problems
    assert "image adoption_by_unit did not load" in problems and "image gone did not load" in problems
    assert "console warning: odd" in problems and "page error" in problems and "undefinedFunction" in problems
    assert "request failed file://" in problems and "gone.png: net::ERR_FILE_NOT_FOUND" in problems
    assert "fetched file://" in problems
    assert "drawn with ['DejaVu Serif'], not DejaVu Sans alone" in problems
