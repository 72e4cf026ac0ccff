"""The Dask dashboard in a real browser, during a real ``rankdist.neighbors`` run.

Headless Chromium loads the scheduler's ``/status`` page while the tiles run on the
embedded default cluster (in-process, the dashboard on 127.0.0.1) and is driven
over its DevTools protocol (a websocket on localhost, spoken with tornado, which
distributed already depends on: no browser-driver package). The test checks what a user
would see:

- the page's Bokeh document: the "Task Stream" plot holds rankdist's tile, merge and write
  tasks, and the "Progress" plot lists rankdist's task groups while the run is going;
- the screenshot: not blank, and painted with the task stream's colour for tiles (the bars
  are drawn on a canvas, so the pixels are the only evidence that they were drawn);
- the scheduler's own record (``distributed.get_task_stream``): one ``rankdist-tile`` task
  per tile, one ``rankdist-write`` per row block, and merges between them.

The run's last tile is held until the screenshot is taken, so the page is seen while the
run is going however fast the machine, and opened once the first tile has started.

The screenshot and the task counts are saved to ``test-artifacts/`` in the repository
(or ``$RANKDIST_ARTIFACTS``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from dask.utils import key_split
from distributed import get_task_stream

import rankdist
from rankdist.cluster.local import local_client
from rankdist.datasets.toy import synthetic_counts
from rankdist.tiles import scheduler
from rankdist.tiles.grid import TilePlan

N_CELLS, N_GENES, BLOCK_ROWS, K = 12000, 1000, 512, 15
PREFIXES = ("rankdist-tile", "rankdist-merge", "rankdist-write")
WINDOW = (1400, 900)
#: Flags without which this machine's closed network refuses Chromium's connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Names and colours per plotted name, for the page's task stream and progress plots.
_READ_PLOTS_JS = """(() => {
  const doc = window.Bokeh && Bokeh.documents.length ? Bokeh.documents[0] : null;
  if (!doc) return null;
  const out = {};
  for (const fig of doc.all_models) {
    if (fig.name !== 'task_stream' && fig.name !== 'task_progress') continue;
    const seen = new Set(), names = {}, colors = {};
    for (const r of fig.renderers) {
      const src = r.data_source;
      if (!src || seen.has(src)) continue;
      seen.add(src);
      const d = src.data instanceof Map ? Object.fromEntries(src.data) : src.data;
      if (!d.name) continue;
      const n = Array.from(d.name), c = d.color ? Array.from(d.color) : [];
      n.forEach((x, i) => { names[x] = (names[x] || 0) + 1; if (c[i]) colors[x] = c[i]; });
    }
    out[fig.name] = {names, colors};
  }
  return out;
})()"""


@pytest.fixture(scope="module")
def artifacts_dir(pytestconfig) -> Path:
    root = Path(os.environ.get("RANKDIST_ARTIFACTS") or pytestconfig.rootpath / "test-artifacts")
    root.mkdir(parents=True, exist_ok=True)
    return root


class Chromium:
    """Headless Chromium with a fresh profile and a DevTools port on localhost."""

    def __init__(self, profile_dir: Path, log_path: Path):
        self.profile_dir = profile_dir
        self.log = open(log_path, "wb")  # closed in close()
        self.proc = subprocess.Popen(
            [
                shutil.which("chromium"),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile_dir}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def page_websocket(self, timeout: float = 30.0) -> str:
        """The DevTools websocket URL of the browser's first page."""
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"chromium exited with {self.proc.returncode}; log: {self.log.name}"
                raise RuntimeError(msg)
            if port_file.exists() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                    targets = json.load(r)
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        msg = f"chromium opened no DevTools port within {timeout} s; log: {self.log.name}"
        raise TimeoutError(msg)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class DevTools:
    """Minimal DevTools-protocol client: send a command, wait for its reply, skip events."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events: list[str] = []  # names of the events received so far

    @classmethod
    async def connect(cls, url: str) -> DevTools:
        from tornado.websocket import websocket_connect

        return cls(await websocket_connect(url, max_message_size=1 << 28))

    async def _receive(self, waiting_for: str) -> dict:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout=30)
        if raw is None:
            msg = f"DevTools connection closed while waiting for {waiting_for}"
            raise ConnectionError(msg)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message["method"])
        return message

    async def wait_for_event(self, name: str) -> None:
        while name not in self.events:
            await self._receive(name)

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.write_message(
            json.dumps({"id": self.next_id, "method": method, "params": params})
        )
        while True:
            reply = await self._receive(method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    msg = f"DevTools {method} failed: {reply['error']}"
                    raise RuntimeError(msg)
                return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def watch_dashboard(ws_url: str, status_url: str, run_done: threading.Event) -> dict:
    """Load the status page, poll its plots until rankdist's tasks are drawn, screenshot it.

    The screenshot is taken at the first moment the task stream holds all of
    ``PREFIXES`` and the progress plot still lists ``rankdist-tile`` (the run is going);
    failing that, once the run has finished and the stream holds them, or after 40 s.
    """
    tools = await DevTools.connect(ws_url)
    await tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=WINDOW[0],
        height=WINDOW[1],
        deviceScaleFactor=1,
        mobile=False,
    )
    await tools.call("Page.enable")
    await tools.call("Page.navigate", url=status_url)
    await tools.wait_for_event("Page.loadEventFired")
    progress_during_run: set[str] = set()
    plots: dict = {}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        finished = run_done.is_set()
        plots = await tools.evaluate(_READ_PLOTS_JS) or {}
        stream = plots.get("task_stream", {}).get("names", {})
        progress = plots.get("task_progress", {}).get("names", {})
        if not finished:
            progress_during_run |= {n for n in progress if n.startswith("rankdist-")}
        if all(p in stream for p in PREFIXES) and ("rankdist-tile" in progress or finished):
            await asyncio.sleep(0.5)  # let Bokeh paint the data it has just received
            break
        await asyncio.sleep(0.25)
    shot = await tools.call("Page.captureScreenshot", format="png")
    tools.ws.close()
    return {
        "plots": plots,
        "progress_during_run": sorted(progress_during_run),
        "png": base64.b64decode(shot["data"]),
    }


def _count_pixels(png: bytes, hex_color: str) -> tuple[int, int]:
    """(distinct colours in the image, pixels of exactly ``hex_color``)."""
    from PIL import Image  # a dependency of bokeh

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 24)
    target = tuple(int(hex_color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return len(colours), sum(n for n, rgb in colours if rgb == target)


def _pause_last_tile(monkeypatch, plan: TilePlan) -> tuple[threading.Event, threading.Event]:
    """Hold the run's last tile until the page is seen; (tiles started, page seen) events.

    The run's tasks are threads of this process (the embedded cluster), so the patched
    kernel is what they call. The last tile of the plan starts after every other tile,
    so while it is held the other tiles, their merges and the writes of the blocks it
    does not touch go on, and the run cannot finish before the screenshot.
    """
    started, seen = threading.Event(), threading.Event()
    real, last = scheduler.tile_partials, plan.tiles()[-1]

    def tile_partials(zi, zj, i, j, *args, **kwargs):
        started.set()
        if (i, j) == last:
            seen.wait(timeout=120)  # the assertions below report a page never seen
        return real(zi, zj, i, j, *args, **kwargs)

    monkeypatch.setattr(scheduler, "tile_partials", tile_partials)
    return started, seen


@pytest.mark.needs("chromium")
def test_dashboard_shows_rankdist_tasks(tmp_path, artifacts_dir, capsys, monkeypatch):
    store = rankdist.ingest(
        synthetic_counts(n_cells=N_CELLS, n_genes=N_GENES, seed=0),
        tmp_path / "cells.zarr",
        cell_type="cell_type",
        progress=False,
    )
    plan = TilePlan(N_CELLS, BLOCK_ROWS)
    tiles_started, page_seen = _pause_last_tile(monkeypatch, plan)
    browser = Chromium(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        with (
            # the embedded default: scheduler and worker threads in this process on
            # inproc://; the dashboard, plain HTTP, on 127.0.0.1
            local_client(
                workers=1, threads_per_worker=2, dashboard_address="127.0.0.1:0", quiet=True
            ) as client,
            get_task_stream(client) as recorded,  # records every task from here on
        ):
            assert client.scheduler.address.startswith("inproc://")
            assert client.dashboard_link.startswith("http://127.0.0.1:")
            ws_url = browser.page_websocket()
            run_done = threading.Event()
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    rankdist.neighbors(
                        store, k=K, client=client, block_size=BLOCK_ROWS, progress=False
                    )
                except BaseException as exc:  # re-raised in the test's thread
                    errors.append(exc)
                finally:
                    run_done.set()

            runner = threading.Thread(target=run, name="rankdist-neighbors")
            runner.start()
            try:
                # Open the page once tiles run (after the encoding), as a user watching would.
                assert tiles_started.wait(timeout=120) or errors, "no tile started in 120 s"
                seen = asyncio.run(watch_dashboard(ws_url, client.dashboard_link, run_done))
            finally:
                page_seen.set()  # the last tile goes on: the run finishes
            runner.join(timeout=120)
            assert not runner.is_alive(), "rankdist.neighbors did not finish within 120 s"
            if errors:
                raise errors[0]
    finally:
        browser.close()

    counts = Counter(key_split(t["key"]) for t in recorded.data)
    stream = seen["plots"].get("task_stream", {"names": {}, "colors": {}})
    shot_path = artifacts_dir / "dashboard-status.png"
    shot_path.write_bytes(seen["png"])
    n_colours, tile_pixels = _count_pixels(seen["png"], stream["colors"].get(PREFIXES[0], "#000"))
    summary = {
        "n_cells": N_CELLS,
        "block_rows": BLOCK_ROWS,
        "n_blocks": plan.n_blocks,
        "n_tiles": plan.n_tiles,
        "scheduler_task_stream": dict(sorted(counts.items())),
        "page_task_stream": stream["names"],
        "page_progress_during_run": seen["progress_during_run"],
        "screenshot": str(shot_path),
        "screenshot_colours": n_colours,
        "screenshot_tile_pixels": tile_pixels,
    }
    (artifacts_dir / "dashboard-tasks.json").write_text(json.dumps(summary, indent=2) + "\n")
    with capsys.disabled():
        print(f"\ndashboard screenshot and task counts: {artifacts_dir}")

    # The scheduler's record: every tile, every block written, partials merged in between.
    assert counts["rankdist-tile"] == plan.n_tiles
    assert counts["rankdist-write"] == plan.n_blocks
    assert counts["rankdist-merge"] >= plan.n_blocks
    # The page: the task stream plot holds all three kinds, progress listed rankdist's groups.
    for prefix in PREFIXES:
        assert stream["names"].get(prefix, 0) > 0, f"{prefix} not in the page's task stream"
    assert "rankdist-tile" in seen["progress_during_run"], (
        "the status page's Progress plot never listed rankdist-tile while the run was going "
        f"(the run may have finished before the page rendered); saw {summary}"
    )
    # The screenshot: a rendered page (not one colour) with tile bars painted in it.
    assert n_colours > 10, f"screenshot {shot_path} is nearly blank ({n_colours} colours)"
    assert tile_pixels > 1000, (
        f"screenshot {shot_path} has {tile_pixels} pixels of the tile colour "
        f"{stream['colors'].get(PREFIXES[0])}: task stream bars not drawn"
    )
