"""Open the HTML reports in headless Chromium: the pages load and every image decodes.

Opt-in (``python -m pytest -m slow tests/test_report_browser.py``); skipped where no Chromium is
installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import TINY as SMOKE_TWO_REPETITIONS

TINY = [*SMOKE_TWO_REPETITIONS, "report.figures=true"]

ROOT = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Marks the page once the load event has fired: how many images decoded, out of how many.
PROBE = (
    "<script>window.addEventListener('load', () => { const images = [...document.images];"
    " document.body.setAttribute('data-images', images.filter("
    "i => i.complete && i.naturalWidth > 0).length + '/' + images.length); });</script>"
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed"),
]


def run_module(module: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    run_module("recourse_sim", *TINY, f"hydra.run.dir={run_dir}")
    run_module("recourse_sim.report", str(run_dir))
    sweep_dir = tmp_path_factory.mktemp("sweep")
    run_module(
        "recourse_sim", "-m", "generator=generic,wachter_mad", *TINY, f"hydra.sweep.dir={sweep_dir}"
    )
    run_module("recourse_sim.report", str(sweep_dir))
    return {"run": run_dir / "report.html", "sweep": sweep_dir / "shift_report.html"}


def browse(page: Path, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_report_loads_in_chromium(reports, kind, tmp_path):
    page = reports[kind]
    source = page.read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", source).group(1)
    n_images = source.count("<img ")
    assert n_images >= 2

    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert f"<title>{title}</title>" in dom
    # The title says what was compared, not a timestamp or a job number.
    expected = {
        "run": "Shift report: overlapping data · logistic × generic · 2 rounds × 2 repetitions",
        "sweep": "Sweep shift report: overlapping data · generator ∈ {generic, wachter_mad}",
    }[kind]
    assert html.unescape(title) == expected
    assert "<h2>Glossary</h2>" in dom
    for term in ("domain shift (MMD²)", "combined p-value (Fisher)", "Holm-adjusted p-value"):
        assert html.escape(term, quote=False) in dom
    images = re.findall(r"<img\b[^>]*>", dom)
    assert len(images) == n_images
    assert all('src="data:image/png;base64,' in image for image in images)

    # The same page with a probe script: every image decoded once the page had loaded.
    probed = tmp_path / page.name
    probed.write_text(source.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = browse(probed, tmp_path / "profile", "--dump-dom")
    assert f'data-images="{n_images}/{n_images}"' in dom

    screenshot = tmp_path / "screenshot.png"
    browse(page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,3000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert float(pixels.std()) > 0.05
    inked = np.mean(pixels.min(axis=-1) < 0.9)  # share of pixels that are not (near) white
    assert inked > 0.02, "the screenshot is almost empty"
    keep = os.environ.get("RECOURSE_SIM_SCREENSHOTS")  # a directory to look at them afterwards
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / f"{kind}.png")
