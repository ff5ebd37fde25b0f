"""The overlay end to end: a real headless Chromium plays the product's own clips.

The clips are made by the product's own parts: the built-in persona's eSpeak voice, the
sprite's timeline and layer atlas, and for the video path the sprite renderer's H.264 MP4s.
What is asserted is read from the page: its playback log records when each sentence's speech
was scheduled to start and end on the audio clock, what the canvas drew, the captions as the
DOM showed them, and the page's own reports. Screenshots go to a temporary folder only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from lipcast.benchmarks.page import CHROMIUM_ARGS
from lipcast.commands.overlay import OverlayLine, publish_line, render_lines
from lipcast.config import Settings, load_secrets, parse_settings
from lipcast.wiring import build_clip_renderer, persona_atlas, persona_from_settings
from lipsync.atlas import Atlas
from obs_overlay.events import PageOptions, PlaybackReport
from obs_overlay.server import OverlayServer

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
MAX_VIDEO_GAP_MS = 100.0
MAX_SENTENCE_GAP_MS = 20.0
LINES = (
    "Hey Ada, good question!",
    "I draw every sentence live, in time with my voice.",
    "And then I go back to idling.",
)
TOKEN = "test-overlay-token-5b1e"


def _missing(what: str) -> None:
    """Skip on a developer's machine; fail under CI, which must have the browser."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI must run the overlay's browser tests")
    pytest.skip(what)


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        _missing("chromium is not installed (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing('playwright is not installed (pip install -e ".[dev]")')
    assert path is not None
    return path


class Product:
    """The built-in persona's clips and atlas, made once by the product's own parts."""

    def __init__(self) -> None:
        self.settings: Settings = parse_settings({"render": {"size": 256}}, source="test")
        self.persona = persona_from_settings(self.settings, "cohost")
        atlas = persona_atlas(self.settings, self.persona)
        assert isinstance(atlas, Atlas)
        self.atlas = atlas
        self.sprite, self.video, self.long = asyncio.run(self._render())

    async def _render(self) -> tuple[list[OverlayLine], list[OverlayLine], list[OverlayLine]]:
        clips = build_clip_renderer(self.settings, load_secrets(None))
        try:
            sprite = await render_lines(clips, self.persona, LINES)
            video = await render_lines(clips, self.persona, LINES[:2], video=True)
            long = await render_lines(
                clips,
                self.persona,
                [f"This is sentence {n}, long enough to be cut short by a skip." for n in (1, 2)],
            )
        finally:
            await clips.tts.aclose()
        return sprite, video, long


@pytest.fixture(scope="module")
def product() -> Product:
    return Product()


@pytest.fixture
def user_data_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lipcast-chromium-") as folder:
        yield folder


@pytest.fixture
async def browser_page(user_data_dir: str) -> AsyncIterator[Any]:
    executable = _chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir,
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 480, "height": 360},
        )
        page = context.pages[0] if context.pages else await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        try:
            yield page
        finally:
            await context.close()
        assert not errors, f"JavaScript errors on the overlay page: {errors}"


async def drained(server: OverlayServer, within_s: float) -> bool:
    """Whether every published clip is played, skipped or dropped within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            await server.wait_drained()
    except TimeoutError:
        return False
    return True


async def _log(page: Any, event: str | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await page.evaluate("() => window.lipcastOverlay.log")
    return [e for e in entries if event is None or e["event"] == event]


async def _wait_count(page: Any, event: str, count: int, timeout_ms: int = 15000) -> None:
    await page.wait_for_function(
        "([event, count]) => window.lipcastOverlay"
        " && window.lipcastOverlay.log.filter(e => e.event === event).length >= count",
        arg=[event, count],
        timeout=timeout_ms,
    )


IDLE_SHOWN = """() => {
  const idle = document.getElementById("idle"), img = document.getElementById("idle-image");
  const clips = document.getElementById("clips");
  const breathing = img.getAnimations().some((a) => a.playState === "running");
  return !document.getElementById("stage").classList.contains("active")
    && getComputedStyle(idle).opacity === "1" && getComputedStyle(clips).opacity === "0"
    && !img.hidden && img.complete && img.naturalWidth > 0 && breathing;
}"""


# A clip on screen with its caption, the cross-fade from idle finished.
SHOWING_CLIP = """() => {
  const clips = document.getElementById("clips"), caption = document.getElementById("caption");
  return getComputedStyle(clips).opacity === "1" && getComputedStyle(caption).opacity === "1"
    && getComputedStyle(document.getElementById("idle")).opacity === "0";
}"""


async def _publish_turn(
    server: OverlayServer,
    turn_id: str,
    lines: list[OverlayLine],
    viewer: str = "ada",
    *,
    end: bool = True,
) -> list[str]:
    await server.turn_started(turn_id, viewer=viewer)
    ids = []
    for seq, line in enumerate(lines):
        clip_id = await publish_line(server, turn_id=turn_id, seq=seq, line=line, viewer=viewer)
        assert clip_id is not None
        ids.append(clip_id)
    if end:
        await server.turn_ended(turn_id)
    return ids


def _rounded(values: list[float]) -> list[float]:
    return [round(value, 1) for value in values]


def _rgba(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as shot:
        return np.asarray(shot.convert("RGBA"), dtype=np.int16)


PERSONA_SHOWN = "() => window.lipcastOverlay && window.lipcastOverlay.state().persona"


async def _screenshot(page: Any, folder: Path, name: str) -> np.ndarray:
    """The page as OBS composites it (saved), and what its canvas holds (returned).

    The persona is compared on the canvas itself: the caption and banner drawn over it while
    it talks are page furniture, not the persona.
    """
    png = await page.screenshot(omit_background=True)
    (folder / name).write_bytes(png)
    data = await page.evaluate("() => document.getElementById('persona').toDataURL('image/png')")
    return _rgba(base64.b64decode(data.split(",", 1)[1]))


def _outside_face(shot: np.ndarray, atlas: Atlas) -> np.ndarray:
    """The canvas's pixels that are not the persona's mouth or eyes (a boolean mask)."""
    mask = np.ones(shot.shape[:2], bool)
    regions = atlas.manifest["regions"]
    for x, y, w, h in [regions["mouth"], *regions["eyes"]]:
        mask[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] = False
    return mask


async def test_the_page_draws_the_persona_idle_then_three_sentences_then_idle(
    browser_page: Any, product: Product, tmp_path: Path
) -> None:
    page = browser_page
    reports: list[PlaybackReport] = []
    async with OverlayServer(port=0, atlas=product.atlas, on_playback=reports.append) as server:
        await page.goto(f"{server.url}?motion=0")
        await _wait_count(page, "hello", 1)
        await page.wait_for_function(PERSONA_SHOWN, timeout=5000)
        await page.wait_for_timeout(100)
        idle = await _screenshot(page, tmp_path, "0-idle.png")
        shot = _rgba((tmp_path / "0-idle.png").read_bytes())
        # Transparent around the persona: OBS shows the scene there, no chroma key needed.
        assert shot[2, 2, 3] == 0 and shot[-3, 2, 3] == 0
        assert shot[shot.shape[0] // 2, shot.shape[1] // 2, 3] == 255

        ids = await _publish_turn(server, "turn-1", product.sprite)
        talking = []
        for number in (1, 2, 3):
            await _wait_count(page, "play", number)
            await page.wait_for_timeout(250)
            talking.append(await _screenshot(page, tmp_path, f"{number}-sentence.png"))
        await _wait_count(page, "ended", 3)
        await _wait_count(page, "idle", 1)
        after = await _screenshot(page, tmp_path, "4-idle.png")

        plays, ends = await _log(page, "play"), await _log(page, "ended")
        assert [p["clip_id"] for p in plays] == ids, "sentences did not play once each, in order"
        assert [e["clip_id"] for e in ends] == ids
        captions = await _log(page, "caption")
        gaps_ms = []
        for index, (play, end, line) in enumerate(zip(plays, ends, product.sprite, strict=True)):
            assert play["caption"] == line.caption and play["kind"] == "sprite"
            assert end["audioBytes"] == len(line.audio or b"")
            played_s = end["audioEnd"] - end["audioStart"]
            assert played_s == pytest.approx(line.duration_s, abs=0.01)
            # Drawn at the display's rate while it spoke, its mouth opening with the voice.
            assert end["framesDrawn"] >= line.duration_s * 20
            assert end["maxLevel"] >= 6
            shown = [c for c in captions if play["t"] - 50 <= c["t"] <= end["t"] and c["text"]]
            assert shown and all(c["text"] == line.caption for c in shown)
            if index:
                gaps_ms.append((play["audioStart"] - ends[index - 1]["audioEnd"]) * 1000)
        print(f"gaps between sentences on the audio clock (ms): {_rounded(gaps_ms)}")
        assert all(0 <= gap <= MAX_SENTENCE_GAP_MS for gap in gaps_ms), gaps_ms
        assert [(r.kind, r.seq) for r in reports] == [
            (kind, seq) for seq in range(3) for kind in ("started", "ended")
        ]
        assert await drained(server, 2)
        assert server.queue_length == 0 and server.replies_waiting == 0

    # Idle before and after is the same drawing; talking differs from it only in the face.
    outside = _outside_face(idle, product.atlas)
    assert np.abs(after - idle)[outside].mean() <= 1.0
    for shot in talking:
        assert np.abs(shot - idle)[outside].mean() <= 2.0
        assert shot[2, 2, 3] == 0, "the background stayed transparent while talking"
    assert any(np.abs(shot - idle)[~outside].mean() > 1.0 for shot in talking), "no mouth moved"


async def test_skip_and_clear_act_on_the_reply_on_air_while_the_next_one_renders(
    browser_page: Any, product: Product
) -> None:
    page = browser_page
    options = PageOptions(hold_ms=300)
    async with OverlayServer(
        port=0, control_token=TOKEN, options=options, atlas=product.atlas
    ) as server:
        await page.goto(server.url)
        await _wait_count(page, "hello", 1)
        await page.wait_for_function(PERSONA_SHOWN, timeout=5000)

        # Skip: the reply on air stops at once; the one rendered meanwhile plays next, whole.
        await _publish_turn(server, "skip-me", product.long, end=False)
        await _wait_count(page, "play", 1)
        after = await _publish_turn(server, "after-skip", product.sprite[:1], viewer="bob")
        assert server.on_air == "skip-me"
        await _control(server, "skip")
        await _wait_count(page, "play", 2)
        plays = await _log(page, "play")
        assert [p["turn_id"] for p in plays] == ["skip-me", "after-skip"]
        assert plays[1]["t"] - plays[0]["t"] < 1500, "skip did not cut the sentence short"
        await _wait_count(page, "ended", 1)
        assert (await _log(page, "ended"))[-1]["clip_id"] == after[0]
        assert await drained(server, 3)
        assert await server.publish_clip(turn_id="skip-me", seq=5, mp4=b"x", caption="") is None

        # Clear while a reply is on air: the waiting one goes, the one on air plays to its end.
        on_air = await _publish_turn(server, "keep-me", product.long[:1])
        await _wait_count(page, "play", 3)
        await _publish_turn(server, "waiting", product.sprite[:1], viewer="eve")
        await _control(server, "clear")
        await _wait_count(page, "ended", 2)
        await _wait_count(page, "idle", 2)
        await page.wait_for_timeout(300)
        assert [p["turn_id"] for p in await _log(page, "play")][-1] == "keep-me"
        assert (await _log(page, "ended"))[-1]["clip_id"] == on_air[0]
        assert server.queue_length == 0 and server.is_cancelled("waiting")

        # Pause holds the persona's speech where it is; resume carries on from there.
        await _publish_turn(server, "pause-me", product.long[:1])
        await _wait_count(page, "play", 4)
        await _control(server, "pause")
        await _wait_count(page, "pause", 1)
        clock = "() => window.lipcastOverlay.state().audio"
        assert await page.evaluate(clock) == "suspended"
        await page.wait_for_timeout(400)
        await _control(server, "resume")
        await _wait_count(page, "ended", 3)
        ended = (await _log(page, "ended"))[-1]
        assert ended["turn_id"] == "pause-me"
        pauses = await _log(page, "pause"), await _log(page, "resume")
        wall_s = (ended["t"] - (await _log(page, "play"))[-1]["t"]) / 1000
        held_s = (pauses[1][-1]["t"] - pauses[0][-1]["t"]) / 1000
        assert wall_s == pytest.approx(product.long[0].duration_s + held_s, abs=0.3)


async def test_video_clips_play_gaplessly_and_recover_after_restart(
    browser_page: Any, product: Product
) -> None:
    """A video renderer's clips (here the sprite renderer's own MP4s) without an atlas."""
    page = browser_page
    idle_image = product.persona.avatar_path
    server = OverlayServer(port=0, idle_image=idle_image)
    await server.start()
    port = server.port
    try:
        await page.goto(server.url)
        await _wait_count(page, "hello", 1)
        await page.wait_for_function(IDLE_SHOWN, timeout=5000)
        clip_ids = await _publish_turn(server, "turn-1", product.video)
        await page.wait_for_function(SHOWING_CLIP, timeout=5000)
        await _wait_count(page, "ended", 2)
        await page.wait_for_function(IDLE_SHOWN, timeout=5000)
        plays, ends = await _log(page, "play"), await _log(page, "ended")
        assert [p["clip_id"] for p in plays] == clip_ids
        assert all(e["hasAudio"] and e["audioBytes"] > 0 and e["videoFrames"] > 0 for e in ends)
        gap = plays[1]["t"] - ends[0]["t"]
        assert 0 <= gap <= MAX_VIDEO_GAP_MS, gap
        assert (await _log(page, "audio-route"))[0]["route"] == "webaudio"
    finally:
        await server.stop()

    # The server restarts on the same port: the page reconnects by itself.
    await _wait_count(page, "disconnected", 1)
    server = OverlayServer(port=port, idle_image=idle_image)
    await server.start()
    try:
        await _wait_count(page, "hello", 2, timeout_ms=10000)
        # A pipeline that re-sends the old reply must not make the page repeat it.
        await _publish_turn(server, "turn-1", product.video)
        new_id = (await _publish_turn(server, "turn-2", product.video[:1], viewer="grace"))[0]
        await _wait_count(page, "play", 3)
        await _wait_count(page, "ended", 3)
        plays = await _log(page, "play")
        assert [p["clip_id"] for p in plays] == [*clip_ids, new_id]
        assert len(await _log(page, "duplicate")) == 2
        assert await drained(server, 2), "the re-sent clips stay queued on the server"
    finally:
        await server.stop()


async def _control(server: OverlayServer, action: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}control/{action}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        assert response.status == 200


async def test_a_video_clip_plays_while_it_is_still_being_encoded(
    browser_page: Any, product: Product
) -> None:
    """A video renderer's sentence streams as fragmented MP4 (about half a second a
    fragment, as the encoder makes them) into the page's Media Source."""
    from lipsync.encode import STREAM_MIME, EncodeOptions, encode_fragments
    from pipeline.jobs.render import avatar_for

    clips = build_clip_renderer(product.settings, load_secrets(None))
    try:
        speech = await clips.speak(LINES[1], product.persona)
    finally:
        await clips.tts.aclose()
    avatar = avatar_for(product.persona)
    fragments = await asyncio.to_thread(
        lambda: list(
            encode_fragments(
                clips.renderer.render(speech.samples, speech.sample_rate, avatar),
                speech.samples,
                speech.sample_rate,
                EncodeOptions(),
            )
        )
    )
    assert len(fragments) >= 4, "the clip did not come out in pieces"
    reports: list[PlaybackReport] = []
    async with OverlayServer(port=0, on_playback=reports.append) as server:
        await page_ready(browser_page, server)
        await server.turn_started("streamed", viewer="ada")
        clip_id = await server.open_stream(
            turn_id="streamed", seq=0, caption=LINES[1], mime=STREAM_MIME, viewer="ada"
        )
        assert clip_id is not None
        for fragment in fragments:  # a renderer that takes a while over each half second
            assert await server.append_stream(clip_id, fragment)
            await asyncio.sleep(0.25)
        finished_at = time.monotonic()
        await server.end_stream(clip_id)
        await server.turn_ended("streamed")
        await _wait_count(browser_page, "ended", 1, timeout_ms=20000)
        started = next(r for r in reports if r.kind == "started")
        assert started.at < finished_at - 0.5, "the page waited for the whole clip"
        end = (await _log(browser_page, "ended"))[0]
        assert end["hasAudio"] and end["audioBytes"] > 0
        assert end["videoFrames"] >= round(speech.duration_s * 25) - 2
        assert end["mediaDuration"] == pytest.approx(speech.duration_s, abs=0.1)
        assert not await _log(browser_page, "stream-failed")
        # Once complete it is an ordinary clip: served whole, by range too.
        assert server.store.get(clip_id) == b"".join(fragments)


async def page_ready(page: Any, server: OverlayServer) -> None:
    await page.goto(server.url)
    await _wait_count(page, "hello", 1)


async def test_a_reply_that_cannot_begin_before_its_deadline_is_never_shown(
    browser_page: Any, product: Product
) -> None:
    """A reply waiting behind a long one past its deadline is dropped, not shown late."""
    page = browser_page
    reports: list[PlaybackReport] = []
    async with OverlayServer(port=0, atlas=product.atlas, on_playback=reports.append) as server:
        await page_ready(page, server)
        await page.wait_for_function(PERSONA_SHOWN, timeout=5000)
        await server.turn_started("long", viewer="ada", deadline=time.monotonic() + 30)
        await _publish_turn(server, "long", product.long)
        await _wait_count(page, "play", 1)
        # Rendered now, but it could only begin after the long reply: its deadline is sooner.
        await server.turn_started("late", viewer="bob", deadline=time.monotonic() + 0.5)
        await _publish_turn(server, "late", product.sprite[:1], viewer="bob")
        assert server.replies_waiting == 1
        await _wait_count(page, "ended", 2, timeout_ms=20000)
        await page.wait_for_timeout(800)
        assert [p["turn_id"] for p in await _log(page, "play")] == ["long", "long"]
        assert server.is_cancelled("late") and server.queue_length == 0
        assert all(r.turn_id != "late" or r.kind == "skipped" for r in reports)
        # The next reply, in time, plays as usual.
        await _publish_turn(server, "next", product.sprite[:1], viewer="eve")
        await _wait_count(page, "play", 3)
        assert (await _log(page, "play"))[-1]["turn_id"] == "next"


def test_bench_turn_reports_the_first_frame_shown_after_the_first_clip_is_ready(
    tmp_path: Path,
) -> None:
    import json
    import subprocess
    import sys

    chromium = _chromium()
    text = "Hello there, my friend. That is all for now."
    command = ["bench", "turn", "--turns", "1", "--text", text, "--chromium", chromium]
    done = subprocess.run(
        [sys.executable, "-m", "lipcast", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    # the page draws the reply's first talking frame once its first clip is ready, not before
    assert figures["first_clip_ready_s"] <= figures["first_frame_shown_s"]
    assert figures["first_frame_shown_after_last_token_s"] > 0
    assert figures["first_frame_shown_s"] < figures["last_clip_ready_s"] + figures["reply_audio_s"]
