"""Writing what was drawn: the offline HTML file, its default name, and PNGs via Chromium.

The PNG goes through ``bokeh.io.export_png`` with a headless Chromium started through the
system chromedriver, paths passed explicitly so Selenium never downloads a driver.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshperf.atomic import write_atomic
from meshperf.errors import ConfigError
from meshperf.graphing.names import fmt_number

if TYPE_CHECKING:
    from bokeh.models.ui.ui_element import UIElement
    from selenium.webdriver.remote.webdriver import WebDriver

# Chromium flags for exporting PNGs: headless, and no background traffic of any kind.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CHROMIUM_CANDIDATES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome")
DEBIAN_CHROMIUM = "/usr/bin/chromium"
DEBIAN_CHROMEDRIVER = "/usr/bin/chromedriver"


def write_html(layout: UIElement, path: Path, title: str) -> Path:
    """Self-contained HTML: BokehJS inlined so the report opens offline, written atomically."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    text = file_html(layout, resources=INLINE, title=title)
    try:
        # The project's one atomic writer; a chart is redrawn in place, as the 2019 script did.
        return write_atomic(path, text, overwrite=True)
    except OSError as e:  # read-only filesystem, a directory in the way, a full disk
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None


def find_chromium() -> tuple[str, str]:
    """Paths of a Chromium and its chromedriver, or ConfigError saying what is missing."""
    browser = next((w for c in CHROMIUM_CANDIDATES if (w := shutil.which(c))), None)
    if browser is None and os.access(DEBIAN_CHROMIUM, os.X_OK):
        browser = DEBIAN_CHROMIUM
    driver = shutil.which("chromedriver")
    if driver is None and os.access(DEBIAN_CHROMEDRIVER, os.X_OK):
        driver = DEBIAN_CHROMEDRIVER
    if browser is None or driver is None:
        missing = " and ".join(
            n for n, v in (("chromium", browser), ("chromedriver", driver)) if v is None
        )
        raise ConfigError(
            f"no headless browser for --png: {missing} not found",
            hint="install Debian's chromium and chromium-driver (or put them on PATH)",
        )
    return browser, driver


def start_chromium(
    browser: str | None = None,
    driver: str | None = None,
    *,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    capabilities: dict[str, Any] | None = None,
) -> WebDriver:
    """Headless Chromium through the given chromedriver; the caller must ``quit()`` it.

    Paths are passed explicitly so Selenium never tries to download a driver.
    """
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    if browser is None or driver is None:
        found_browser, found_driver = find_chromium()
        browser = browser or found_browser
        driver = driver or found_driver
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, *extra_args):
        options.add_argument(flag)
    for k, v in (capabilities or {}).items():
        options.set_capability(k, v)
    try:
        wd = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as e:
        first = (e.msg or str(e)).strip().splitlines()
        raise ConfigError(
            f"cannot start headless Chromium: {first[0] if first else type(e).__name__}"
        ) from None
    wd.set_page_load_timeout(timeout)
    wd.set_script_timeout(timeout)
    return wd


def export_png(layout: UIElement, path: Path, *, timeout: int = 30) -> Path:
    """Render ``layout`` to a PNG with headless Chromium (bokeh.io.export_png)."""
    from bokeh.io import export_png as bokeh_export_png
    from selenium.common.exceptions import WebDriverException

    wd = start_chromium(timeout=timeout)
    try:
        bokeh_export_png(layout, filename=path, webdriver=wd, timeout=timeout)
    except (WebDriverException, RuntimeError) as e:
        raise ConfigError(f"PNG export failed: {str(e).strip().splitlines()[0]}") from None
    except OSError as e:  # writing the PNG itself
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        wd.quit()
    return path


def default_output(
    csv: Path,
    metric: str,
    xaxis: str,
    qps: float | None,
    conn: int | None,
    proxy: str = "server",
    stat: str = "max",
) -> Path:
    """``<csv dir>/<csv stem>_<metric>[_<proxy>][_<stat>]_<xaxis>[_qps<n>|_conn<n>].html``.

    The proxy and statistic appear when they are not the defaults, so charts of different
    proxies of one CSV do not overwrite each other.
    """
    held = ""
    if qps is not None:
        held = f"_qps{fmt_number(qps)}"
    elif conn is not None:
        held = f"_conn{conn}"
    which = ""
    if metric in ("cpu", "mem"):
        which = ("" if proxy == "server" else f"_{proxy}") + ("" if stat == "max" else f"_{stat}")
    return csv.with_name(f"{csv.stem}_{metric}{which}_{xaxis}{held}.html")
