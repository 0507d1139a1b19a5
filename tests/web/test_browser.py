"""The page in a real headless browser (Debian's chromium, driven by Playwright; issue 17, points 2 and 3): the
canvas shows the pixels of the daemon's own LED frames, "Next" and the brightness slider change the LEDs, a wrong
credential is refused, and a page of another origin cannot drive the device."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from .conftest import TOKEN, Face
from .test_api import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: reads, in one go (so they belong together), the frame number drawn and the colour at the centre of every LED
READ_CANVAS = """(display) => {
  const canvas = document.querySelector(`article[data-display="${display}"] canvas`);
  if (!canvas || !canvas.dataset.seq) return null;
  const p = Number(canvas.dataset.pitch);
  const w = canvas.width / p, h = canvas.height / p;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const rgb = [];
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = ((y * p + Math.floor(p / 2)) * canvas.width + x * p + Math.floor(p / 2)) * 4;
    rgb.push(data[i], data[i + 1], data[i + 2]);
  }
  return {seq: Number(canvas.dataset.seq), w, h, rgb};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (tests/run does)")
    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: tests/run installs it (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def canvas(page: Any) -> tuple[int, np.ndarray] | None:
    doc = page.evaluate(READ_CANVAS, "main")
    if doc is None:
        return None
    return doc["seq"], np.array(doc["rgb"], np.uint8).reshape(doc["h"], doc["w"], 3)


def test_the_canvas_shows_the_leds_pixels(face: Face, page: Any) -> None:
    face.daemon.play("main", "plasma")  # a picture where every LED differs, through GRB wiring, gamma and limiter
    page.goto(face.url)
    page.wait_for_selector("article[data-display=main] canvas[data-seq]")
    checked = 0
    for _ in range(50):
        seen = canvas(page)
        assert seen is not None
        seq, image = seen
        expected = face.image_of(seq)
        if expected is None:
            continue
        assert np.array_equal(image, expected), (seq, image[..., 0], expected[..., 0])
        checked += 1
        if checked >= 5 and len({tuple(image.reshape(-1))}) == 1:
            break
        page.wait_for_timeout(60)
    assert checked >= 5
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8  # a real picture, not one colour
    seqs = {canvas(page)[0] for _ in range(3) if not page.wait_for_timeout(150)}
    assert len(seqs) > 1  # live: frames keep coming
    assert page.locator("#plugins tbody tr[data-plugin=plasma]").count() == 1
    page.wait_for_function("document.querySelector('#sensors li') !== null")
    assert "distance_sensor: distance_m" in page.locator("#sensors").inner_text()


def centre(page: Any) -> np.ndarray:
    seen = canvas(page)
    assert seen is not None
    return seen[1][4, 4]


def test_next_and_the_brightness_slider_change_the_leds(face: Face, page: Any) -> None:
    page.goto(face.url)
    page.wait_for_selector("article[data-display=main] canvas[data-seq]")
    eventually(lambda: centre(page)[0] > 200 and face.latest()[..., 0].min() > 200)  # red
    page.click("article[data-display=main] button.next")
    eventually(lambda: face.latest()[..., 1].min() > 200 and face.latest()[..., 0].max() == 0)  # green on the LEDs
    eventually(lambda: centre(page)[1] > 200 and centre(page)[0] == 0)  # and on the page
    full = int(face.latest()[..., 1].max())
    page.locator("article[data-display=main] input.brightness").fill("40")
    eventually(lambda: face.daemon.display_state("main")["brightness"] == 40)
    eventually(lambda: 0 < face.latest()[..., 1].max() < full / 2)  # the LEDs dimmed
    eventually(lambda: 0 < centre(page)[1] < full / 2)  # and so does the page
    page.locator("article[data-display=main] input.power").uncheck()
    eventually(lambda: not face.latest().any() and not centre(page).any())
    assert page.locator("#message").inner_text() == ""


class _Attacker(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><body><form id=f method=post action="{self.target}/api/displays/main/power"
          enctype="text/plain"><input name='{{"on": false, "x": "' value='"}}'></form><script>
          fetch("{self.target}/api/displays/main/power", {{method: "POST", credentials: "include", mode: "no-cors",
            headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{on: false}})}})
            .finally(() => document.getElementById("f").submit());
        </script></body>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_wrong_credential_is_refused_and_other_sites_cannot_drive_the_device(
    start_face: Callable[..., Face], page: Any
) -> None:
    face = start_face(bind="0.0.0.0")
    page.goto(face.url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "not-the-credential")
    page.click("#login-form button")
    page.wait_for_function("document.querySelector('#message').textContent.includes('wrong credential')")
    assert page.locator("article[data-display=main]").count() == 0  # nothing shown without the credential
    assert page.context.cookies() == []
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector("article[data-display=main] canvas[data-seq]")
    assert page.locator("#login").is_hidden()
    page.locator("article[data-display=main] input.brightness").fill("90")
    eventually(lambda: face.daemon.display_state("main")["brightness"] == 90)  # with the session and its CSRF token

    # a page of another origin, in the same browser (which holds the session cookie), tries to switch the LEDs off
    _Attacker.target = face.url
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        other = page.context.new_page()
        other.goto(f"http://localhost:{evil.server_address[1]}/")
        other.wait_for_load_state("load")
        other.wait_for_timeout(1500)
    finally:
        evil.shutdown()
    assert face.daemon.display_state("main")["power"] is True
    assert face.latest().any()
