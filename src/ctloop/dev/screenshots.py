"""Retake the README's screenshots (`docs/*.png`) from a running `make up` stack.

`python -m ctloop.dev.screenshots` (what `scripts/screenshots.sh` runs) drives a headless
Chromium through the DevTools protocol: it logs into Airflow with the stack's generated
admin password (the `_token` cookie the UI reads), opens each page, clicks where a person
would (the *Trigger* button opens the form), waits until the page has drawn what it is
about, and saves a PNG. Pages: the Airflow trigger forms of `ct_<view>` and
`monitor_<view>`, the MLflow run of the champion and its registered model version, the
newest drift report and the service's OpenAPI page.

Developer tool only (never imported by the library or the service). It needs the
`chromium` Debian package and `websocket-client` (in the environment through Airflow's
providers); neither is needed by CI, since the screenshots are committed files.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from ctloop.clirunner import run_command
from ctloop.errors import CtloopError

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0",
]  # fmt: skip
MAX_PNG_BYTES = 300_000


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # (b) developer tool: only here

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and wait for its answer (events in between are dropped)."""
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise CtloopError(f"chromium: {method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, script: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=script, returnByValue=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, ready: str, timeout: float = 60) -> None:
        """Open `url` and wait until the JavaScript expression `ready` is true."""
        self.send("Page.navigate", url=url)
        self.wait(ready, f"{url}: {ready}", timeout)

    def wait(self, ready: str, what: str, timeout: float = 60) -> None:
        """Poll `ready` until true (pages draw after their API calls answer)."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise CtloopError(f"page not ready after {timeout:.0f}s: {what}")
            time.sleep(0.5)
        time.sleep(1.0)  # let fonts and charts settle

    def shot(self, path: Path, width: int = 1280, height: int = 860) -> int:
        """Save the viewport as a PNG; its size in bytes."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path.stat().st_size


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 860) -> Iterator[Browser]:
    """A fresh headless Chromium (own profile folder), stopped afterwards."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise CtloopError("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="ctloop-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.is_file() or not port_file.read_text().strip():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise CtloopError("chromium did not start its DevTools endpoint")
                time.sleep(0.2)
            port = port_file.read_text().split()[0]
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(p for p in pages if p.get("type") == "page")
            browser = Browser(page["webSocketDebuggerUrl"])
            browser.send("Page.enable")
            browser.send("Network.enable")
            yield browser
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _click_text(text: str) -> str:
    """JavaScript that clicks the first button whose text is `text` (true if found)."""
    return (
        "(() => { const b = [...document.querySelectorAll('button')]"
        f".find(e => e.innerText.trim() === {json.dumps(text)});"
        " if (b) b.click(); return !!b; })()"
    )


MLFLOW_ASSISTANT_CLOSED = {
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
"""MLflow 3.x's UI opens its assistant panel over a third of the page on a browser's first
visit and remembers in localStorage once a person closes it (keys read from the UI bundle).
The screenshots show the page as a person sees it after closing it once."""


def _close_mlflow_assistant(page: Browser, mlflow: str) -> None:
    """Store the closed assistant panel for MLflow's origin, then leave the page, so the
    next MLflow page loads afresh and reads it."""
    page.goto(f"{mlflow}/#/", "document.readyState === 'complete'")
    for key, value in MLFLOW_ASSISTANT_CLOSED.items():
        page.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")
    page.goto("about:blank", "true")


def take(
    out: Path, view: str, airflow: str, mlflow: str, serving: str, password: str
) -> dict[str, int]:
    """Every screenshot, into `out`; each file's size."""
    from ctloop.registry import Registry  # (b) heavy import only when run

    out.mkdir(parents=True, exist_ok=True)
    token = httpx.post(f"{airflow}/auth/token", json={"username": "admin", "password": password},
                       timeout=30).json()["access_token"]  # fmt: skip
    registry = Registry(mlflow)
    champion = registry.champion(view)
    if champion is None or champion.run_id is None:
        raise CtloopError(f"no champion of {view} in {mlflow}: train one first (ctloop train)")
    experiment = registry.client.get_run(champion.run_id).info.experiment_id
    monitoring = registry.client.get_experiment_by_name(f"{view}-monitoring")
    reports = registry.client.search_runs(
        [monitoring.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    ) if monitoring else []  # fmt: skip
    sizes: dict[str, int] = {}
    ml = "workflowType=machine_learning"
    with chromium() as page:
        host = airflow.split("//", 1)[1].split(":")[0]
        page.send("Network.setCookie", name="_token", value=token, domain=host, path="/")
        _close_mlflow_assistant(page, mlflow)
        shots: list[tuple[str, str, str, Callable[[], None] | None]] = [
            (f"airflow-trigger-ct_{view}.png", f"{airflow}/dags/ct_{view}",
             "document.body.innerText.includes('Trigger')", None),
            (f"airflow-trigger-monitor_{view}.png", f"{airflow}/dags/monitor_{view}",
             "document.body.innerText.includes('Trigger')", None),
            ("mlflow-run.png",
             f"{mlflow}/#/experiments/{experiment}/runs/{champion.run_id}?{ml}",
             "document.body.innerText.includes('val_')", None),
            ("mlflow-model-version.png",
             f"{mlflow}/#/models/{view}/versions/{champion.version}?{ml}",
             "document.body.innerText.includes('Trained as of')", None),
            ("openapi.png", f"{serving}/",
             "document.body.innerText.includes('/predict_batch')", None),
        ]  # fmt: skip
        failed: dict[str, str] = {}
        for name, url, ready, _ in shots:
            try:  # one page that does not draw must not cost the others
                page.goto(url, ready)
                if name.startswith("airflow-trigger"):
                    page.evaluate(_click_text("Trigger"))
                    page.wait("document.querySelector('[role=dialog]')", f"{name}: the form")
                sizes[name] = page.shot(out / name)
            except CtloopError as exc:
                failed[name] = str(exc)
                page.shot(out / f"failed-{name}")  # what the page showed instead
        if reports:
            local = registry.client.download_artifacts(
                reports[0].info.run_id, "drift_report.html", tempfile.mkdtemp()
            )
            page.goto(Path(local).resolve().as_uri(), "document.querySelector('img.plot')")
            sizes["drift-report.png"] = page.shot(out / "drift-report.png", height=1100)
        else:
            failed["drift-report.png"] = f"no run in the {view}-monitoring experiment"
    if failed:
        raise CtloopError(f"screenshots not taken: {failed}")
    too_big = {k: v for k, v in sizes.items() if v > MAX_PNG_BYTES}
    if too_big:
        raise CtloopError(f"screenshots over {MAX_PNG_BYTES} bytes: {too_big}")
    return sizes


@click.command("screenshots")
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs"), show_default=True,
              help="Folder the PNGs are written to.")  # fmt: skip
@click.option("--view", default="credit_score", show_default=True, help="The feature view.")
def main_command(out: Path, view: str) -> None:
    """Screenshot the stack's UIs (Airflow, MLflow, drift report, OpenAPI) into OUT."""
    from ctloop.dev.stack.config import resolve  # (b) developer tool

    stack = resolve()
    passwords = stack.passwords_file
    if not passwords.is_file():
        raise CtloopError(f"{passwords} is missing: run `make up` first")
    password = json.loads(passwords.read_text())["admin"]
    sizes = take(out, view, stack.airflow_url, stack.mlflow_url, stack.serving_url, password)
    for name, size in sizes.items():
        click.echo(f"{out / name}: {size:,} bytes")


def main() -> None:
    """Console entry: user errors print one line and exit 2."""
    run_command(main_command)


if __name__ == "__main__":
    sys.exit(main())
