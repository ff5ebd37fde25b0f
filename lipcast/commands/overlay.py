"""``lipcast overlay``: serve the OBS overlay on its own, or control a running one.

``lipcast overlay`` serves the page (the persona idles; ``--demo`` has the persona say a short
reply, through the configured voice and renderer, whenever a page is open, so that setting up
the Browser Source and its audio in OBS shows exactly what the stream will see).
``lipcast overlay skip`` (``clear``, ``pause``, ``resume``) controls the overlay of a running
``lipcast run`` or ``lipcast overlay`` through its HTTP control endpoint, with the token
LIPCAST_OVERLAY_TOKEN.

:func:`lipcast.wiring.build_overlay_server` builds the server exactly as bot.toml's
``[overlay]`` says; ``lipcast run`` uses it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lipcast.wiring import build_clip_renderer, build_overlay_server, persona_from_settings
from obs_overlay.server import CONTROL_ACTIONS, OverlayServer
from personas import Persona
from pipeline.errors import ConfigError, LipcastError, PersonaError

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Settings
    from pipeline.jobs.render import ClipRenderer

HELP = "serve the OBS overlay page on its own, or control a running one (skip, clear, pause…)"
DEMO_VIEWER = "lipcast_demo"
DEMO_LINES = (
    "Hi chat! I am {name}, and this is how I look on your stream.",
    "Every sentence I say is drawn live, in time with my voice.",
    "Between replies I wait right here, breathing and blinking.",
)
CONTROL_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="serve",
        choices=("serve", *CONTROL_ACTIONS),
        help="serve the page (default), or skip the reply playing, clear the queue, "
        "pause or resume a running overlay",
    )
    parser.add_argument("--host", help="address to bind or reach (default: [overlay] host)")
    parser.add_argument("--port", type=int, help="port to bind or reach (default: [overlay] port)")
    parser.add_argument("-p", "--persona", help="persona whose avatar idles (default: bot.toml)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="have the persona say a short reply whenever a page is open, to set OBS up",
    )


@dataclass(frozen=True, kw_only=True)
class OverlayLine:
    """One sentence as the overlay shows it: speech and timeline (sprite), or an MP4."""

    caption: str
    duration_s: float
    audio: bytes | None = field(default=None, repr=False)  # 16-bit mono PCM
    sample_rate: int | None = None
    timeline: bytes | None = field(default=None, repr=False)
    mp4: bytes | None = field(default=None, repr=False)


async def render_lines(
    clips: ClipRenderer, persona: Persona, lines: Sequence[str], *, video: bool = False
) -> list[OverlayLine]:
    """``lines`` spoken by ``persona`` through the real voice and renderer, as the overlay
    takes them: speech and timeline for a sprite persona, an MP4 otherwise (or with
    ``video``)."""
    made = []
    for text in lines:
        if not video:
            line = await clips.speak_line(text, persona)
            if line.timeline is not None:
                made.append(
                    OverlayLine(
                        caption=text,
                        duration_s=line.audio.duration_s,
                        audio=line.audio.to_pcm16(),
                        sample_rate=line.audio.sample_rate,
                        timeline=line.timeline.to_json(),
                    )
                )
                continue
        clip = await clips.render(text, persona)
        made.append(OverlayLine(caption=text, duration_s=clip.duration_s, mp4=clip.mp4))
    return made


async def publish_line(
    server: OverlayServer, *, turn_id: str, seq: int, line: OverlayLine, viewer: str | None
) -> str | None:
    """Publish one :class:`OverlayLine`; returns its clip id (None: the turn was cancelled)."""
    return await server.publish_clip(
        turn_id=turn_id,
        seq=seq,
        caption=line.caption,
        mp4=line.mp4,
        audio=line.audio,
        sample_rate=line.sample_rate,
        timeline=line.timeline,
        viewer=viewer,
        duration_s=line.duration_s,
    )


def run(args: argparse.Namespace, context: Context) -> int:
    if args.action != "serve":
        return _control(args, context)
    persona = _persona(context.settings, args.persona)
    server = build_overlay_server(
        context.settings,
        context.secrets,
        idle_image=persona.avatar_path if persona is not None else None,
        host=args.host,
        port=args.port,
        persona=persona,
    )
    clips = None
    if args.demo:
        if persona is None:
            raise PersonaError("the demo needs a persona: name one with --persona")
        clips = build_clip_renderer(context.settings, context.secrets)
    return asyncio.run(serve(server, demo=clips, persona=persona))


def _persona(settings: Settings, name: str | None) -> Persona | None:
    try:
        return persona_from_settings(settings, name)
    except PersonaError:
        if name is not None:
            raise
        log.warning("the default persona cannot be loaded: the overlay idles without an avatar")
        return None


async def serve(
    server: OverlayServer,
    *,
    demo: ClipRenderer | None = None,
    persona: Persona | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``server`` until ``stop`` is set (or SIGINT / SIGTERM); returns the exit code.

    With ``demo`` (and ``persona``) the persona says the demo reply whenever a page is open.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows; Ctrl+C still ends the process there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(f"lipcast overlay on {server.url}")
    print(
        "  OBS: Sources > + > Browser, URL as above, width and height of your clips "
        "([render] size), tick 'Control audio via OBS'; no chroma key needed. Ctrl+C stops."
    )
    if not server.control_enabled:
        print("  Control (skip, clear, pause) is off: set LIPCAST_OVERLAY_TOKEN to enable it.")
    demo_task = None
    if demo is not None and persona is not None:
        demo_task = asyncio.create_task(
            play_demo(server, demo, persona, stop=stop), name="overlay-demo"
        )
    try:
        await stop.wait()
    finally:
        if demo_task is not None:
            demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo_task
        if demo is not None:
            await demo.tts.aclose()
        await server.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
    return 0


async def play_demo(
    server: OverlayServer,
    clips: ClipRenderer,
    persona: Persona,
    *,
    stop: asyncio.Event,
    pause_s: float = 4.0,
) -> None:
    """The persona says the demo reply whenever a page is open and the queue is empty, until
    ``stop``; rendered once, by the real voice and renderer."""
    lines = await render_lines(
        clips, persona, [line.format(name=persona.name) for line in DEMO_LINES]
    )
    run_id = secrets.token_hex(3)  # turn ids must differ from the last run's (pages remember)
    number = 0
    while not stop.is_set():
        if server.connected_pages == 0 or server.queue_length:
            await asyncio.sleep(0.5)
            continue
        number += 1
        turn_id = f"demo-{run_id}-{number}"
        await server.turn_started(turn_id, viewer=DEMO_VIEWER)
        for seq, line in enumerate(lines):
            await publish_line(server, turn_id=turn_id, seq=seq, line=line, viewer=DEMO_VIEWER)
        await server.turn_ended(turn_id)
        await server.wait_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause_s)


def control_url(host: str, port: int, action: str) -> str:
    """The control endpoint of an overlay listening on ``host``:``port``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/control/{action}"


def send_control(url: str, token: str, *, timeout: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
    """POST one control action; returns the server's JSON answer or raises LipcastError."""
    request = urllib.request.Request(
        url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read().decode("utf-8"))
            return answer
    except urllib.error.HTTPError as err:
        if err.code == 401:
            raise LipcastError(
                f"{url}: the overlay refused the token: LIPCAST_OVERLAY_TOKEN must be the value "
                "the running lipcast was started with"
            ) from err
        if err.code == 403:
            raise LipcastError(
                f"{url}: control is disabled on the running overlay: start it with "
                "LIPCAST_OVERLAY_TOKEN set"
            ) from err
        raise LipcastError(f"{url}: the overlay answered HTTP {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        failure = LipcastError(
            f"{url}: no overlay answers there ({getattr(err, 'reason', err)}); is lipcast "
            "running, and are [overlay] host and port (or --host, --port) right?"
        )
        failure.transient = True
        raise failure from err


def _control(args: argparse.Namespace, context: Context) -> int:
    token = context.secrets.overlay_token
    if token is None or not token.get_secret_value():
        raise ConfigError(
            "controlling the overlay needs its token: set LIPCAST_OVERLAY_TOKEN (in the "
            "environment or .env) to the value the running lipcast uses"
        )
    overlay = context.settings.overlay
    url = control_url(args.host or overlay.host, args.port or overlay.port, args.action)
    answer = send_control(url, token.get_secret_value())
    details = ", ".join(f"{key} {value}" for key, value in answer.items() if key != "ok")
    print(f"overlay: {details}")
    return 0
