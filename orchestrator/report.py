"""Writing a comparison report: figures (matplotlib, Agg, PNG), one self-contained HTML page with
the figures embedded as base64, the data behind every table and figure as CSV and Parquet, and a
screenshot of the page in headless Chromium.

Everything here works on plain rows (lists of dicts) built by ``orchestrator.compare``; nothing
reads MLflow.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import html
import io
import json
import math
import os
import re
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

NETS = ("plain", "residual")


def write_rows(rows: list[dict], columns: list[str], folder: Path, stem: str) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.parquet`` in ``folder``; list cells are joined with spaces."""
    flat = [{c: " ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c) for c in columns} for r in rows]
    csv_path, parquet_path = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    pq.write_table(pa.Table.from_pylist(flat, schema=_schema(flat, columns)), parquet_path)
    return [csv_path, parquet_path]


def _schema(rows: list[dict], columns: list[str]) -> pa.Schema:
    """Column types from the values: a column of ints with a None stays int, not null or float."""

    def kind(column):
        values = [r[column] for r in rows if r[column] is not None]
        if values and all(isinstance(v, bool) for v in values):
            return pa.bool_()
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int64()
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return pa.float64()
        return pa.string()

    return pa.schema([(c, kind(c)) for c in columns])


def curve_label(run: dict, several_seeds: bool, several_shortcuts: bool) -> str:
    """ "plain-20", "ResNet-56", with the shortcut and seed where the figure mixes several."""
    label = f"{'ResNet' if run['net'] == 'residual' else 'plain'}-{run['depth']}"
    if several_shortcuts and run["shortcut"]:
        label += f" {run['shortcut']}"
    return label + (f" seed {run['seed']}" if several_seeds else "")


def curves_figure(runs: list[dict], points: list[dict]) -> bytes:
    """Figs. 1/4/6: error (%) against iterations, plain nets left and residual nets right; one
    colour per run, training error thin and dashed, test error bold."""
    several_seeds = len({r["seed"] for r in runs}) > 1
    several_shortcuts = len({r["shortcut"] for r in runs if r["shortcut"]}) > 1
    by_run: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        by_run.setdefault((p["run_id"], p["metric"]), []).append(p)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, net in zip(axes, NETS):
        mine = sorted((r for r in runs if r["net"] == net), key=lambda r: (r["depth"], r["shortcut"] or "", r["seed"]))
        colours = plt.get_cmap("viridis")([i / max(1, len(mine) - 1) * 0.9 for i in range(len(mine))])
        for run, colour in zip(mine, colours):
            label = curve_label(run, several_seeds, several_shortcuts)
            train = by_run.get((run["run_id"], run["train_metric"]), [])
            test = by_run.get((run["run_id"], "test_top1_error"), [])
            ax.plot([p["step"] for p in train], [p["value"] for p in train], "--", lw=0.8, color=colour)
            ax.plot([p["step"] for p in test], [p["value"] for p in test], "-", lw=2.2, color=colour, label=label)
        ax.set_title(f"{'residual' if net == 'residual' else 'plain'} nets" + ("" if mine else " (none selected)"))
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if mine:
            ax.legend(fontsize=8, title="bold: test, dashed: train", title_fontsize=8)
    axes[0].set_ylabel("error (%)")
    return _png(figure)


def fig7_figure(runs: list[dict], responses: list[dict]) -> bytes:
    """Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted by magnitude
    (bottom); plain nets dashed, residual nets solid."""
    several_seeds = len({r["seed"] for r in runs}) > 1
    several_shortcuts = len({r["shortcut"] for r in runs if r["shortcut"]}) > 1
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5))
    analysed = [r for r in runs if any(p["run_id"] == r["run_id"] for p in responses)]
    analysed.sort(key=lambda r: (r["net"], r["depth"], r["shortcut"] or "", r["seed"]))
    colours = plt.get_cmap("tab10")
    for i, run in enumerate(analysed):
        mine = sorted((p for p in responses if p["run_id"] == run["run_id"]), key=lambda p: p["layer_index"])
        style = dict(
            ls="--" if run["net"] == "plain" else "-",
            color=colours(i % 10),
            lw=1.2,
            label=curve_label(run, several_seeds, several_shortcuts),
        )
        top.plot([p["layer_index"] for p in mine], [p["std"] for p in mine], **style)
        bottom.plot(range(1, len(mine) + 1), sorted((p["std"] for p in mine), reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std of response")
        ax.grid(alpha=0.3)
    if analysed:
        top.legend(fontsize=8, ncol=2)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def html_table(rows: list[dict], columns: list[tuple[str, str]], css_class: str = "") -> str:
    """``columns``: (key, header). Floats print with two decimals, lists joined with spaces; a
    ``(shown, full)`` pair shows the first and gives the second on hover (abbreviated ids). Numbers
    are right-aligned."""

    def cell(value):
        hover = ""
        if isinstance(value, tuple):
            value, full = value
            hover = f" title='{html.escape(str(full))}'"
        numeric = isinstance(value, (int, float)) or bool(isinstance(value, str) and NUMBER.fullmatch(value))
        if value is None:
            text = "–"
        elif isinstance(value, float):
            text = f"{value:.2f}"
        else:
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        return f"<td{' class=num' if numeric else ''}{hover}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(cell(r.get(k)) for k, _ in columns) + "</tr>" for r in rows)
    attribute = f" class='{css_class}'" if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A number as the tables show it: "6.43", "+0.27", "74.41 ± 0.20".
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?( ± \d+(\.\d+)?)?")

# Read at a laptop's width: wide tables take the page width and wrap their cells at spaces and
# hyphens; text outside tables (a tracking URI) may break anywhere rather than push the page sideways.
STYLE = """
body{font-family:system-ui,sans-serif;color:#222;line-height:1.4;max-width:1200px;margin:1.5em auto;
  padding:0 1.5em}
p,li{overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.2em}
h2{border-bottom:2px solid #ccc;padding-bottom:.15em;margin-top:1.6em}
h3{margin:1.2em 0 .4em}
nav,.lead{color:#555}
nav a{margin-right:.9em}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}
table.wide{width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}
td.num{text-align:right;white-space:nowrap}
img{max-width:100%;height:auto}
li.agree::marker{content:"✓ ";color:#1a7f37}
li.disagree::marker{content:"✗ ";color:#b3261e}
"""


def html_page(title: str, lead: str, parts: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """One self-contained page: ``parts`` are (heading, [(subheading, inner HTML)]), e.g. a summary
    then the details; a line of links to every subsection heads the page."""

    def anchor(text):
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    nav = " ".join(f"<a href='#{anchor(sub)}'>{html.escape(sub)}</a>" for _, subs in parts for sub, _ in subs)
    body = "\n".join(
        f"<h2 id='{anchor(heading)}'>{html.escape(heading)}</h2>\n"
        + "\n".join(f"<h3 id='{anchor(sub)}'>{html.escape(sub)}</h3>\n{inner}" for sub, inner in subs)
        for heading, subs in parts
    )
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class='lead'>{lead}</p>\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def embedded_png(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


# Chromium without a network: these keep it from reaching for updates, sync and QUIC, which on a
# machine with no route out leave it waiting on connections.
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
PAGE_WIDTH = 1280  # CSS pixels: a laptop screen
PAGE_HEIGHT = 800


def screenshot(page: Path, *, width: int = PAGE_WIDTH, height: int = PAGE_HEIGHT, timeout: float = 60.0) -> bytes:
    """The whole of the HTML file ``page`` as headless Chromium (``chromium`` on PATH) renders it in a
    ``width`` x ``height`` viewport, as a PNG ``width`` pixels wide. Raises FileNotFoundError without
    Chromium, TimeoutError or RuntimeError when it does not render the page."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    with (
        tempfile.TemporaryDirectory(prefix="report-chromium-") as profile,
        _DevTools(chromium, profile, timeout) as browser,
    ):
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        browser.call("Page.enable", session)
        browser.call("Page.setLifecycleEventsEnabled", session, enabled=True)
        navigation = browser.call("Page.navigate", session, url=Path(page).resolve().as_uri())
        if navigation.get("errorText"):
            raise RuntimeError(f"Chromium could not open {page}: {navigation['errorText']}")
        # "load" of this navigation: the page and its images (the figures) are in.
        browser.wait_for(
            session, "Page.lifecycleEvent", lambda e: e["name"] == "load" and e["loaderId"] == navigation["loaderId"]
        )
        size = browser.call("Page.getLayoutMetrics", session)["cssContentSize"]
        shot = browser.call(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
    return base64.b64decode(shot["data"])


def _pipe_above_4() -> tuple[int, int]:
    """``os.pipe()`` with both ends numbered 5 or more, so that moving them onto 3 and 4 cannot
    overwrite one with the other."""
    ends = os.pipe()
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in ends)
    for fd in ends:
        os.close(fd)
    return moved


class _DevTools:
    """Chromium's DevTools protocol on a pipe (``--remote-debugging-pipe``): Chromium reads commands
    on its fd 3 and writes replies and events on its fd 4, each a JSON message ended by NUL. No
    driver package and no port: the report needs nothing but the browser."""

    def __init__(self, chromium: str, profile: str, timeout: float):
        commands_in, commands_out = _pipe_above_4()
        self._replies, replies_out = _pipe_above_4()
        quiet = [
            (os.POSIX_SPAWN_OPEN, fd, os.devnull, mode, 0)
            for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY))
        ]
        # setsid: its own process group, so that a hung browser is ended with its helpers
        self._pid = os.posix_spawn(
            chromium,
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars", "--remote-debugging-pipe"],
            os.environ,
            file_actions=quiet + [(os.POSIX_SPAWN_DUP2, commands_in, 3), (os.POSIX_SPAWN_DUP2, replies_out, 4)],
            setsid=True,
        )
        os.close(commands_in)
        os.close(replies_out)
        self._status: int | None = None
        self._commands = os.fdopen(commands_out, "wb")
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):  # a browser already gone has closed its end
            self._commands.write(b'{"id": 0, "method": "Browser.close"}\0')
            self._commands.close()
        if self._wait(10) is None:
            os.killpg(self._pid, signal.SIGKILL)
            self._wait(math.inf)
        with contextlib.suppress(OSError):
            self._commands.close()
        os.close(self._replies)

    def _wait(self, timeout: float) -> int | None:
        """The browser's exit status once it has exited within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while self._status is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
        return self._status

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        self._commands.write(json.dumps(message | ({"sessionId": session} if session else {})).encode() + b"\0")
        self._commands.flush()
        while True:
            reply = self._read()
            if reply.get("id") != self._last_id:
                self._events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"Chromium refused {method}: {reply['error'].get('message')}")
            else:
                return reply["result"]

    def wait_for(self, session: str, method: str, matches) -> None:
        def seen():
            return any(
                e.get("method") == method and e.get("sessionId") == session and matches(e["params"])
                for e in self._events
            )

        while not seen():
            self._events.append(self._read())

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not render the page within {self._timeout:.0f} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (status {self._wait(10)}) before rendering the page")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)
