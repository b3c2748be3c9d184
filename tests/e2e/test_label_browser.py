"""The labelling app in headless Chromium (Playwright + Debian's chromium) against a real server
process started by `threefold label serve`, killed and restarted in one test."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if CHROMIUM is None:
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium; scripts/setup.sh does it as root)",
                allow_module_level=True)

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, pairs: Path, k: int):
        self.db, self.pairs, self.k, self.port, self.proc = tmp / "labels.sqlite", pairs, k, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "label", "serve", str(self.pairs),
                                      "--db", str(self.db), "--k", str(self.k), "--port", str(self.port)], cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("label server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)  # no clean shutdown: durability must not depend on one
        self.proc.wait()

    def token(self, name: str) -> str:
        out = subprocess.run([sys.executable, "-m", "cluster.cli", "label", "add-annotator", name, "--db", str(self.db)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def labels(self) -> list[dict]:
        from rewards.human.store import LabelStore

        return LabelStore(self.db).labels()


@pytest.fixture
def server(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"id": "x", "prompt": "evil " + XSS, "response_a": XSS, "response_b": "<b>bold?</b> & fine"}]
    rows += [{"id": f"p{i}", "prompt": f"{i}+1=", "response_a": f"{i + 1}", "response_b": f"{i + 2}"} for i in range(4)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = Server(tmp_path, pairs, k=2)
    s.start()
    yield s
    if s.proc.poll() is None:
        s.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def sign_in(page, url, token):
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#signin-btn")


def progress(page):
    return page.text_content("#done"), page.text_content("#remaining")


def test_wrong_or_missing_token_is_refused(server, browser):
    page = browser.new_page()
    server.token("ann")
    for token in ("", "not-a-token"):
        sign_in(page, server.url, token)
        sync_api.expect(page.locator("#signin-error")).to_have_text("Unknown token: access refused.")
        assert page.is_hidden("#work") and page.text_content("#prompt") == ""
    page.close()


def test_label_by_click_and_keyboard_with_progress(server, browser):
    page = browser.new_page()
    sign_in(page, server.url, server.token("ann"))
    sync_api.expect(page.locator("#who")).to_have_text("ann")
    sync_api.expect(page.locator("#remaining")).to_have_text("5")
    page.fill("#reason", "left reads better")
    page.click("#btn-left")
    sync_api.expect(page.locator("#done")).to_have_text("1")
    for key, done in (("2", "2"), ("3", "3"), (" ", "4")):
        sync_api.expect(page.locator("#prompt")).to_have_text(f"{int(done) - 2}+1=")
        page.keyboard.press(key)
        sync_api.expect(page.locator("#done")).to_have_text(done)
    assert progress(page) == ("4", "1")
    got = [(r["pair_id"], r["choice"], r["reason"]) for r in server.labels()]
    assert [g[0] for g in got] == ["x", "p0", "p1", "p2"]
    assert [g[1] for g in got][2:] == ["tie", "skip"] and got[0][2] == "left reads better"
    # the click chose the left response, the key 2 the right one, whatever the random order
    left = {r["pair_id"]: r["left"] for r in server.labels()}
    assert got[0][1] == left["x"] and got[1][1] == ("B" if left["p0"] == "A" else "A")
    page.close()


def test_model_text_is_shown_as_text_and_runs_nothing(server, browser):
    page = browser.new_page()
    sign_in(page, server.url, server.token("ann"))
    sync_api.expect(page.locator("#prompt")).to_have_text("evil " + XSS)
    shown = {page.text_content("#left"), page.text_content("#right")}
    assert shown == {XSS, "<b>bold?</b> & fine"}
    page.wait_for_timeout(300)  # give an injected handler the chance to fire
    assert page.evaluate("window.pwned") is None
    assert page.locator("#pair img, #pair script, #pair b").count() == 0
    page.close()


def test_kill_and_restart_loses_no_label(server, browser):
    page = browser.new_page()
    sign_in(page, server.url, server.token("ann"))
    sync_api.expect(page.locator("#prompt")).to_have_text("evil " + XSS)
    page.keyboard.press("1")
    sync_api.expect(page.locator("#done")).to_have_text("1")
    before = page.text_content("#prompt")
    server.kill()
    server.start()
    page.reload()  # the token is kept in sessionStorage: signs in again by itself
    sync_api.expect(page.locator("#done")).to_have_text("1")
    assert page.text_content("#prompt") == before == "0+1="  # the labelled pair is not shown again
    page.keyboard.press("2")
    sync_api.expect(page.locator("#done")).to_have_text("2")
    assert [r["pair_id"] for r in server.labels()] == ["x", "p0"]
    page.close()
