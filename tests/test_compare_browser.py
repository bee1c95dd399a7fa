"""compare.py --html checked in real headless Chromium: one plot per metric, a point and an
interval per test, colored by verdict, nothing fetched from the network."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bokeh.io.export import wait_until_render_complete

import fortio_data
from test_compare import cli
from test_graph_browser import (
    _CANVAS_INK_JS,
    browser,  # noqa: F401  (the one headless-Chromium fixture)
)

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(120)]

# Per plot (a figure named compare-<metric>): its test names and the data behind the glyphs.
_PLOTS_JS = """
const doc = Bokeh.documents[0];
const out = {};
for (const m of doc.all_models) {
  if (m.type === 'Figure' || m.type === 'Plot') {
    if (!m.name || !m.name.startsWith('compare-')) continue;
    const r = m.renderers.find(x => x.data_source && x.data_source.data.verdict);
    const d = r.data_source.data;
    out[m.name] = {factors: m.y_range.factors, verdict: Array.from(d.verdict),
                   lo: Array.from(d.lo), hi: Array.from(d.hi), change: Array.from(d.change),
                   color: Array.from(d.color)};
  }
}
return {plots: out, fetched: performance.getEntriesByType('resource').map(e => e.name)};
"""


def _side(tmp_path: Path, name: str, scale: dict[str, float]) -> Path:
    rng = np.random.default_rng(len(name))
    for i, (mode, med) in enumerate(scale.items()):
        suffix = {"baseline": "base", "serversidecar": "serveronly"}.get(mode, mode)
        lat = [float(v) for v in rng.lognormal(math.log(med), 0.3, 3000)]
        start = fortio_data.START + dt.timedelta(minutes=i)
        label = f"{name}_qps_1000_c_8_1024_{suffix}"
        doc = fortio_data.http_result(lat, labels=label, duration_s=3.0, start=start)
        fortio_data.write(tmp_path / name, doc)
    return tmp_path / name


def test_html_shows_each_change_with_its_interval(
    browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    base = _side(tmp_path, "aaaa", {"baseline": 0.0001, "serversidecar": 0.0004, "both": 0.0006})
    new = _side(tmp_path, "bbbbbb", {"baseline": 0.0001, "serversidecar": 0.0003, "both": 0.0009})
    html = tmp_path / "cmp.html"
    assert cli.main([str(base), str(new), "--html", str(html), "--metrics", "p50,p99"]) == 0
    capsys.readouterr()
    browser.get(html.resolve().as_uri())
    wait_until_render_complete(browser, 30)
    assert [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"] == []
    got = browser.execute_script(_PLOTS_JS)
    assert got["fetched"] == []
    assert sorted(got["plots"]) == ["compare-p50", "compare-p99"]
    p50 = got["plots"]["compare-p50"]
    # Top to bottom in the order compared: the factor list is reversed for Bokeh's y axis.
    assert [f.split()[0] for f in reversed(p50["factors"])] == ["baseline", "serversidecar", "both"]
    verdicts = dict(zip([f.split()[0] for f in reversed(p50["factors"])], p50["verdict"],
                        strict=True))  # fmt: skip
    assert verdicts["serversidecar"] == "improved" and verdicts["both"] == "regressed"
    for lo, change, hi in zip(p50["lo"], p50["change"], p50["hi"], strict=True):
        assert lo <= change <= hi
    assert len(set(p50["color"])) >= 2
    drawn = [c for c in browser.execute_script(_CANVAS_INK_JS) if c["ink"] > 500]
    assert len(drawn) >= 2
