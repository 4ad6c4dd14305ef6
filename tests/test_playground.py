"""The browser playground at ``/``, driven in a real headless Chromium (Debian's package, via Playwright)
against a real server with the tiny model; plus ``GET /v1/status``."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import playwright.async_api as playwright_api
import pytest

from server.core.settings import Settings
from tests.audio import EN_TRANSCRIPT, encode, english_clip
from tests.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        # A fake microphone (a beep) that needs no permission prompt, for the recording test.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
OUT = Path(__file__).resolve().parent.parent / "out"
TWO_SENTENCES = "Hello there, how are you. This is a second sentence that is long enough to be its own chunk."
TIMEOUT_MS = 30_000

def _require_chromium() -> None:
    """Debian's chromium is what `make tools` installs; missing, the browser tests fail rather than skip."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (run `make tools`)"


@dataclasses.dataclass
class Tab:
    page: Any
    console_errors: list[str]
    foreign_requests: list[str]
    """Requests to anything but the server under test (the page must work offline)."""

    async def js(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def wait_for(self, expression: str) -> None:
        """Poll ``expression`` until it holds. Not ``wait_for_function``: that evaluates its predicate with
        ``eval`` inside the page, which the page's Content-Security-Policy (rightly) refuses."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not await self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    async def speak(self, text: str, voice: str = "default", steps: int = 4, seed: int = 7) -> dict[str, Any]:
        """Fill the form, press Speak, wait for audio_end; returns that request's counters."""
        await self.page.fill("#text", text)
        await self.page.select_option("#voice", voice)
        await self.page.fill("#steps", str(steps))
        await self.page.fill("#seed", str(seed))
        before = await self.js("Object.keys(window.playground.requests).length")
        await self.page.click("#speak")
        await self.wait_for(f"Object.values(window.playground.requests).length > {before} && "
                            "Object.values(window.playground.requests).at(-1).state !== 'waiting' && "
                            "Object.values(window.playground.requests).at(-1).state !== 'streaming'")
        return await self.last_request()

    async def choose(self, voice: str, steps: int) -> None:
        """Wait for ``voice`` to be listed, then pick it and the step count."""
        await self.wait_for(f"window.playground.voices.includes('{voice}')")
        await self.page.select_option("#voice", voice)
        await self.page.fill("#steps", str(steps))

    async def last_request(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.js(
            "(() => { const r = Object.values(window.playground.requests).at(-1);"
            " return {state: r.state, samplesScheduled: r.samplesScheduled, framesReceived: r.framesReceived,"
            " firstScheduledAt: r.firstScheduledAt, audioEndAt: r.audioEndAt, audioEnd: r.audioEnd,"
            " errors: window.playground.errors}; })()")
        return result


OpenTab = Callable[..., Awaitable[Tab]]


@pytest.fixture
async def open_tab() -> AsyncIterator[OpenTab]:
    """Opens pages in one headless Chromium; the browser closes after the test."""
    _require_chromium()
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)

        async def open_page(live: LiveServer, width: int = 1280, height: int = 900) -> Tab:
            page = await browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            base, foreign = live.url("/"), []
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else foreign.append(r.url))
            await page.goto(base)
            tab = Tab(page, errors, foreign)
            await tab.wait_for("window.playground && (window.playground.status || window.playground.authFailed)")
            return tab

        try:
            yield open_page
        finally:
            await browser.close()


@pytest.mark.slow
async def test_page_loads_and_speak_streams(live_en: LiveServer, open_tab: OpenTab) -> None:
    tab = await open_tab(live_en)
    await tab.wait_for("window.playground.voices.includes('en')")
    assert await tab.page.inner_text("#ready") == "ready · tiny"
    req = await tab.speak(TWO_SENTENCES, voice="en")
    end = req["audioEnd"]
    assert req["state"] == "done" and req["errors"] == []
    assert end["chunks"] >= 2, end
    # Every PCM sample the server sent was scheduled for playback, and the first one long before the end.
    assert req["samplesScheduled"] == end["samples"] > 0
    assert req["framesReceived"] == end["frames"]
    assert req["firstScheduledAt"] < req["audioEndAt"]
    assert await tab.page.inner_text("#requests tbody tr:first-child td:nth-child(2)") == "done"
    async with tab.page.expect_download() as download_info:
        await tab.page.click("#download")
    wav = Path(await (await download_info.value).path()).read_bytes()
    assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * end["samples"]
    await tab.wait_for("window.playground.status.batches.recent_sizes.length > 0")
    OUT.mkdir(exist_ok=True)
    await tab.page.screenshot(path=str(OUT / "playground-desktop.png"), full_page=True)
    await tab.page.set_viewport_size({"width": 390, "height": 844})
    await tab.page.screenshot(path=str(OUT / "playground-390.png"), full_page=True)
    width = await tab.js("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width} px)"
    assert tab.console_errors == [] and tab.foreign_requests == []


@pytest.mark.slow
async def test_voice_uploaded_through_the_form(live: LiveServer, open_tab: OpenTab, tmp_path: Path) -> None:
    samples, rate = english_clip(1.0)
    clip = tmp_path / "me.wav"
    clip.write_bytes(encode(samples, rate))
    tab = await open_tab(live)
    await tab.page.fill("#voice-id", "mine")
    await tab.page.set_input_files("#voice-file", str(clip))
    await tab.page.fill("#voice-transcript", EN_TRANSCRIPT)
    await tab.page.click("#voice-upload")
    await tab.wait_for("window.playground.voices.includes('mine')")
    assert await tab.page.input_value("#voice") == "mine"  # selected after the upload
    req = await tab.speak("Hi. This is my voice.", voice="mine")
    assert req["state"] == "done" and req["samplesScheduled"] == req["audioEnd"]["samples"] > 0
    await tab.page.click("button[aria-label='Delete voice mine']")
    await tab.wait_for("!window.playground.voices.includes('mine')")
    assert tab.console_errors == []


@pytest.mark.slow
async def test_voice_recorded_from_the_microphone(live: LiveServer, open_tab: OpenTab) -> None:
    tab = await open_tab(live)
    await tab.page.fill("#voice-id", "mic")
    await tab.page.click("#record")
    await tab.wait_for("document.getElementById('record').getAttribute('aria-pressed') === 'true'")
    await tab.page.wait_for_timeout(1500)
    await tab.page.click("#record")  # stop: the page converts the recording to 24 kHz WAV
    await tab.wait_for("!document.getElementById('record-preview').hidden")
    await tab.page.fill("#voice-transcript", "Beep.")
    await tab.page.click("#voice-upload")
    await tab.wait_for("window.playground.voices.includes('mic')")
    voices = await (await tab.page.request.get(live.url("/v1/voices/mic"))).json()
    # ~1.5 s recorded; Chromium's fake microphone beeps between silences, and the silent edges are trimmed
    assert 0.3 <= voices["seconds"] < 3.0 and voices["transcript"] == "Beep."
    assert tab.console_errors == []


@pytest.mark.slow
async def test_cancel_stops_playback_and_the_socket_stays_usable(live_en: LiveServer, open_tab: OpenTab) -> None:
    tab = await open_tab(live_en)
    await tab.choose("en", steps=8)
    await tab.page.fill("#text", " ".join(f"Sentence number {i} is here." for i in range(6)))
    await tab.page.click("#speak")
    await tab.wait_for("window.playground.samplesScheduled > 0")
    await tab.page.focus("#text")
    await tab.page.keyboard.press("Escape")  # cancel from the keyboard
    cancelled = await tab.last_request()
    assert cancelled["state"] == "cancelled" and cancelled["audioEnd"] is None
    await tab.page.wait_for_timeout(300)
    assert (await tab.last_request())["samplesScheduled"] == cancelled["samplesScheduled"]
    req = await tab.speak("Still here.", voice="en")
    assert req["state"] == "done" and req["samplesScheduled"] == req["audioEnd"]["samples"] > 0
    assert tab.console_errors == []


@pytest.mark.slow
async def test_type_as_you_go(live_en: LiveServer, open_tab: OpenTab) -> None:
    tab = await open_tab(live_en)
    await tab.choose("en", steps=4)
    await tab.page.check("#live-mode")
    assert await tab.page.inner_text("#speak") == "End stream"
    await tab.page.type("#text", "Hello there. ", delay=5)
    # The sentence end alone starts synthesis: audio arrives while the stream is still open.
    await tab.wait_for("window.playground.samplesScheduled > 0")
    assert (await tab.last_request())["state"] == "streaming"
    await tab.page.type("#text", "And a little more", delay=5)
    await tab.page.keyboard.press("Control+Enter")  # End stream
    await tab.wait_for("Object.values(window.playground.requests).at(-1).state === 'done'")
    req = await tab.last_request()
    assert req["audioEnd"]["chunks"] >= 2
    assert req["samplesScheduled"] == req["audioEnd"]["samples"]
    assert len(await tab.js("Object.keys(window.playground.requests)")) == 1  # one stream, fed as typed
    assert tab.console_errors == []


@pytest.mark.slow
async def test_api_key(start_server: Callable[..., Awaitable[LiveServer]], test_settings: Settings,
                       open_tab: OpenTab) -> None:
    live = await start_server(dataclasses.replace(test_settings, api_key="s3cret"))
    tab = await open_tab(live)  # the page itself is public
    await tab.wait_for("window.playground.authFailed")
    assert "needs an API key" in await tab.page.inner_text("#message")
    await tab.page.fill("#api-key", "wrong")
    await tab.page.press("#api-key", "Tab")  # change event
    await tab.page.fill("#text", "Hello.")
    await tab.page.click("#speak")
    await tab.wait_for("Object.values(window.playground.requests).at(-1).state === 'failed'")
    message = await tab.page.inner_text("#message")
    assert "rejected the API key" in message and "401" in message
    OUT.mkdir(exist_ok=True)
    await tab.page.set_viewport_size({"width": 390, "height": 844})
    await tab.page.screenshot(path=str(OUT / "playground-wrong-key-390.png"))
    await tab.page.fill("#api-key", "s3cret")
    await tab.page.press("#api-key", "Tab")
    await tab.wait_for("!window.playground.authFailed && window.playground.status?.ready === true")
    req = await tab.speak("Hello.")
    assert req["state"] == "done" and req["samplesScheduled"] == req["audioEnd"]["samples"] > 0


@pytest.mark.slow
async def test_status_json(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(live.url("/v1/status")) as response:
            assert response.status == 200
            before = await response.json()
        async with session.ws_connect(live.ws_url) as ws:
            await ws.send_json({"type": "synthesize", "id": "s", "text": "Hi there.", "nfe_steps": 2, "seed": 1})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] == "audio_end":
                    break
        async with session.get(live.url("/v1/status")) as response:
            after = await response.json()
    assert before["ready"] is True and before["model"] == "tiny"
    assert set(before) >= {"ready", "queue", "inflight", "streams", "sockets", "batches", "ttfa_ms"}
    assert before["queue"] == {"depth": 0, "frames": 0, "running": 0}
    assert before["inflight"] == {"ws": 0, "http": 0, "runpod": 0}
    assert before["batches"]["recent_sizes"] == [] and before["ttfa_ms"]["recent"] == []
    assert after["batches"]["total"] >= 1 and after["batches"]["recent_sizes"] == [1.0]
    assert len(after["ttfa_ms"]["recent"]) == 1 and after["ttfa_ms"]["recent"][0] > 0


@pytest.mark.slow
async def test_status_needs_the_key_and_the_page_does_not(start_server: Callable[..., Awaitable[LiveServer]],
                                                          test_settings: Settings) -> None:
    live = await start_server(dataclasses.replace(test_settings, api_key="s3cret"))
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/playground/app.js", "/playground/style.css"):
            async with session.get(live.url(path)) as response:
                assert response.status == 200, path
        async with session.get(live.url("/v1/status")) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        async with session.get(live.url("/v1/status"), headers={"Authorization": "Bearer s3cret"}) as response:
            assert response.status == 200
        async with session.get(live.url("/playground/../../app.py")) as response:
            assert response.status in (403, 404)


async def test_page_and_assets_carry_security_headers(live: LiveServer) -> None:
    """A page that holds an API key: nothing but its own script runs, nothing is sniffed, it is never
    framed. (The browser tests above run under this policy and fail on any console error it would raise.)"""
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/playground/app.js", "/playground/style.css", "/playground/missing.js"):
            async with session.get(live.url(path)) as response:
                policy = response.headers.get("Content-Security-Policy", "")
                assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
                assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
                assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        async with session.get(live.url("/v1/voices")) as response:  # the API is not a page
            assert "Content-Security-Policy" not in response.headers
