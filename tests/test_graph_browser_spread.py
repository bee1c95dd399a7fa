"""The spread of repeats and plain fortio series, drawn in real headless Chromium.

Uses the page checks of test_graph_browser (no SEVERE console entries, ink on every plot,
nothing fetched); the CSVs are written here by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from test_graph_browser import browser, check_rendered, make_html, render

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(120)]
__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_graph_browser

# The spread bars' data and the glyph types, read from the live BokehJS document.
_SPREAD_JS = """
const doc = Bokeh.documents[0];
const out = {glyphs: [], spread: []};
for (const m of doc.all_models) {
  if (m.type === 'GlyphRenderer') out.glyphs.push(m.glyph.type);
  if (m.type === 'ColumnDataSource' && m.name && m.name.endsWith(' spread')) {
    const d = m.data;
    const get = k => Array.from(d instanceof Map ? d.get(k) : d[k]);
    out.spread.push({name: m.name, x: get('x'), lo: get('lo'), hi: get('hi')});
  }
}
return out;
"""

HEADER = "Labels,mode,mesh,platform,conn,RequestedQPS,ActualQPS,size,p50,p90,p99,p999"


def test_repeats_are_drawn_with_their_min_max_bar(browser: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        "r1_qps_1000_c_4_1024_base,baseline,envoy,local,4,1000,1000,1024,70,90,150,300",
        "r2_qps_1000_c_4_1024_base,baseline,envoy,local,4,1000,1000,1024,80,100,250,400",
        "r1_qps_1000_c_16_1024_base,baseline,envoy,local,16,1000,1000,1024,75,95,160,320",
        "r1_qps_1000_c_4_1024_both,both,envoy,local,4,1000,1000,1024,480,520,700,900",
        "r2_qps_1000_c_4_1024_both,both,envoy,local,4,1000,1000,1024,500,540,900,1100",
        "r1_qps_1000_c_16_1024_both,both,envoy,local,16,1000,1000,1024,530,560,800,1000",
    ]
    csv = tmp_path / "rep.csv"
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    page_html = make_html(tmp_path, [str(csv), "p99"], "p99.html", capsys)
    page = render(browser, page_html)
    check_rendered(page, 1)
    assert page["legends"] == [["baseline", "both"]]
    assert "envoy on local: p99 latency vs connections at 1000 qps" in page["titles"]
    drawn = browser.execute_script(_SPREAD_JS)
    assert drawn["glyphs"].count("Segment") == 2
    assert sorted(drawn["spread"], key=lambda d: d["name"]) == [
        {"name": "baseline spread", "x": [4], "lo": [0.15], "hi": [0.25]},
        {"name": "both spread", "x": [4], "lo": [0.7], "hi": [0.9]},
    ]
    # The all page draws a bar in the overhead view too (there: the overhead's interval, which
    # meshperf.compare computes), around p99's added 0.8 - 0.2 = 0.6 ms at 4 connections.
    all_html = make_html(tmp_path, [str(csv), "all"], "all.html", capsys)
    page = render(browser, all_html)
    check_rendered(page, 8)  # four percentiles, four overheads
    both = [(d["lo"][0], d["hi"][0]) for d in browser.execute_script(_SPREAD_JS)["spread"]
            if d["name"] == "both spread"]
    assert (0.7, 0.9) in [pytest.approx(b) for b in both]  # the p99 chart's min..max
    assert any(lo < 0.6 - 1e-9 and hi > 0.6 + 1e-9 and (lo, hi) != pytest.approx((0.5, 0.7))
               for lo, hi in both), both


def test_plain_fortio_series_page(browser: Any, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    rows = [f"{setup},,,,{c},1000,1000,,{p},{p},{2 * p},{3 * p}"
            for setup, base in (("direct", 500), ("envoy", 800)) for c, p in ((1, base),
                                                                               (8, base + 90))]
    csv = tmp_path / "plain.csv"
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    html = make_html(tmp_path, [str(csv), "all", "--baseline-series", "direct"], "all.html",
                     capsys)
    page = render(browser, html)
    # p50, p90, p99, p999 and four overhead plots (no CPU/memory columns).
    check_rendered(page, 8)
    assert page["legends"].count(["direct", "envoy"]) == 4
    assert page["legends"].count(["envoy"]) == 4
    assert not any("istio" in t for t in page["titles"])
