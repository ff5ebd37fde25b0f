"""The overlay server over real HTTP and WebSocket: protocol, control, security, binding.

Requests go over real sockets to a real server; paths that must not be normalised by a
client are sent as raw bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from lipcast.cli import Context
from lipcast.commands import COMMANDS
from lipcast.commands import overlay as overlay_command
from lipcast.config import Secrets, Settings, load_secrets, parse_settings
from lipcast.wiring import build_clip_renderer, build_overlay_server, persona_from_settings
from lipsync.atlas import Atlas
from obs_overlay.clip_store import ClipStore
from obs_overlay.events import PROTOCOL, PlaybackReport
from obs_overlay.server import OverlayError, OverlayServer, is_loopback_host
from pipeline.errors import ConfigError, InputError, LipcastError

REPO = Path(__file__).resolve().parent.parent
IDLE_IMAGE = REPO / "tests" / "assets" / "face-astronaut.png"
TOKEN = "s3cret-overlay-token-for-tests"
CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4  # served as is, never parsed


@pytest.fixture
async def server() -> AsyncIterator[OverlayServer]:
    async with OverlayServer(port=0, control_token=TOKEN, idle_image=IDLE_IMAGE) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def drained(server: OverlayServer, within_s: float) -> bool:
    """Whether every published clip is played, skipped or dropped within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            await server.wait_drained()
    except TimeoutError:
        return False
    return True


async def raw_get(server: OverlayServer, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalisation or quoting)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode("latin-1"))
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def next_event(ws: aiohttp.ClientWebSocketResponse, kind: str | None = None) -> Any:
    while True:
        message = await asyncio.wait_for(ws.receive_json(), 5)
        if kind is None or message["type"] == kind:
            return message


async def connect_page(
    http: aiohttp.ClientSession, server: OverlayServer
) -> aiohttp.ClientWebSocketResponse:
    """A page connection that has had its welcome (hello, backlog, queue) and gets events."""
    pages = server.connected_pages
    ws = await http.ws_connect(f"{server.url}ws")
    await next_event(ws, "queue")
    for _ in range(100):
        if server.connected_pages > pages:
            return ws
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not register the page")


async def publish(server: OverlayServer, turn_id: str, seq: int, **extra: Any) -> str:
    clip_id = await server.publish_clip(
        turn_id=turn_id, seq=seq, mp4=CLIP, caption=f"{turn_id} {seq}", **extra
    )
    assert clip_id is not None
    return clip_id


# ---------------------------------------------------------------- page, assets, clips


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8765", "10.0.0.5"])
async def test_a_loopback_overlay_refuses_other_host_names(
    server: OverlayServer, http: aiohttp.ClientSession, host: str
) -> None:
    """A rebinding page reaches 127.0.0.1 under its own name; its requests are refused."""
    for path in ("", "healthz", "ws"):
        async with http.get(f"{server.url}{path}", headers={"Host": host}) as response:
            assert response.status == 421
    async with http.get(server.url, headers={"Host": "localhost"}) as response:
        assert response.status == 200


async def test_page_and_assets_are_served(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.url) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "{{ASSETS}}" not in page and 'src="overlay.js?v=' in page
    for name, kind in (("overlay.js", "text/javascript"), ("overlay.css", "text/css")):
        async with http.get(f"{server.url}{name}") as response:
            assert response.status == 200 and response.content_type == kind
    async with http.get(f"{server.url}overlay.css") as response:
        assert "background: transparent" in await response.text()
    async with http.get(f"{server.url}idle/image") as response:
        assert response.status == 200 and response.content_type == "image/png"
        assert await response.read() == IDLE_IMAGE.read_bytes()
    async with http.get(f"{server.url}idle/video") as response:
        assert response.status == 404
    async with http.get(f"{server.url}healthz") as response:
        assert (await response.json())["protocol"] == PROTOCOL


async def test_an_idle_video_wins_over_the_image(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    loop_clip = tmp_path / "idle.mp4"
    loop_clip.write_bytes(CLIP)
    async with OverlayServer(port=0, idle_image=IDLE_IMAGE, idle_video=loop_clip) as server:
        async with http.ws_connect(f"{server.url}ws") as ws:
            idle = (await next_event(ws, "hello"))["idle"]
        assert idle["image"].startswith("/idle/image?v=")
        assert idle["video"].startswith("/idle/video?v=")
        async with http.get(f"{server.url}{idle['video'][1:]}") as response:
            assert response.status == 200 and response.content_type == "video/mp4"
            assert await response.read() == CLIP
        async with http.get(f"{server.url}idle/video", headers={"Range": "bytes=0-3"}) as response:
            assert response.status == 206 and await response.read() == CLIP[:4]


async def test_clips_are_served_whole_and_by_range(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    clip_id = await publish(server, "t1", 0)
    url = f"{server.url}clips/{clip_id}.mp4"
    async with http.get(url) as response:
        assert response.status == 200 and response.content_type == "video/mp4"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert await response.read() == CLIP
    cases = {"bytes=0-9": (0, 9), "bytes=100-": (100, len(CLIP) - 1), "bytes=-16": (-16, None)}
    for header, (start, end) in cases.items():
        async with http.get(url, headers={"Range": header}) as response:
            assert response.status == 206
            body = await response.read()
            assert body == (CLIP[start : end + 1] if end is not None else CLIP[start:])
            assert response.headers["Content-Range"].endswith(f"/{len(CLIP)}")
    async with http.get(url, headers={"Range": f"bytes={len(CLIP)}-"}) as response:
        assert response.status == 416
    async with http.get(url, headers={"Range": "bytes=0-1,4-5"}) as response:
        assert response.status == 200 and await response.read() == CLIP


@pytest.mark.parametrize(
    "target",
    [
        "/clips/../pyproject.toml",
        "/clips/../../../../etc/passwd",
        "/clips/..%2F..%2Fpyproject.toml",
        "/clips/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/clips/%2Fetc%2Fpasswd",
        "/clips//etc/passwd",
        "//etc/passwd",
        "/clips/%2F%2Fetc%2Fpasswd.mp4",
        "/clips/abcdefgh%00.mp4",
        "/clips/C:%5CWindows%5Cwin.ini",
        "/clips/..%5C..%5Cpyproject.toml",
        "/clips/%c3%a4bcdefghij.mp4",
        "/clips/" + "a" * 300 + ".mp4",
        "/clips/abcdefghij",
        "/clips/abcdefghij.mp4.mp4",
        "/clips/unknown-but-well-formed.mp4",
        "/static/../pyproject.toml",
        "/overlay.js/../../pyproject.toml",
        "/idle/image/..%2F..%2Fpyproject.toml",
        "/idle/..%2F..%2F..%2Fetc%2Fpasswd",
        "/obs_overlay/server.py",
        "/static/overlay.js",
    ],
)
async def test_junk_paths_and_clip_ids_never_read_a_file(
    server: OverlayServer, target: str
) -> None:
    await publish(server, "t1", 0)
    status, body = await raw_get(server, target)
    assert status in (400, 404)
    assert b"[project]" not in body and b"root:" not in body and b"import" not in body


async def test_malformed_clip_names_are_bad_requests(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    for name in ("short.mp4", "has.dot.in.it.mp4", "abcdefghij.webm", "abcdefghij"):
        async with http.get(f"{server.url}clips/{name}") as response:
            assert response.status == 400, name


# ---------------------------------------------------------------- control


async def test_control_is_refused_without_the_right_token(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}control/pause"
    refusals = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"X-Token": TOKEN},
    ]
    for headers in refusals:
        async with http.post(url, headers=headers) as response:
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(f"{url}?token={TOKEN}") as response:
        assert response.status == 401
    assert not server.paused
    async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 405


async def test_control_with_the_token_acts(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{server.url}control/pause", headers=headers) as response:
        assert response.status == 200
        assert await response.json() == {
            "ok": True,
            "action": "pause",
            "queue_length": 0,
            "paused": True,
        }
    assert server.paused
    async with http.post(f"{server.url}control/resume", headers=headers) as response:
        assert response.status == 200
    assert not server.paused
    async with http.post(f"{server.url}control/explode", headers=headers) as response:
        assert response.status == 404


async def test_control_is_disabled_without_a_configured_token(
    http: aiohttp.ClientSession,
) -> None:
    async with OverlayServer(port=0) as server:
        assert not server.control_enabled
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            async with http.post(f"{server.url}control/skip", headers=headers) as response:
                assert response.status == 403
                assert "LIPCAST_OVERLAY_TOKEN" in (await response.json())["error"]


async def test_the_token_never_reaches_the_log(
    server: OverlayServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (TOKEN, "wrong"):
        async with http.post(
            f"{server.url}control/skip", headers={"Authorization": f"Bearer {token}"}
        ):
            pass
    assert TOKEN not in caplog.text


# ---------------------------------------------------------------- binding


async def test_binds_loopback_by_default() -> None:
    async with OverlayServer(port=0) as server:
        assert server.addresses and all(host == "127.0.0.1" for host, _ in server.addresses)
    settings = Settings()
    assert settings.overlay.host == "127.0.0.1"
    async with build_overlay_server(settings, Secrets(), port=0) as server:
        assert [host for host, _ in server.addresses] == ["127.0.0.1"]
        assert is_loopback_host(server.host)
        assert server.url == f"http://127.0.0.1:{server.port}/"


async def test_binds_elsewhere_only_when_configured(caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_settings({"overlay": {"host": "0.0.0.0"}}, source="bot.toml")
    async with build_overlay_server(settings, Secrets(), port=0) as server:
        assert [host for host, _ in server.addresses] == ["0.0.0.0"]
        assert server.url.startswith("http://127.0.0.1:")
    assert "other machines can open the page" in caplog.text


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OverlayError, match=r"\[overlay\] port"):
            await OverlayServer(port=port).start()


def test_overlay_settings_are_validated() -> None:
    settings = parse_settings(
        {"overlay": {"port": 9000, "hold_ms": 500, "store_max_clips": 8}}, source="bot.toml"
    )
    assert settings.overlay.port == 9000 and settings.overlay.hold_ms == 500
    with pytest.raises(ConfigError, match="unknown key"):
        parse_settings({"overlay": {"prot": 1}}, source="bot.toml")
    with pytest.raises(ConfigError, match=r"overlay\.port"):
        parse_settings({"overlay": {"port": 70000}}, source="bot.toml")
    with pytest.raises(ConfigError, match=r"overlay\.host"):
        parse_settings({"overlay": {"host": "http://0.0.0.0/"}}, source="bot.toml")
    with pytest.raises(ConfigError, match="secret"):
        parse_settings({"overlay": {"token": "abc"}}, source="bot.toml")


def test_bad_idle_media_names_the_setting(tmp_path: Path) -> None:
    settings = parse_settings(
        {"overlay": {"idle_image": str(tmp_path / "missing.png")}}, source="bot.toml"
    )
    with pytest.raises(ConfigError, match=r"overlay\.idle_image"):
        build_overlay_server(settings, Secrets())
    (tmp_path / "idle.txt").write_text("not an image")
    with pytest.raises(OverlayError, match="idle image"):
        OverlayServer(idle_image=tmp_path / "idle.txt")


# ---------------------------------------------------------------- WebSocket protocol


async def test_page_protocol_and_queue_bookkeeping(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    reports: list[PlaybackReport] = []
    server._on_playback = reports.append
    async with http.ws_connect(f"{server.url}ws") as ws:
        hello = await next_event(ws, "hello")
        assert hello["protocol"] == PROTOCOL and hello["paused"] is False
        assert hello["idle"]["image"].startswith("/idle/image?v=")
        assert hello["idle"]["video"] is None
        assert hello["options"] == {
            "captions": True,
            "banner": True,
            "hold_ms": 1500,
            "motion": True,
        }
        assert hello["persona"] is None
        assert (await next_event(ws))["type"] == "queue"

        await server.turn_started("t1", viewer="@ada")
        assert await next_event(ws, "turn_started") == {
            "type": "turn_started",
            "turn_id": "t1",
            "viewer": "ada",
        }
        first = await publish(server, "t1", 0, duration_s=1.5)
        event = await next_event(ws, "clip")
        assert event["clip_id"] == first and event["url"] == f"/clips/{first}.mp4"
        assert event["kind"] == "video" and 19_000 < event["expires_in_ms"] <= 20_000
        assert (event["seq"], event["order"], event["viewer"]) == (0, 1, "ada")
        assert event["caption"] == "t1 0" and event["duration_s"] == 1.5
        assert await next_event(ws, "queue") == {"type": "queue", "replies_waiting": 1, "clips": 1}
        second = await publish(server, "t1", 1)
        await server.turn_ended("t1")
        assert await next_event(ws, "turn_ended") == {"type": "turn_ended", "turn_id": "t1"}

        await ws.send_json({"type": "started", "clip_id": first})
        while (state := await next_event(ws, "queue"))["replies_waiting"]:
            assert state == {"type": "queue", "replies_waiting": 1, "clips": 2}
        assert state == {"type": "queue", "replies_waiting": 0, "clips": 2}
        for clip_id in (first, second):
            await ws.send_json({"type": "ended", "clip_id": clip_id})
        assert await drained(server, 2)
        assert server.queue_length == 0 and server.replies_waiting == 0
    assert [(r.kind, r.turn_id, r.seq) for r in reports] == [
        ("started", "t1", 0),
        ("ended", "t1", 0),
        ("ended", "t1", 1),
    ]


async def test_a_page_that_connects_late_gets_the_backlog_in_order(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    await server.pause()
    ids = [await publish(server, "t1", seq) for seq in range(3)]
    assert server.queue_length == 3 and not await drained(server, 0.05)
    async with http.ws_connect(f"{server.url}ws") as ws:
        hello = await next_event(ws)
        assert hello["type"] == "hello" and hello["paused"] is True
        backlog = [await next_event(ws) for _ in ids]
        assert [(e["type"], e["clip_id"]) for e in backlog] == [("clip", i) for i in ids]
        assert (await next_event(ws))["type"] == "queue"
        assert server.connected_pages == 1


async def test_malformed_reports_are_ignored(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    clip_id = await publish(server, "t1", 0)
    async with http.ws_connect(f"{server.url}ws") as ws:
        for junk in (
            "not json",
            "[1, 2]",
            json.dumps({"type": "ended"}),
            json.dumps({"type": "explode", "clip_id": clip_id}),
            json.dumps({"type": "ended", "clip_id": 5}),
            json.dumps({"type": "ended", "clip_id": clip_id, "reason": "x" * 3000}),
        ):
            await ws.send_str(junk)
        await ws.send_bytes(b"\x00\x01")
        await ws.send_json({"type": "ended", "clip_id": "someone-elses-clip"})
        await ws.send_json({"type": "failed", "clip_id": clip_id, "reason": "decode error"})
        assert await drained(server, 2)
        assert not ws.closed


async def test_foreign_origins_cannot_open_the_websocket(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{server.url}ws", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    own = f"http://127.0.0.1:{server.port}"
    async with http.ws_connect(f"{server.url}ws", headers={"Origin": own}) as ws:
        assert (await next_event(ws))["type"] == "hello"


async def test_skip_stops_exactly_the_reply_on_air_and_refuses_its_later_clips(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    async with await connect_page(http, server) as ws:
        first = await publish(server, "t1", 0)
        await publish(server, "t1", 1)
        later = await publish(server, "t2", 0)  # renders while t1 still plays
        assert server.replies_waiting == 2 and server.on_air is None
        assert await server.skip() is None, "nothing is on air: a waiting reply is not skipped"
        assert not server.is_cancelled("t1") and not server.is_cancelled("t2")

        await ws.send_json({"type": "started", "clip_id": first})
        await next_event(ws, "queue")
        assert server.on_air == "t1" and server.replies_waiting == 1
        assert await server.skip() == "t1"
        assert await next_event(ws, "skip") == {
            "type": "skip",
            "turn_id": "t1",
            "reason": "skipped",
        }
        assert server.queue_length == 1 and server.is_cancelled("t1")
        assert not server.is_cancelled("t2") and server.on_air is None
        assert await server.publish_clip(turn_id="t1", seq=2, mp4=CLIP, caption="") is None
        await server.turn_started("t1")  # ignored: the turn is over
        assert server.replies_waiting == 1

        await server.turn_ended("t2")
        await ws.send_json({"type": "started", "clip_id": later})
        await ws.send_json({"type": "ended", "clip_id": later})
        assert await drained(server, 2)
        assert server.replies_waiting == 0 and server.on_air is None
        assert await server.skip() is None  # nothing on air, nothing waiting

        # Named by its id, a reply is skipped wherever it is, even before the overlay saw it.
        await server.turn_started("t3")
        assert await server.skip("t3") == "t3"
        assert await server.publish_clip(turn_id="t3", seq=0, mp4=CLIP, caption="") is None
        assert await server.skip("t4") is None
        assert await server.publish_clip(turn_id="t4", seq=0, mp4=CLIP, caption="") is None


async def test_clear_drops_exactly_the_replies_waiting_not_the_one_on_air(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    async with await connect_page(http, server) as ws:
        on_air = await publish(server, "t1", 0)
        await ws.send_json({"type": "started", "clip_id": on_air})
        await next_event(ws, "queue")
        await publish(server, "t1", 1)  # the reply on air's next sentence
        for turn in ("t2", "t3"):
            await publish(server, turn, 0)
        await server.turn_started("t4")
        assert await server.clear("t3") == ["t3"]
        assert await next_event(ws, "clear") == {"type": "clear", "turn_ids": ["t3"]}
        assert await server.clear("t1") == [], "the reply on air is not cleared"
        assert sorted(await server.clear()) == ["t2", "t4"]
        assert sorted((await next_event(ws, "clear"))["turn_ids"]) == []
        assert sorted((await next_event(ws, "clear"))["turn_ids"]) == ["t2", "t4"]
        assert server.on_air == "t1" and server.queue_length == 2 and server.replies_waiting == 0
        assert await server.publish_clip(turn_id="t1", seq=2, mp4=CLIP, caption="") is not None
        assert await server.publish_clip(turn_id="t2", seq=1, mp4=CLIP, caption="") is None
        answer = await server.control("clear")
        assert answer["dropped"] == 0 and answer["turn_ids"] == []


async def test_pause_and_resume_reach_the_page(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    async with await connect_page(http, server) as ws:
        assert (await server.control("pause"))["paused"] is True
        assert (await next_event(ws, "pause"))["type"] == "pause"
        await server.control("resume")
        assert (await next_event(ws, "resume"))["type"] == "resume"
        with pytest.raises(InputError):
            await server.control("explode")


async def test_a_reply_that_cannot_begin_by_its_deadline_is_never_shown(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with OverlayServer(port=0, start_deadline_s=0.2) as server:
        # Rendered while no page was open: by the time one opens, it is stale.
        await server.turn_started("stale", viewer="ada")
        await publish(server, "stale", 0)
        await asyncio.sleep(0.9)
        assert server.is_cancelled("stale") and server.queue_length == 0
        assert "could not begin within its deadline" in caplog.text
        assert await server.publish_clip(turn_id="stale", seq=1, mp4=CLIP, caption="") is None
        # A page that opens late starts from what is current: the reply announced now.
        await server.turn_started("fresh", deadline=time.monotonic() + 60)
        fresh = await publish(server, "fresh", 0)
        async with http.ws_connect(f"{server.url}ws") as ws:
            await next_event(ws, "hello")
            backlog = await next_event(ws)
            assert backlog["type"] == "clip" and backlog["clip_id"] == fresh
            assert backlog["expires_in_ms"] > 50_000
            assert (await next_event(ws))["type"] == "queue"
            await ws.send_json({"type": "started", "clip_id": fresh})
            await asyncio.sleep(0.2)
            # Once begun, a reply plays on past its deadline; its clips are not "waiting".
            second = await publish(server, "fresh", 1)
            event = await next_event(ws, "clip")
            assert event["clip_id"] == second and event["expires_in_ms"] is None
        # A second page joining mid-reply skips the clip already playing elsewhere.
        async with http.ws_connect(f"{server.url}ws") as ws:
            await next_event(ws, "hello")
            assert (await next_event(ws))["clip_id"] == second


async def test_playback_reports_carry_turn_seq_and_wall_time_once_per_clip(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    reports: list[PlaybackReport] = []
    server._on_playback = reports.append
    clip_id = await publish(server, "t1", 0)
    before = time.time()
    async with await connect_page(http, server) as one, await connect_page(http, server) as two:
        for page in (one, two):  # two pages show the same clip: "started" counts once
            await page.send_json({"type": "started", "clip_id": clip_id})
        await one.send_json({"type": "ended", "clip_id": clip_id})
        assert await drained(server, 2)
    assert [(r.kind, r.turn_id, r.seq) for r in reports] == [
        ("started", "t1", 0),
        ("ended", "t1", 0),
    ]
    assert all(before <= r.wall <= time.time() for r in reports)


SPRITE_TIMELINE = json.dumps(
    {
        "version": 1,
        "fps": 25,
        "start_frame": 0,
        "size": 256,
        "visemes": "0220",
        "openness": [0, 0.5, 0.6, 0],
        "levels": [0, 6, 7, 0],
        "blinks": {},
    }
).encode()


async def test_sprite_clips_carry_speech_and_timeline(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    pcm = bytes(range(256)) * 8
    async with await connect_page(http, server) as ws:
        clip_id = await server.publish_clip(
            turn_id="t1",
            seq=0,
            caption="hi",
            audio=pcm,
            sample_rate=22050,
            timeline=SPRITE_TIMELINE,
            duration_s=0.16,
        )
        event = await next_event(ws, "clip")
    assert event["kind"] == "sprite" and event["url"] is None
    assert event["audio_url"] == f"/clips/{clip_id}.pcm" and event["sample_rate"] == 22050
    assert event["timeline"]["levels"] == [0, 6, 7, 0]
    async with http.get(f"{server.url}clips/{clip_id}.pcm") as response:
        assert response.status == 200 and await response.read() == pcm
        assert response.content_type == "audio/pcm"
    async with http.get(f"{server.url}clips/{clip_id}.mp4") as response:
        assert response.status == 404

    # A persona switch reaches the page at once: the new atlas, served at a new address.
    layers = Atlas(key="persona-2", png=b"\x89PNG\r\n\x1a\n-bytes", manifest={"size": 256})
    async with await connect_page(http, server) as ws:
        await server.set_atlas(layers)
        event = await next_event(ws, "persona")
        assert event["manifest"] == {"size": 256} and event["atlas"].startswith("/persona/atlas")
        async with http.get(f"{server.url}{event['atlas'].lstrip('/')}") as response:
            assert response.status == 200 and await response.read() == layers.png
    for bad in (
        {"audio": pcm, "sample_rate": 22050, "timeline": b"{not json"},
        {"audio": pcm, "sample_rate": 22050, "timeline": b'{"fps": 25}'},
        {"audio": pcm[:-1], "sample_rate": 22050, "timeline": SPRITE_TIMELINE},
        {"audio": pcm, "sample_rate": 3, "timeline": SPRITE_TIMELINE},
        {"audio": pcm, "timeline": SPRITE_TIMELINE},
        {},
    ):
        with pytest.raises(InputError):
            await server.publish_clip(turn_id="t2", seq=0, caption="", **bad)


async def test_publish_validates_its_arguments(server: OverlayServer) -> None:
    for turn_id, seq in (("", 0), ("x" * 201, 0), ("t", -1), ("t", True)):
        with pytest.raises(InputError):
            await server.publish_clip(turn_id=turn_id, seq=seq, mp4=CLIP, caption="")
    with pytest.raises(InputError):
        await server.publish_clip(turn_id="t", seq=0, mp4=b"", caption="")


async def test_store_bounds_drop_unplayed_clips(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    store = ClipStore(max_clips=2, max_age_s=10, clock=lambda: now[0])
    async with OverlayServer(port=0, store=store, cleanup_interval_s=0.05) as server:
        for seq in range(3):
            await publish(server, "t1", seq)
        assert server.queue_length == 2 and len(store) == 2
        assert "dropped before a page played it" in caplog.text
        now[0] = 11.0
        for _ in range(100):
            if server.queue_length == 0:
                break
            await asyncio.sleep(0.02)
        assert server.queue_length == 0 and len(store) == 0
        assert await drained(server, 1)


async def test_stop_closes_pages_with_going_away(
    server: OverlayServer, http: aiohttp.ClientSession
) -> None:
    ws = await connect_page(http, server)
    await server.stop()
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    await ws.close()


# ---------------------------------------------------------------- the `lipcast overlay` command


def _context(token: str | None, port: int) -> Context:
    settings = parse_settings({"overlay": {"port": port}}, source="bot.toml")
    secrets = Secrets(overlay_token=SecretStr(token) if token else None)
    return Context(settings=settings, secrets=secrets, config_path=None)


def _args(action: str, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    overlay_command.add_arguments(parser)
    return parser.parse_args([action, *[f"--{k}={v}" for k, v in extra.items()]])


def test_the_command_is_registered() -> None:
    assert COMMANDS["overlay"] == "lipcast.commands.overlay"
    assert overlay_command.HELP


async def test_command_controls_a_running_overlay(
    server: OverlayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await publish(server, "t1", 0)
    code = await asyncio.to_thread(
        overlay_command.run, _args("clear"), _context(TOKEN, server.port)
    )
    assert code == 0 and server.queue_length == 0
    assert "action clear" in capsys.readouterr().out
    await asyncio.to_thread(overlay_command.run, _args("pause"), _context(TOKEN, server.port))
    assert server.paused

    with pytest.raises(LipcastError, match="refused the token"):
        await asyncio.to_thread(overlay_command.run, _args("clear"), _context("bad", server.port))
    with pytest.raises(ConfigError, match="LIPCAST_OVERLAY_TOKEN"):
        await asyncio.to_thread(overlay_command.run, _args("clear"), _context(None, server.port))


async def test_command_reports_a_disabled_or_absent_overlay() -> None:
    async with OverlayServer(port=0) as server:
        with pytest.raises(LipcastError, match="disabled"):
            await asyncio.to_thread(
                overlay_command.run, _args("skip"), _context(TOKEN, server.port)
            )
        port = server.port
    with pytest.raises(LipcastError, match="no overlay answers") as absent:
        await asyncio.to_thread(overlay_command.run, _args("skip"), _context(TOKEN, port))
    assert absent.value.transient


async def test_serve_runs_until_stopped_and_the_persona_says_the_demo(
    http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings()
    persona = persona_from_settings(settings, "cohost")
    server = build_overlay_server(settings, load_secrets(None), port=0, persona=persona)
    server._requested_port = 0
    clips = build_clip_renderer(settings, load_secrets(None))
    stop = asyncio.Event()
    serving = asyncio.create_task(
        overlay_command.serve(server, demo=clips, persona=persona, stop=stop)
    )
    for _ in range(200):
        if server.addresses:
            break
        await asyncio.sleep(0.02)
    async with http.ws_connect(f"{server.url}ws") as ws:
        hello = await next_event(ws, "hello")
        assert hello["persona"]["manifest"]["size"] == settings.render.size
        async with http.get(f"{server.url}{hello['persona']['atlas'].lstrip('/')}") as response:
            assert response.status == 200 and (await response.read())[1:4] == b"PNG"
        started = await asyncio.wait_for(next_event(ws, "turn_started"), 30)
        assert started["viewer"] == overlay_command.DEMO_VIEWER
        clip = await next_event(ws, "clip")
        # The real persona saying a real line: its voice and the frames of its mouth.
        assert clip["kind"] == "sprite" and persona.name in clip["caption"]
        assert max(clip["timeline"]["levels"]) >= 6
        async with http.get(f"{server.url}{clip['audio_url'].lstrip('/')}") as response:
            speech = await response.read()
        assert len(speech) / 2 / clip["sample_rate"] == pytest.approx(clip["duration_s"], abs=0.01)
    stop.set()
    assert await asyncio.wait_for(serving, 5) == 0
    assert server.addresses == []
    out = capsys.readouterr().out
    assert server.url in out and "Control audio via OBS" in out and "no chroma key" in out
