"""``harvester report``: one self-contained HTML file, checked as text and in a headless browser."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.errors import UsageError
from harvester.report import write_report
from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store import Store
from tests.support import cli_env, days, run_cli, write_config
from tests.test_views import broken_store

# One pull for the whole module; one xdist worker runs its tests.
pytestmark = pytest.mark.xdist_group("report")

TODAY = dt.date(2024, 3, 20)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 10)
PHONES = ("6175550101", "6175550103")
BROWSER_TIMEOUT = 60  # seconds for one headless run; a cold start takes 2-5 s here
# Debian's package installs `chromium`; other distributions name it differently.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    # Lets plotly's timers run without waiting in real time.
    "--virtual-time-budget=15000",
)


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Path, SimulatorServer]]:
    """(store, report.html, simulator): two numbers and ALL over ten days, reported by the CLI."""
    tmp = tmp_path_factory.mktemp("report")
    settings = SimulatorSettings(phones=PHONES, limit=1000, window_seconds=60, today=TODAY)
    with SimulatorServer(settings) as sim:
        config = write_config(tmp, sim, phones=[*PHONES, "ALL"], start=START, end=END)
        pull = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
        assert pull.returncode == 0, pull.stderr
        out = tmp / "report.html"
        made = run_cli(["report", "--store", str(tmp / "store"), "--out", str(out)])
        assert made.returncode == 0, made.stderr
        assert str(out) in made.stdout
        yield tmp / "store", out, sim


def test_report_is_one_self_contained_file(report: tuple[Path, Path, SimulatorServer]) -> None:
    _, out, _ = report
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]+src=", page), "every script is inline"
    assert not re.search(r"<link[^>]+href=", page), "no external stylesheet"
    assert page.count("Plotly.newPlot") >= 8
    for heading in ("Calls and transfer rate", "Hang-up hotspots", "Recognition hotspots"):
        assert f"<h2>{heading}</h2>" in page
    assert "Item outcomes: start.php" in page and "Data coverage" in page
    assert "Every identity of the API notes holds" in page
    assert "figures from the merged number ALL" in page


def test_report_range_restricts_the_figures(
    report: tuple[Path, Path, SimulatorServer], tmp_path: Path
) -> None:
    store, _, sim = report
    first, last = dt.date(2024, 3, 3), dt.date(2024, 3, 5)
    out = tmp_path / "range.html"
    write_report(store, out, date_from=first, date_to=last)
    page = out.read_text()
    calls = sum(sim.simulator.calls("ALL", d, d) for d in days(first, last))
    assert f"<b>{calls:,}</b><span>calls</span>" in page
    assert "range asked 2024-03-03 to 2024-03-05" in page


def test_report_without_plotly_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import now fails
    with pytest.raises(UsageError, match=r"pip install 'harvester\[report\]'"):
        write_report(tmp_path, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_report_of_an_empty_store_and_of_broken_data(tmp_path: Path) -> None:
    Store(tmp_path / "empty").ensure_writable("day")
    write_report(tmp_path / "empty", tmp_path / "empty.html")
    assert "No call data in this range" in (tmp_path / "empty.html").read_text()
    write_report(broken_store(tmp_path / "broken"), tmp_path / "broken.html")
    page = (tmp_path / "broken.html").read_text()
    assert "break the identities" in page and "calls_equal_entry" in page
    assert "figures from the 1 harvested number" not in page  # ALL exists there


# -- in a real browser ----------------------------------------------------------------------------


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no headless browser: install Debian's `chromium` (apt-get install chromium; .ci/run "
        "does) to check that the report renders"
    )


def _run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )


def _console_errors(stderr: bytes) -> list[str]:
    """Page console lines (``INFO:CONSOLE...``) that report an error: JS exceptions included."""
    lines = stderr.decode(errors="replace").splitlines()
    return [
        line for line in lines if ":CONSOLE" in line and re.search(r"error|uncaught", line, re.I)
    ]


def test_report_renders_in_headless_chromium(
    report: tuple[Path, Path, SimulatorServer], tmp_path: Path
) -> None:
    browser = _browser()
    _, out, _ = report
    figures = out.read_text().count("Plotly.newPlot")
    shot = tmp_path / "report.png"
    # one browser run, two outputs: the page's DOM once its scripts ran, and a screenshot at
    # half scale (the layout of a 1200-pixel-wide window in a quarter of the pixels to decode)
    run = _run_browser(
        browser,
        tmp_path / "profile",
        "--window-size=1200,2400",
        "--force-device-scale-factor=0.5",
        f"--screenshot={shot}",
        "--dump-dom",
        out.as_uri(),
    )
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    html = run.stdout.decode()
    assert _console_errors(run.stderr) == []
    # plotly replaced each chart's empty div by its SVG: two <svg class="main-svg"> per chart
    assert html.count('class="plot-container plotly"') == figures
    assert html.count('class="main-svg"') >= 2 * figures
    assert html.count("<rect") + html.count("<path") > 200

    width, height, pixels = decode_png(shot.read_bytes())
    colours = set(pixels)
    not_white = sum(1 for p in pixels if p != b"\xff\xff\xff")
    assert len(colours) > 100, "a blank or single-colour page"
    assert not_white / (width * height) > 0.05, "almost nothing drawn"
    for hue in (b"\x00\x72\xb2", b"\xe6\x9f\x00", b"\x00\x9e\x73"):  # the endings' colours
        assert any(_near(p, hue) for p in colours), f"no bar in colour #{hue.hex()}"


def _near(pixel: bytes, colour: bytes, tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """``(width, height, RGB of every pixel)`` of an 8-bit, non-interlaced RGB(A) PNG.

    Enough PNG for a browser's screenshot, without an imaging library: the IDAT stream is
    zlib-inflated, then each row's filter (None, Sub, Up, Average, Paeth) is undone.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour_type = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    assert depth == 8 and interlace == 0 and colour_type in (2, 6), "unexpected PNG format"
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    pixels: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind != 0:
            _unfilter(kind, line, prev, bpp)
        pixels += [bytes(line[x : x + 3]) for x in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    """Undo a Sub (1), Average (3) or Paeth (4) row filter in place."""
    if kind not in (1, 3, 4):
        raise AssertionError(f"unknown PNG filter {kind}")
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        else:
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + nearest) & 0xFF
