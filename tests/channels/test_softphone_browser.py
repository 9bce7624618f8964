"""The browser softphone in a real headless Chromium: a fake microphone plays a real clip, the page
shows the caller's transcript and the turn's latency, and plays the agent's voice."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright

from switchboard.audio import read_wav, write_wav
from switchboard.stack import Stack
from switchboard.wer import wer
from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIP = "librivox-0870"
LEAD_IN_S = 5.0  # the greeting plays out before the caller speaks
TAIL_S = 10.0  # room for the answer before the fake microphone loops back to the clip
MAX_WER = 0.15


def fake_microphone(out_dir: Path) -> Path:
    """Chromium loops its fake capture file: silence, the clip, then a long pause for the agent's answer."""
    samples, rate = read_wav(SHARED_AUDIO / f"{CLIP}.wav")
    pause = [np.zeros(int(s * rate), np.int16) for s in (LEAD_IN_S, TAIL_S)]
    padded = np.concatenate([pause[0], samples, pause[1]])
    path = out_dir / f"fake-mic-{CLIP}.wav"
    write_wav(path, padded, rate)
    return path


@pytest.fixture
async def browser(channels_output: Path) -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    mic = fake_microphone(channels_output)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required",
        ])
        try:
            yield b
        finally:
            await b.close()


async def played_ms(page: Page) -> float:
    return float(await page.locator("#played-ms").get_attribute("data-ms") or 0)


async def test_softphone_shows_the_callers_transcript_and_latency_and_plays_the_agents_answer(
        stack: Stack, browser: Browser, channels_output: Path) -> None:
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        await page.goto(stack.client_credentials.softphone_url(stack.http_base))  # as `switchboard up` prints it
        await page.get_by_role("button", name="Call the agent").click()
        await page.get_by_role("status").filter(has_text="Connected").wait_for(timeout=10_000)

        caller_line = page.locator("#transcript li.caller:not(.partial) .text").first
        await caller_line.wait_for(timeout=30_000)
        heard = await caller_line.text_content() or ""
        reference = (SHARED_AUDIO / f"{CLIP}.txt").read_text()
        assert wer(reference, heard) <= MAX_WER, heard

        turn = await page.locator("#transcript li.caller").first.get_attribute("data-turn")
        answer = page.locator(f'#transcript li.agent[data-turn="{turn}"] .text')
        await answer.wait_for(timeout=15_000)
        assert (await answer.text_content() or "").strip(), "the agent's answer has no text"
        latency_row = page.locator(f'#latency tbody tr[data-turn="{turn}"]')
        await latency_row.wait_for(timeout=15_000)
        response_ms = await latency_row.locator("td").nth(1).text_content()
        assert response_ms and re.fullmatch(r"\d+", response_ms), response_ms

        before = await played_ms(page)  # the answer has started: its audio must now be played out
        await page.wait_for_function(
            f"Number(document.getElementById('played-ms').dataset.ms) >= {before + 1000}", timeout=15_000)
        await page.screenshot(path=str(channels_output / "softphone.png"), full_page=True)
        await page.get_by_role("button", name="Hang up").click()
        await page.get_by_role("status").filter(has_text="hung up").wait_for(timeout=5_000)
    except Exception:
        await page.screenshot(path=str(channels_output / "softphone-failure.png"), full_page=True)
        print("\n".join(console))
        raise
