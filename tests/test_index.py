"""results/index.html, rendered by a real browser: headless Chromium (Debian's `chromium`, which
.ci/run installs) loads the page from the disk, every image must load, the tables must show,
and the screenshot must not be blank (slow)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--virtual-time-budget=5000"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "no chromium on PATH: install Debian's chromium package (.ci/run does)"
    return found


def test_the_results_page_renders_with_every_image(smoke_run: dict, tmp_path: Path) -> None:
    page = smoke_run["base"] / "results" / "index.html"
    assert page.is_file()
    browser = _chromium()
    common = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-images="4 images, 0 broken"' in dom, dom[:2000]
    assert dom.count('data-loaded="yes"') == 4 and 'data-loaded="no"' not in dom
    assert "batch_epoch-smoke" in dom and "<th>batch_size</th>" in dom
    assert "track accuracy" in dom and '<tr class="best">' in dom
    shot = tmp_path / "page.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    assert pixels[..., :3].std() > 0.05  # not one flat colour: text, tables and plots drawn
