"""`einvoice-monitor report --format html|png`: the boards' key views without Grafana (embedded mode)."""

from __future__ import annotations

import base64
import re

import pytest
from typer.testing import CliRunner

from streams.cli import app
from tests.filled import LAST_COMPLETE, FilledDeployment

PNG = b"\x89PNG\r\n\x1a\n"
CHARTS = {"adoption_by_unit", "adoption_by_sector", "sector_by_unit", "trend_adoption", "trend_invoices",
          "trend_non_cash"}  # fmt: skip


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
