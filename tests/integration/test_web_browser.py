"""The admin website in a real browser: headless Chromium signs in, opens the overview and a
failed job, clicks Retry, and the job is back in ``todo``. Screenshots go to the test's tmp_path.

Chromium is driven over the DevTools protocol with the small websocket client below (standard
library only), so the test needs no driver package. Debian's ``chromium`` is installed when
missing (root, ``apt-get`` under a timeout); where it cannot be, the test is skipped, saying why.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from werkzeug.serving import make_server

from cabbage.jobs import Status
from cabbage.web import create_app
from tests.integration.job_states import JobStates
from tests.waiting import wait_for

TOKEN = "browser-test-token"
APT_TIMEOUT_S = 600
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--remote-debugging-port=0",
]


def find_or_install_chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        installed = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"apt-get install chromium did not finish within {APT_TIMEOUT_S} s")
    if installed.returncode != 0 or not shutil.which("chromium"):
        last_line = (installed.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"apt-get install chromium failed: {last_line}")
    return shutil.which("chromium")  # type: ignore[return-value]


class DevTools:
    """One DevTools websocket session: send a command, wait for its answer (events are ignored)."""

    def __init__(self, websocket_url: str) -> None:
        url = urllib.parse.urlparse(websocket_url)
        self.socket = socket.create_connection((url.hostname, url.port), timeout=30)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.socket.sendall(
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self.socket.recv(1)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        self.next_id = 0

    def command(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            message = json.loads(self._receive())
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def _send(self, payload: bytes) -> None:
        header = bytes([0x81])  # FIN + text frame
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 2**16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = secrets.token_bytes(4)  # clients must mask every frame
        self.socket.sendall(header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload)))

    def _receive(self) -> bytes:
        message = b""
        while True:
            first, second = self._exactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._exactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(length)
            opcode = first & 0x0F
            if opcode == 0x9:  # ping: answer it and keep reading
                continue
            message += payload
            if first & 0x80:  # FIN: the message is whole
                return message

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the websocket")
            data += chunk
        return data

    def close(self) -> None:
        self.socket.close()


class Browser:
    """A headless Chromium with one page, driven through DevTools."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and len(port_file.read_text().split()) == 2, 30, "Chromium's DevTools port")
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(target for target in targets if target["type"] == "page")
        self.devtools = DevTools(page["webSocketDebuggerUrl"])
        self.devtools.command("Page.enable")

    def open(self, url: str) -> None:
        self.devtools.command("Page.navigate", url=url)
        self.wait_until_loaded(urllib.parse.urlparse(url).path)

    def wait_until_loaded(self, path: str) -> None:
        wait_for(
            lambda: self.devtools.evaluate("location.pathname + ' ' + document.readyState") == f"{path} complete",
            15, f"the page {path} to load",
        )

    def text(self) -> str:
        return self.devtools.evaluate("document.body.innerText")

    def settled(self, expression: str) -> Any:
        """``expression`` on a loaded page; None while a navigation replaces the document."""
        try:
            return self.devtools.evaluate(f"document.readyState === 'complete' && ({expression})")
        except AssertionError:  # the old document's context went away mid-call
            return None

    def click_and_wait_for_the_next_page(self, selector: str) -> None:
        """Clicks, then waits until a new document (without this one's mark) has loaded."""
        self.devtools.evaluate("window.clickedHere = true")
        self.click(selector)
        wait_for(lambda: self.settled("!window.clickedHere"), 15, f"the page after clicking {selector}")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, as a person would."""
        box = self.devtools.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for event in ("mousePressed", "mouseReleased"):
            self.devtools.command("Input.dispatchMouseEvent", type=event, x=box[0], y=box[1], button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.devtools.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.devtools.command("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.devtools.command("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.devtools.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = find_or_install_chromium()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    started = Browser(executable, profile)
    yield started
    started.close()


@pytest.fixture
def site(db_dsn: str) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(db_dsn, token=TOKEN), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.timeout(120)
def test_sign_in_see_the_overview_and_retry_a_failed_job(browser, site, db_dsn, tmp_path):
    jobs = JobStates.open(db_dsn)
    for _ in range(3):
        jobs.succeeded("tasks.write_alphabet")
    jobs.todo("tasks.write_alphabet", lock="/tmp/alphabet.txt")
    failed = jobs.failed("tasks.crash", args=("<b>not bold</b>",))

    browser.open(f"{site}/login?next=/jobs/{failed}")
    browser.type_into("#token", TOKEN)
    browser.click_and_wait_for_the_next_page("#sign-in")
    browser.wait_until_loaded(f"/jobs/{failed}")

    browser.open(f"{site}/")
    overview = browser.text()
    assert "Finished per minute, last hour (4 jobs)" in overview
    assert browser.devtools.evaluate("document.querySelectorAll('svg.chart rect').length") >= 2
    browser.screenshot(tmp_path / "overview.png")

    browser.open(f"{site}/jobs/{failed}")
    page = browser.text()
    assert f"Job #{failed} failed" in page and "RuntimeError: boom" in page
    assert "<b>not bold</b>" in page  # shown as text, not markup
    browser.click_and_wait_for_the_next_page("#retry")
    browser.wait_until_loaded(f"/jobs/{failed}")
    page = browser.text()
    assert f"job {failed} retried" in page and f"Job #{failed} todo" in page
    shot = browser.screenshot(tmp_path / "job-retried.png")

    assert jobs.status_of(failed) is Status.TODO
    assert shot.stat().st_size > 10_000
    print(f"screenshots: {tmp_path / 'overview.png'}, {shot}")
    jobs.close()
