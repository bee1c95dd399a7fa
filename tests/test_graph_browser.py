"""graph.py's HTML and PNG checked in real headless Chromium (Debian chromium + chromedriver).

Each page is loaded from file:// with no network: it must render with no SEVERE console
entries, draw ink on its plot canvases, and carry one legend entry per expected series.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bokeh.io.export import wait_until_render_complete
from PIL import Image

import graph
from meshperf.errors import ConfigError, ExitCode
from meshperf.graphing import find_chromium, start_chromium
from needs import missing

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(120)]

DATA = Path(__file__).resolve().parent / "data" / "graph"

# Every canvas in the page, shadow roots included (BokehJS 3 renders inside them), with the
# number of pixels that are neither transparent nor near white.
_CANVAS_INK_JS = """
function canvases(root, acc) {
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS') acc.push(el);
    if (el.shadowRoot) canvases(el.shadowRoot, acc);
  }
  return acc;
}
return canvases(document, []).map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) ink++;
  }
  return {width: c.width, height: c.height, ink: ink};
});
"""

# Legend labels and plot titles, read from the live BokehJS document.
_MODELS_JS = """
const doc = Bokeh.documents[0];
const legends = [], titles = [];
for (const m of doc.all_models) {
  if (m.type === 'Legend') legends.push(m.items.map(i => i.label.value));
  if (m.type === 'Title' && m.text) titles.push(m.text);
}
return {legends: legends, titles: titles, version: Bokeh.version,
        fetched: performance.getEntriesByType('resource').map(e => e.name)};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        find_chromium()
    except ConfigError as e:
        missing(str(e))
    wd = start_chromium(capabilities={"goog:loggingPrefs": {"browser": "ALL"}})
    try:
        wd.set_window_size(1400, 1000)
        yield wd
    finally:
        wd.quit()


def render(browser: Any, html: Path) -> dict[str, Any]:
    browser.get(html.resolve().as_uri())
    wait_until_render_complete(browser, 30)
    assert browser.execute_script("return window._bokeh_render_complete === true")
    return {
        "log": browser.get_log("browser"),
        "canvases": browser.execute_script(_CANVAS_INK_JS),
        **browser.execute_script(_MODELS_JS),
    }


def make_html(tmp_path: Path, args: list[str], name: str,
              capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / name
    assert graph.main([*args, "--output", str(out)]) == ExitCode.OK
    capsys.readouterr()
    return out


def check_rendered(page: dict[str, Any], plots: int) -> None:
    severe = [e for e in page["log"] if e.get("level") == "SEVERE"]
    assert severe == []
    assert page["fetched"] == []  # BokehJS inline: the page loads nothing else
    # Each plot has a canvas the size of the figure; the glyphs, axes and legend are ink on it.
    drawn = [c for c in page["canvases"] if c["width"] >= 300 and c["ink"] > 2000]
    assert len(drawn) >= plots, page["canvases"]


def test_single_metric_page(browser: Any, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    html = make_html(tmp_path, [str(DATA / "meshperf.csv"), "p99"], "p99.html", capsys)
    page = render(browser, html)
    check_rendered(page, 1)
    assert page["legends"] == [["baseline", "serversidecar", "both"]]
    assert any("p99 latency vs connections at 1000 qps" in t for t in page["titles"])
    assert page["version"].startswith("3.")


def test_istio2019_all_page(browser: Any, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    html = make_html(tmp_path, [str(DATA / "istio2019.csv"), "all"], "all.html", capsys)
    page = render(browser, html)
    # p50, p90, p99, cpu, mem and three overhead plots (the CSV has no p999).
    check_rendered(page, 8)
    modes = ["baseline", "serversidecar", "both", "ingress", "nomixer_both"]
    assert page["legends"].count(modes) == 5
    assert page["legends"].count(modes[1:]) == 3  # overheads: every mode but baseline
    if os.environ.get("MESHPERF_SCREENSHOT_DIR"):
        # For looking at the page by eye: MESHPERF_SCREENSHOT_DIR=/tmp pytest -k all_page
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, height + 100)
        browser.save_screenshot(str(Path(os.environ["MESHPERF_SCREENSHOT_DIR"]) / "all.png"))
        browser.set_window_size(1400, 1000)


def test_istio_tools_and_two_meshes(browser: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    html = make_html(tmp_path, [str(DATA / "istio_tools.csv"), "cpu", "--qps", "1000"],
                     "cpu.html", capsys)
    page = render(browser, html)
    check_rendered(page, 1)
    assert page["legends"] == [["v2-sd-full-nullvm_baseline", "v2-sd-full-nullvm_serversidecar",
                                "v2-sd-full-nullvm_both"]]
    html = make_html(tmp_path, [str(DATA / "meshperf.csv"), str(DATA / "meshperf_linkerd.csv"),
                                "p50"], "two.html", capsys)
    page = render(browser, html)
    check_rendered(page, 1)
    assert page["legends"] == [["istio baseline", "istio serversidecar", "istio both",
                                "linkerd baseline", "linkerd both"]]


def test_png_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        find_chromium()
    except ConfigError as e:
        missing(str(e))
    csv = Path(shutil.copy(DATA / "meshperf_mixed_qps.csv", tmp_path / "run.csv"))
    assert graph.main([str(csv), "p90", "--qps", "1000", "--png"]) == ExitCode.OK
    out = capsys.readouterr().out.split()
    png = tmp_path / "run_p90_connections_qps1000.png"
    assert out == [str(png.with_suffix(".html")), str(png)]
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.width >= 700 and img.height >= 400
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    # Not a blank page: many colors (lines, antialiased text), a good share of them not white.
    assert colors is not None and len(colors) > 50
    ink = sum(n for n, (r, g, b) in colors if min(r, g, b) < 200)
    assert ink > 2000


def test_png_without_browser_is_one_line_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # An empty PATH and no Debian paths: nothing to start.
    monkeypatch.setenv("PATH", str(tmp_path))
    export = "meshperf.graphing.export"
    monkeypatch.setattr(f"{export}.DEBIAN_CHROMIUM", str(tmp_path / "chromium"))
    monkeypatch.setattr(f"{export}.DEBIAN_CHROMEDRIVER", str(tmp_path / "chromedriver"))
    csv = Path(shutil.copy(DATA / "meshperf.csv", tmp_path / "run.csv"))
    rc = graph.main([str(csv), "p50", "--png"])
    out, err = capsys.readouterr()
    assert rc == ExitCode.ERROR
    assert err.splitlines()[-1].startswith("graph.py: error: no headless browser for --png")
    # The HTML was written before the PNG was attempted, and is kept.
    assert (tmp_path / "run_p50_connections.html").is_file()
