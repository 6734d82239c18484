"""The report in a real browser: headless Chromium (Debian's ``chromium`` package) opens the
HTML file from disk, driven through the Chrome DevTools Protocol over a websocket.

Asserted: no console errors or uncaught exceptions, no network request other than the file
itself and its ``data:`` URIs, every image decoded (``naturalWidth > 0``), the layer table
present with one row per layer, and nothing overflowing: the page is no wider than the window,
and no element sticks out of its card unless it sits in a horizontally scrolling box (tables,
drawings). A full-page screenshot is kept in ``test-artifacts/``.
The test is skipped only when no Chromium binary is installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import websocket  # websocket-client: talks to Chromium's DevTools endpoint

import graphnn
from graphnn.demo import DigitsNet
from graphnn.report import report_file
from graphnn.report.pipeline import compare_files, write_comparison

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                 "(apt-get install -y chromium chromium-driver)"),
]

# Collected on the page after load: images, the layer table, the page height.
PAGE_FACTS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                                                   height: i.naturalHeight, src: i.src.slice(0, 22)})),
  layerRows: document.querySelectorAll('#layer-table tbody tr').length,
  layerNames: Array.from(document.querySelectorAll('#layer-table tbody tr td:first-child')).map(td => td.textContent.trim()),
  height: document.documentElement.scrollHeight,
  pageWidth: document.documentElement.scrollWidth,
  windowWidth: window.innerWidth,
  overflowing: Array.from(document.querySelectorAll('section.card, .cards, details.notes')).flatMap(card => {
    const right = card.getBoundingClientRect().right + 1;
    return Array.from(card.querySelectorAll('*'))
      .filter(el => !el.closest('.scroll, .svgwrap') || el.matches('.scroll, .svgwrap'))
      .filter(el => el.getBoundingClientRect().width > 0 && el.getBoundingClientRect().right > right)
      .map(el => el.tagName + '.' + el.className + ': ' + (el.textContent || '').trim().slice(0, 60));
  }),
  notesBanners: document.querySelectorAll('details.notes').length,
  topologyNodes: document.querySelectorAll('#topology-svg g.node').length,
  topologyEdges: document.querySelectorAll('#topology-svg path.edge').length,
  figureIds: Array.from(document.querySelectorAll('section.card')).map(c => c.id),
  title: document.title
})"""


class Chromium:
    """Headless Chromium with a DevTools websocket to its first page."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == event:
                return e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == event:
                return msg
        raise TimeoutError(f"no {event} within {timeout} s")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def open_in_browser(html: Path, profile: Path, screenshot: Path) -> tuple[dict, list[dict]]:
    """Load ``html`` from disk; return the page facts and every DevTools event seen. Saves a
    full-page screenshot."""
    b = Chromium(profile)
    try:
        for domain in ("Page", "Runtime", "Network", "Log"):
            b.send(f"{domain}.enable")
        b.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        b.send("Page.navigate", url=html.resolve().as_uri())
        b.wait_for("Page.loadEventFired")
        facts = json.loads(b.send("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)["result"]["value"])
        shot = b.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": 1280, "height": min(facts["height"], 16000), "scale": 1})
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        b.send("Runtime.evaluate", expression="1")  # flush events that arrived during the capture
        return facts, list(b.events)
    finally:
        b.close()


def problems(events: list[dict], page_url: str) -> tuple[list[str], list[str]]:
    """(console errors and exceptions, requests to anything but the page and data: URIs)."""
    errors, requests = [], []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(json.dumps(p.get("args"))[:300])
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(str(d.get("exception", {}).get("description") or d.get("text"))[:300])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(p["entry"].get("text", "")[:300])
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if url != page_url and not url.startswith("data:"):
                requests.append(url)
    return errors, requests


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    net = DigitsNet(width=8, hidden=16)
    a, b = d / "epoch0.safetensors", d / "epoch1.safetensors"
    graphnn.extract.save_state_dict(net.state_dict(), a)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    graphnn.extract.save_state_dict(net.state_dict(), b)
    return d, a, b


def check_page(html: Path, profile: Path, name: str, n_rows: int, n_images: int) -> dict:
    facts, events = open_in_browser(html, profile, ARTIFACTS / f"{name}.png")
    errors, requests = problems(events, html.resolve().as_uri())
    assert errors == [], f"console errors: {errors}"
    assert requests == [], f"network requests: {requests}"
    assert len(facts["images"]) == n_images
    for img in facts["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
        assert img["src"].startswith("data:image/png")
    assert facts["layerRows"] == n_rows
    assert facts["pageWidth"] <= facts["windowWidth"], "the page is wider than the window"
    assert facts["overflowing"] == [], f"elements sticking out of their card: {facts['overflowing'][:5]}"
    shot = (ARTIFACTS / f"{name}.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    return facts


def test_report_in_headless_chromium(checkpoints, tmp_path):
    d, a, _ = checkpoints
    out = tmp_path / "report.html"
    res = report_file(a, out, title="browser test")
    facts = check_page(out, tmp_path / "profile", "report", len(res.graph.partitions), 4)
    assert facts["layerNames"] == list(res.graph.partitions)
    assert facts["title"] == "browser test"


def test_comparison_report_in_headless_chromium(checkpoints, tmp_path):
    d, a, b = checkpoints
    results = compare_files([a, b])
    out = write_comparison(results, tmp_path / "compare.html")
    layers = dict.fromkeys(n for r in results.values() for n in r.graph.partitions)
    check_page(out, tmp_path / "profile", "compare", len(layers), 3)


def test_the_checks_catch_requests_errors_and_broken_images(tmp_path):
    """A page that does everything the report must not: the same checks must see it."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                   '<img src="http://127.0.0.1:9/figure.png"><img src="data:image/png;base64,AAAA">'
                   '<script>console.error("broken"); undefinedFunction();</script>'
                   '<table id="layer-table"><tbody><tr><td>a</td></tr></tbody></table>'
                   '<section class="card" style="width:600px"><div style="width:3000px">too wide</div>'
                   '<div class="scroll" style="overflow-x:auto"><div style="width:2000px">scrolls</div></div>'
                   '</section></body></html>')
    facts, events = open_in_browser(bad, tmp_path / "profile", tmp_path / "bad.png")
    errors, requests = problems(events, bad.resolve().as_uri())
    assert any("broken" in e for e in errors) and any("undefinedFunction" in e for e in errors)
    assert requests == ["http://127.0.0.1:9/figure.png"]
    assert [img["width"] for img in facts["images"]] == [0, 0]
    assert facts["layerRows"] == 1
    assert facts["pageWidth"] > facts["windowWidth"]
    assert facts["overflowing"] == ["DIV.: too wide"]  # the scrolling box's content is not counted


def test_transformer_report_in_headless_chromium(tmp_path):
    """The acceptance check of issue 12 §4: a 12-layer GPT-2-shaped model (built from a config,
    small widths) gives one notes banner, a topology SVG with one node per partition and one
    edge per (source, destination) pair, per-role line plots, and passes the checks above."""
    transformers = pytest.importorskip("transformers")
    from graphnn.report import Provenance, render_report, write_html

    cfg = transformers.GPT2Config(n_embd=64, n_layer=12, n_head=4, n_positions=32, vocab_size=128,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    g = graphnn.extract(model)
    a = graphnn.analyse(g)
    out = tmp_path / "gpt2.html"
    write_html(render_report(a, Provenance(source="gpt2-12-layers"), g, title="GPT-2 shaped, 12 layers"), out)
    facts = check_page(out, tmp_path / "profile", "transformer", len(g.partitions), 5)
    assert facts["notesBanners"] == 1
    assert facts["topologyNodes"] == len(g.partitions)
    assert facts["topologyEdges"] == len({(b.src, b.dst) for b in g.blocks.values()})
    for fid in ("topology", "fig-roles-layers", "fig-roles-blocks", "fig-strength", "fig-centrality"):
        assert fid in facts["figureIds"]
