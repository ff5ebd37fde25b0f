"""The overlay server: the OBS browser-source page, its clips, a WebSocket of events, control.

One :class:`OverlayServer` per process. The conversation pipeline (wired by ``lipcast run``)
drives it with a few coroutines, all called on the server's event loop::

    overlay = OverlayServer(host="127.0.0.1", port=8765, control_token=token,
                            atlas=persona_atlas, on_playback=record_shown)
    await overlay.start()                     # listening; overlay.url is the Browser Source URL
    await overlay.turn_started("t-42", viewer="ada", deadline=time.monotonic() + 20)
    clip_id = await overlay.publish_clip(turn_id="t-42", seq=0, caption="Hello Ada!",
                                         audio=pcm, sample_rate=22050, timeline=timeline_json,
                                         viewer="ada", duration_s=1.8)
    ...                                       # one publish_clip per sentence, in seq order
    await overlay.turn_ended("t-42")          # no more clips for this turn
    await overlay.stop()

A clip is either a sprite clip — the speech as PCM and the persona's timeline, which the page
draws live from the persona's layer atlas (``atlas``, :meth:`set_atlas`) — or a video clip
(``mp4=``, H.264 + AAC). A video renderer's clip can also stream while it is encoded:
:meth:`open_stream`, then :meth:`append_stream` with each fragmented-MP4 piece as it is made,
then :meth:`end_stream`; the page starts playing it after its first fragment.
``publish_clip`` returns None (and shows nothing) when the turn was skipped, cleared or
expired, which also tells the pipeline it may stop rendering that turn
(:meth:`OverlayServer.is_cancelled`).

A reply must *begin* before its deadline (``deadline`` of :meth:`turn_started`, by default
``start_deadline_s`` after it was announced): one that no page began in time is dropped and
never shown, so a page opened late starts from what is current, not from a backlog.

Control acts on what is on air: :meth:`~OverlayServer.skip` stops the reply a page is showing
(never a waiting one), :meth:`~OverlayServer.clear` drops the replies waiting (never the one
showing); both take a turn id to name the reply. ``pause``, ``resume``; ``on_air`` (the turn
shown now), ``queue_length`` (clips not yet played to the end), ``replies_waiting``,
``connected_pages``, ``await wait_drained()``. ``on_playback`` is called with every
:class:`~obs_overlay.events.PlaybackReport` a page sends (started — once per clip — ended,
skipped, failed) with its turn id, seq and wall time, e.g. to record "first clip shown".

HTTP (no route reads a file named by the request):

- ``GET /`` the page; ``GET /overlay.js``, ``/overlay.css`` its assets (read once at start);
- ``GET /idle/image``, ``/idle/video`` the configured idle image or loop clip;
- ``GET /persona/atlas.png`` the sprite persona's layer atlas;
- ``GET /clips/{id}.mp4`` a video clip, ``/clips/{id}.pcm`` a sprite clip's speech, from the
  in-memory :class:`~obs_overlay.clip_store.ClipStore` (single byte ranges supported); a
  malformed id is 400, an unknown one 404;
- ``GET /ws`` the event WebSocket (protocol in :mod:`obs_overlay.events`); a browser origin
  other than the server's own is refused;
- ``POST /control/{skip,clear,pause,resume}`` (``?turn_id=`` for skip and clear) with
  ``Authorization: Bearer <token>``: 403 when no token is configured (control disabled), 401
  without or with a wrong token;
- ``GET /healthz``.

The server binds 127.0.0.1 unless told otherwise; anyone who can reach the port can watch the
page and its clips, only the token holder can control it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from obs_overlay.clip_store import ClipStore, new_clip_id
from obs_overlay.events import (
    PROTOCOL,
    Clear,
    ClipReady,
    Event,
    Hello,
    PageOptions,
    Pause,
    PersonaLayers,
    PlaybackReport,
    QueueState,
    Resume,
    Skip,
    TurnEnded,
    TurnStarted,
    parse_report,
)
from pipeline.errors import InputError, LipcastError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTROL_ACTIONS = ("skip", "clear", "pause", "resume")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}

_ASSET_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "overlay.js": "text/javascript; charset=utf-8",
    "overlay.css": "text/css; charset=utf-8",
}
_CLIP_NAME = re.compile(r"(?P<clip_id>[A-Za-z0-9_-]{8,64})\.(?P<ext>mp4|pcm)")
_CLIP_TYPES = {"mp4": "video/mp4", "pcm": "audio/pcm"}
_MAX_TIMELINE = 1024 * 1024
_EXPIRY_GRACE_S = 0.5  # the page refuses a late reply itself; the server drops it just after
_EXPIRY_CHECK_S = 0.1
_MAX_TURN_ID = 200
_MAX_CAPTION = 1000
_MAX_VIEWER = 100
_CANCELLED_KEEP = 1000  # how many skipped or cleared turn ids are remembered
_SEND_TIMEOUT_S = 5.0
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

PlaybackCallback = Callable[[PlaybackReport], None]


class LayerAtlas(Protocol):
    """A sprite persona's layers as the page draws them (:class:`lipsync.atlas.Atlas`)."""

    @property
    def key(self) -> str: ...  # changes whenever the layers do

    @property
    def png(self) -> bytes: ...

    @property
    def manifest(self) -> dict[str, Any]: ...


class OverlayError(LipcastError):
    """The overlay server cannot start or serve (port taken, idle asset unusable)."""


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(kw_only=True)
class _Turn:
    turn_id: str
    viewer: str | None
    deadline: float  # monotonic: the reply must begin by then, or it is dropped
    ended: bool = False
    begun: bool = False  # a page reported that one of its clips started
    begun_at: float = 0.0


@dataclass(kw_only=True)
class _Stream:
    """A video clip still being encoded: its pieces so far, and a wake-up for readers."""

    parts: list[bytes]
    done: bool = False
    grown: asyncio.Event

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.wake()

    def wake(self) -> None:
        self.grown.set()
        self.grown = asyncio.Event()


@dataclass(frozen=True, kw_only=True)
class _Assets:
    files: dict[str, bytes]
    version: str


def _load_assets(folder: Path) -> _Assets:
    raw = {name: (folder / name).read_bytes() for name in _ASSET_TYPES}
    version = hashlib.sha256(b"\0".join(raw[name] for name in sorted(raw))).hexdigest()[:16]
    raw["index.html"] = raw["index.html"].replace(b"{{ASSETS}}", version.encode())
    return _Assets(files=raw, version=version)


def _check_media(path: Path | None, kinds: dict[str, str], what: str) -> Path | None:
    if path is None:
        return None
    if path.suffix.lower() not in kinds:
        raise OverlayError(f"{path}: the {what} must be one of {', '.join(sorted(kinds))} files")
    if not path.is_file():
        raise OverlayError(f"{path}: the {what} does not exist")
    return path


class OverlayServer:
    """HTTP + WebSocket server of the OBS overlay; see the module docstring for the interface.

    ``host``/``port``: where to listen (port 0 picks a free one, see :attr:`port`);
    ``control_token``: the bearer token of ``POST /control/*`` (None disables it);
    ``store``: where clips are kept (default bounds when None); ``idle_image`` /
    ``idle_video``: shown between replies (the video loops, muted, and wins over the image);
    ``options``: how the page presents replies; ``on_playback``: called with page reports;
    ``cleanup_interval_s``: how often clips past the store's age bound are dropped;
    ``atlas``: the sprite persona the page draws (None: the idle image or video), or
    ``make_atlas`` to make it in a thread when the server starts;
    ``start_deadline_s``: how long after it is announced a reply may still begin.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        control_token: str | None = None,
        store: ClipStore | None = None,
        idle_image: Path | None = None,
        idle_video: Path | None = None,
        options: PageOptions | None = None,
        on_playback: PlaybackCallback | None = None,
        cleanup_interval_s: float = 30.0,
        atlas: LayerAtlas | None = None,
        make_atlas: Callable[[], LayerAtlas | None] | None = None,
        start_deadline_s: float = 20.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._control_token = control_token or None
        self.store = store if store is not None else ClipStore()
        self.idle_image = _check_media(idle_image, IMAGE_TYPES, "idle image")
        self.idle_video = _check_media(idle_video, VIDEO_TYPES, "idle video")
        self.options = options if options is not None else PageOptions()
        self._on_playback = on_playback
        self._cleanup_interval_s = cleanup_interval_s
        self._atlas = atlas
        self._make_atlas = make_atlas
        self.start_deadline_s = start_deadline_s

        self._instance = secrets.token_hex(8)
        self._assets: _Assets | None = None
        self._idle_urls: dict[str, str | None] = {"image": None, "video": None}
        self._runner: web.AppRunner | None = None
        self._cleanup_task: asyncio.Task[None] | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._pages: set[web.WebSocketResponse] = set()
        self._send_lock = asyncio.Lock()
        self._pending: OrderedDict[str, ClipReady] = OrderedDict()
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._started: set[str] = set()  # clips a page reported started
        self._streams: dict[str, _Stream] = {}  # video clips still being encoded
        self._order = 0
        self._paused = False
        self._drained = asyncio.Event()
        self._drained.set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Read the page's files and start listening; raises :class:`OverlayError`."""
        if self._runner is not None:
            return
        try:
            self._assets = await asyncio.to_thread(_load_assets, STATIC_DIR)
        except OSError as err:
            raise OverlayError(f"{STATIC_DIR}: the overlay page is missing: {err}") from err
        if self._make_atlas is not None and self._atlas is None:
            try:
                self._atlas = await asyncio.to_thread(self._make_atlas)
            except LipcastError as err:
                raise OverlayError(f"the persona cannot be drawn in the overlay: {err}") from err
        self._idle_urls = {
            "image": await asyncio.to_thread(_versioned, "/idle/image", self.idle_image),
            "video": await asyncio.to_thread(_versioned, "/idle/video", self.idle_video),
        }
        runner = web.AppRunner(
            self._build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OverlayError(
                f"the overlay cannot listen on {self.host}:{self._requested_port}: "
                f"{err.strerror or err}; is another lipcast running? Choose another port with "
                f"[overlay] port in bot.toml"
            ) from err
        self._runner = runner
        self._requested_port = self.port  # a restart listens on the same port
        self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="overlay-clip-cleanup")
        self._expiry_task = asyncio.create_task(self._expiry_loop(), name="overlay-deadlines")
        log.info("overlay listening on %s", self.url)
        if not is_loopback_host(self.host):
            log.warning(
                "the overlay listens on %s: other machines can open the page and its clips "
                "(control still needs the token)",
                self.host,
            )

    async def stop(self) -> None:
        """Close the pages' connections (they reconnect to the next server) and stop listening."""
        for task in (self._cleanup_task, self._expiry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._cleanup_task = self._expiry_task = None
        for page in list(self._pages):
            with contextlib.suppress(Exception):
                await page.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        self._pages.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OverlayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- state

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of every listening socket."""
        if self._runner is None:
            return []
        return [(str(address[0]), int(address[1])) for address in self._runner.addresses]

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with port 0)."""
        found = self.addresses
        return found[0][1] if found else self._requested_port

    @property
    def url(self) -> str:
        """The address to give OBS's Browser Source."""
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def control_enabled(self) -> bool:
        return self._control_token is not None

    @property
    def queue_length(self) -> int:
        """Clips published and not yet played to the end (the one playing included)."""
        return len(self._pending)

    @property
    def replies_waiting(self) -> int:
        """Replies (turns) announced or with clips that no page has begun to play."""
        return sum(1 for turn in self._turns.values() if not turn.begun)

    @property
    def on_air(self) -> str | None:
        """The reply a page is showing now (begun and not over), or None."""
        begun = [turn for turn in self._turns.values() if turn.begun]
        return max(begun, key=lambda turn: turn.begun_at).turn_id if begun else None

    @property
    def connected_pages(self) -> int:
        return len(self._pages)

    @property
    def paused(self) -> bool:
        return self._paused

    def is_cancelled(self, turn_id: str) -> bool:
        """Whether the turn was skipped or cleared (its clips are no longer shown)."""
        return turn_id in self._cancelled

    async def wait_drained(self) -> None:
        """Wait until every published clip was played, skipped or dropped (bound it with
        ``asyncio.timeout``)."""
        await self._drained.wait()

    # ----------------------------------------------------------------- pipeline API

    async def turn_started(
        self, turn_id: str, *, viewer: str | None = None, deadline: float | None = None
    ) -> None:
        """Announce a reply; its clips follow with :meth:`publish_clip`.

        ``deadline`` (``time.monotonic()`` seconds) is when the reply must have begun playing;
        default ``start_deadline_s`` from now. A reply no page began by then is never shown.
        """
        turn_id = _check_turn_id(turn_id)
        viewer = _clean_viewer(viewer)
        if self.is_cancelled(turn_id):
            return
        if turn_id not in self._turns:
            self._turns[turn_id] = self._new_turn(turn_id, viewer, deadline)
        elif deadline is not None:
            self._turns[turn_id].deadline = deadline
        await self._broadcast(TurnStarted(turn_id=turn_id, viewer=viewer), self._queue_state())

    async def publish_clip(
        self,
        *,
        turn_id: str,
        seq: int,
        caption: str,
        mp4: bytes | None = None,
        audio: bytes | None = None,
        sample_rate: int | None = None,
        timeline: bytes | None = None,
        viewer: str | None = None,
        duration_s: float | None = None,
    ) -> str | None:
        """Queue one clip of a reply; returns its clip id.

        A sprite clip is ``audio`` (16-bit little-endian mono PCM at ``sample_rate``) with its
        ``timeline`` (JSON, :mod:`lipsync.timeline`'s wire form); a video clip is ``mp4``
        (H.264 + AAC). Clips play in the order they are published; ``seq`` is the clip's place
        in its turn (0, 1, 2…) and, with ``turn_id``, what a page uses never to play a clip
        twice. Returns None when the turn was skipped, cleared or expired. Raises
        :class:`InputError` for bad values.
        """
        turn_id = _check_turn_id(turn_id)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InputError(f"clip seq must be a whole number >= 0, not {seq!r}")
        frames = _check_sprite(audio, sample_rate, timeline) if timeline is not None else None
        if frames is None and not mp4:
            raise InputError("a clip needs its MP4, or its speech (PCM) and its timeline")
        if self.is_cancelled(turn_id):
            log.debug("clip %d of cancelled turn %s not shown", seq, turn_id)
            return None
        viewer = _clean_viewer(viewer)
        if frames is not None:
            assert audio is not None
            clip_id, evicted = self.store.put(audio, content_type="audio/pcm")
        else:
            assert mp4 is not None
            clip_id, evicted = self.store.put(mp4)
        self._forget_clips(evicted, why="the clip store is full")
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = self._new_turn(turn_id, viewer, None)
        self._order += 1
        event = ClipReady(
            clip_id=clip_id,
            turn_id=turn_id,
            seq=seq,
            order=self._order,
            kind="sprite" if frames is not None else "video",
            caption=str(caption)[:_MAX_CAPTION],
            viewer=viewer or turn.viewer,
            duration_s=duration_s,
            url=None if frames is not None else f"/clips/{clip_id}.mp4",
            audio_url=f"/clips/{clip_id}.pcm" if frames is not None else None,
            sample_rate=sample_rate if frames is not None else None,
            timeline=frames,
        )
        self._pending[clip_id] = event
        self._drained.clear()
        await self._broadcast(self._fresh(event), self._queue_state())
        return clip_id

    async def open_stream(
        self,
        *,
        turn_id: str,
        seq: int,
        caption: str,
        mime: str,
        viewer: str | None = None,
        duration_s: float | None = None,
    ) -> str | None:
        """Queue a video clip that is still being encoded; returns its clip id.

        ``mime`` is its Media Source type (``video/mp4; codecs="..."``). Feed its fragmented
        MP4 with :meth:`append_stream` as it is made and finish with :meth:`end_stream`.
        Returns None when the turn was skipped, cleared or expired.
        """
        turn_id = _check_turn_id(turn_id)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InputError(f"clip seq must be a whole number >= 0, not {seq!r}")
        if not mime.startswith("video/mp4") or len(mime) > 200:
            raise InputError(f"a streamed clip must be video/mp4 with its codecs, not {mime!r}")
        if self.is_cancelled(turn_id):
            return None
        viewer = _clean_viewer(viewer)
        clip_id = new_clip_id()
        self._streams[clip_id] = _Stream(parts=[], grown=asyncio.Event())
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = self._new_turn(turn_id, viewer, None)
        self._order += 1
        event = ClipReady(
            clip_id=clip_id,
            turn_id=turn_id,
            seq=seq,
            order=self._order,
            kind="video",
            caption=str(caption)[:_MAX_CAPTION],
            viewer=viewer or turn.viewer,
            duration_s=duration_s,
            url=f"/clips/{clip_id}.mp4",
            stream=mime,
        )
        self._pending[clip_id] = event
        self._drained.clear()
        await self._broadcast(self._fresh(event), self._queue_state())
        return clip_id

    async def append_stream(self, clip_id: str, data: bytes) -> bool:
        """Add the next piece of a streamed clip; False when the clip is no longer shown
        (its turn was skipped), so the renderer may stop."""
        stream = self._streams.get(clip_id)
        if stream is None or stream.done:
            return False
        if data:
            stream.add(bytes(data))
        return True

    async def end_stream(self, clip_id: str) -> None:
        """The streamed clip is complete; it is then kept and served like any other clip."""
        stream = self._streams.pop(clip_id, None)
        if stream is None:
            return
        stream.done = True
        stream.wake()
        if clip_id in self._pending and stream.parts:
            _, evicted = self.store.put(b"".join(stream.parts), clip_id=clip_id)
            self._forget_clips(evicted, why="the clip store is full")

    async def turn_ended(self, turn_id: str) -> None:
        """No more clips will come for this turn."""
        turn_id = _check_turn_id(turn_id)
        turn = self._turns.get(turn_id)
        if turn is None or turn.ended:
            return
        turn.ended = True
        self._forget_turn_if_done(turn_id)
        await self._broadcast(TurnEnded(turn_id=turn_id), self._queue_state())

    async def skip(self, turn_id: str | None = None) -> str | None:
        """Stop the reply on air (or the one named); returns its turn id, None if none.

        Without a turn id a waiting reply is never skipped: with nothing on air, nothing is.
        """
        target = self.on_air if turn_id is None else _check_turn_id(turn_id)
        if target is None or (turn_id is not None and target not in self._turns):
            log.info("overlay: skip: %s", "nothing on air" if turn_id is None else "no such turn")
            if target is not None:
                self._cancel(target)  # a reply the overlay has not seen yet: never show it
            return None
        self._cancel(target)
        log.info("overlay: skip %s", target)
        await self._broadcast(Skip(turn_id=target), self._queue_state())
        return target

    async def clear(self, turn_id: str | None = None) -> list[str]:
        """Drop the replies waiting (or the one named, if it waits); the reply on air plays on.

        Returns the turn ids dropped.
        """
        on_air = self.on_air
        waiting = [
            tid
            for tid in {**self._turns, **{clip.turn_id: None for clip in self._pending.values()}}
            if tid != on_air
        ]
        if turn_id is not None:
            turn_id = _check_turn_id(turn_id)
            waiting = [tid for tid in waiting if tid == turn_id]
        dropped = sum(1 for clip in self._pending.values() if clip.turn_id in waiting)
        for tid in waiting:
            self._cancel(tid)
        log.info("overlay: clear (%d replies, %d clips dropped)", len(waiting), dropped)
        await self._broadcast(Clear(turn_ids=waiting), self._queue_state())
        return waiting

    async def set_atlas(self, atlas: LayerAtlas | None) -> None:
        """Draw another sprite persona (e.g. after a persona switch); pages switch at once."""
        self._atlas = atlas
        persona = self._persona_info()
        if persona is not None:
            await self._broadcast(
                PersonaLayers(atlas=persona["atlas"], manifest=persona["manifest"])
            )

    async def pause(self) -> None:
        """Hold playback (the clip playing pauses; nothing new starts)."""
        self._paused = True
        await self._broadcast(Pause())

    async def resume(self) -> None:
        self._paused = False
        await self._broadcast(Resume())

    async def control(self, action: str, turn_id: str | None = None) -> dict[str, Any]:
        """Run one control action by name (``skip``, ``clear``, ``pause``, ``resume``)."""
        result: dict[str, Any] = {"action": action}
        if action == "skip":
            result["turn_id"] = await self.skip(turn_id)
        elif action == "clear":
            dropped = await self.clear(turn_id)
            result["dropped"] = len(dropped)
            result["turn_ids"] = dropped
        elif action == "pause":
            await self.pause()
        elif action == "resume":
            await self.resume()
        else:
            raise InputError(f"unknown overlay action {action!r}: use {', '.join(CONTROL_ACTIONS)}")
        result.update(queue_length=self.queue_length, paused=self.paused)
        return result

    # ----------------------------------------------------------------- bookkeeping

    def _new_turn(self, turn_id: str, viewer: str | None, deadline: float | None) -> _Turn:
        if deadline is None:
            deadline = time.monotonic() + self.start_deadline_s
        return _Turn(turn_id=turn_id, viewer=viewer, deadline=deadline)

    def _fresh(self, event: ClipReady) -> ClipReady:
        """``event`` with how long its reply may still begin, as of now."""
        turn = self._turns.get(event.turn_id)
        if turn is None or turn.begun:
            return event.fresh(None)
        return event.fresh(max(0, round((turn.deadline - time.monotonic()) * 1000)))

    def _persona_info(self) -> dict[str, Any] | None:
        if self._atlas is None:
            return None
        version = hashlib.sha256(self._atlas.key.encode()).hexdigest()[:12]
        return {"atlas": f"/persona/atlas.png?v={version}", "manifest": self._atlas.manifest}

    def _queue_state(self) -> QueueState:
        return QueueState(replies_waiting=self.replies_waiting, clips=self.queue_length)

    def _cancel(self, turn_id: str) -> None:
        self._cancelled[turn_id] = None
        while len(self._cancelled) > _CANCELLED_KEEP:
            self._cancelled.popitem(last=False)
        self._turns.pop(turn_id, None)
        for clip_id in [cid for cid, clip in self._pending.items() if clip.turn_id == turn_id]:
            del self._pending[clip_id]
            self._started.discard(clip_id)
            stream = self._streams.pop(clip_id, None)
            if stream is not None:  # readers finish with what they have
                stream.done = True
                stream.wake()
        self._update_drained()

    def _forget_clips(self, clip_ids: list[str], *, why: str) -> None:
        for clip_id in clip_ids:
            clip = self._pending.pop(clip_id, None)
            if clip is not None:
                log.warning(
                    "clip %d of turn %s dropped before a page played it: %s "
                    "(is the overlay open in OBS?)",
                    clip.seq,
                    clip.turn_id,
                    why,
                )
                self._forget_turn_if_done(clip.turn_id)
        self._update_drained()

    def _forget_turn_if_done(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        if turn is None or not turn.ended:
            return
        if not any(clip.turn_id == turn_id for clip in self._pending.values()):
            del self._turns[turn_id]

    def _update_drained(self) -> None:
        if self._pending:
            self._drained.clear()
        else:
            self._drained.set()

    async def _on_report(self, report: PlaybackReport) -> None:
        clip = self._pending.get(report.clip_id)
        if clip is None:
            return  # an old, skipped or foreign clip: nothing to update
        report = replace(report, turn_id=clip.turn_id, seq=clip.seq)
        if report.kind == "started":
            if clip.clip_id in self._started:
                return  # another page plays it too: "started" is reported once
            self._started.add(clip.clip_id)
            turn = self._turns.get(clip.turn_id)
            if turn is not None and not turn.begun:
                turn.begun, turn.begun_at = True, report.at
        else:
            del self._pending[clip.clip_id]
            self._started.discard(clip.clip_id)
            if report.kind == "failed":
                log.warning(
                    "the overlay page could not play clip %d of turn %s: %s",
                    clip.seq,
                    clip.turn_id,
                    report.reason or "no reason given",
                )
            self._forget_turn_if_done(clip.turn_id)
            self._update_drained()
        if self._on_playback is not None:
            try:
                self._on_playback(report)
            except Exception:
                log.exception("the overlay's on_playback callback failed")
        await self._broadcast(self._queue_state())

    async def _cleanup_loop(self) -> None:
        period = min(self._cleanup_interval_s, self.store.max_age_s / 2)
        while True:
            await asyncio.sleep(period)
            expired = self.store.prune()
            if expired:
                before = self.queue_length
                self._forget_clips(expired, why="it grew older than the clip store's age bound")
                if self.queue_length != before:
                    await self._broadcast(self._queue_state())

    async def _expiry_loop(self) -> None:
        """Drop replies that no page began by their deadline: they are never shown late."""
        while True:
            await asyncio.sleep(_EXPIRY_CHECK_S)
            now = time.monotonic()
            late = [
                turn
                for turn in self._turns.values()
                if not turn.begun and now > turn.deadline + _EXPIRY_GRACE_S
            ]
            for turn in late:
                clips = sum(1 for clip in self._pending.values() if clip.turn_id == turn.turn_id)
                self._cancel(turn.turn_id)
                if clips:
                    log.warning(
                        "overlay: reply %s dropped: it could not begin within its deadline "
                        "(is the overlay open in OBS?)",
                        turn.turn_id,
                    )
                await self._broadcast(
                    Skip(turn_id=turn.turn_id, reason="expired"), self._queue_state()
                )

    # ----------------------------------------------------------------- sending

    async def _broadcast(self, *events: Event) -> None:
        if not self._pages:
            return
        messages = [event.to_json() for event in events]
        async with self._send_lock:
            await asyncio.gather(*(self._send(page, messages) for page in list(self._pages)))

    async def _send(self, page: web.WebSocketResponse, messages: list[str]) -> None:
        try:
            for message in messages:
                await asyncio.wait_for(page.send_str(message), _SEND_TIMEOUT_S)
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            log.info("dropping an overlay page that cannot be reached: %s", err)
            self._pages.discard(page)
            with contextlib.suppress(Exception):
                await page.close()

    # ----------------------------------------------------------------- HTTP

    @web.middleware
    async def _check_host(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """On loopback, answer only requests addressed to loopback (no DNS rebinding).

        A web page on another site can point its own host name at 127.0.0.1; the browser then
        sends that name as Host. A server bound to loopback serves no such request.
        """
        if is_loopback_host(self.host):
            requested = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
            if requested != "localhost" and not is_loopback_host(requested):
                raise web.HTTPMisdirectedRequest(text="this overlay answers on localhost only")
        return await handler(request)

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self._check_host])
        app.router.add_get("/", self._page)
        app.router.add_get("/overlay.js", self._asset)
        app.router.add_get("/overlay.css", self._asset)
        app.router.add_get("/idle/image", self._idle_image)
        app.router.add_get("/idle/video", self._idle_video)
        app.router.add_get("/persona/atlas.png", self._atlas_png)
        app.router.add_get("/clips/{name}", self._clip)
        app.router.add_get("/ws", self._websocket)
        app.router.add_post("/control/{action}", self._control)
        app.router.add_get("/healthz", self._health)
        return app

    def _asset_response(self, name: str, extra: dict[str, str] | None = None) -> web.Response:
        assert self._assets is not None
        headers = {
            **_COMMON_HEADERS,
            "Content-Type": _ASSET_TYPES[name],
            "Cache-Control": "no-cache",
            **(extra or {}),
        }
        return web.Response(body=self._assets.files[name], headers=headers)

    async def _page(self, request: web.Request) -> web.Response:
        return self._asset_response("index.html", {"Content-Security-Policy": _PAGE_CSP})

    async def _asset(self, request: web.Request) -> web.Response:
        return self._asset_response(request.path.lstrip("/"))

    async def _atlas_png(self, request: web.Request) -> web.Response:
        if self._atlas is None:
            raise web.HTTPNotFound(text="no sprite persona configured")
        headers = {**_COMMON_HEADERS, "Content-Type": "image/png", "Cache-Control": "no-cache"}
        return web.Response(body=self._atlas.png, headers=headers)

    async def _idle_image(self, request: web.Request) -> web.StreamResponse:
        return self._idle_file(self.idle_image, IMAGE_TYPES)

    async def _idle_video(self, request: web.Request) -> web.StreamResponse:
        return self._idle_file(self.idle_video, VIDEO_TYPES)

    def _idle_file(self, path: Path | None, kinds: dict[str, str]) -> web.StreamResponse:
        if path is None:
            raise web.HTTPNotFound(text="no idle media configured")
        headers = {
            **_COMMON_HEADERS,
            "Content-Type": kinds[path.suffix.lower()],
            "Cache-Control": "no-cache",
        }
        return web.FileResponse(path, headers=headers)

    async def _clip(self, request: web.Request) -> web.StreamResponse:
        match = _CLIP_NAME.fullmatch(request.match_info["name"])
        if match is None:
            raise web.HTTPBadRequest(text="not a clip name")
        stream = self._streams.get(match["clip_id"])
        if stream is not None and match["ext"] == "mp4":
            return await self._stream_clip(request, stream)
        entry = self.store.entry(match["clip_id"])
        if entry is None or not entry.content_type.startswith(_CLIP_TYPES[match["ext"]]):
            raise web.HTTPNotFound(text="no such clip (played long ago, or evicted)")
        data = entry.data
        headers = {
            **_COMMON_HEADERS,
            "Content-Type": entry.content_type,
            "Accept-Ranges": "bytes",
            "Cache-Control": "no-store",
        }
        if "Range" not in request.headers:
            return web.Response(body=data, headers=headers)
        try:
            start, stop, _ = request.http_range.indices(len(data))
        except ValueError:  # not one byte range aiohttp can read (several, or malformed)
            return web.Response(body=data, headers=headers)
        if start >= stop:
            headers["Content-Range"] = f"bytes */{len(data)}"
            raise web.HTTPRequestRangeNotSatisfiable(headers=headers)
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:stop], headers=headers)

    async def _stream_clip(self, request: web.Request, stream: _Stream) -> web.StreamResponse:
        """A clip still being encoded: what there is now, then each piece as it comes."""
        response = web.StreamResponse(
            headers={**_COMMON_HEADERS, "Content-Type": "video/mp4", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        sent = 0
        while True:
            grown = stream.grown
            while sent < len(stream.parts):
                await response.write(stream.parts[sent])
                sent += 1
            if stream.done:
                break
            await grown.wait()
        await response.write_eof()
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "protocol": PROTOCOL})

    async def _control(self, request: web.Request) -> web.Response:
        if self._control_token is None:
            return web.json_response(
                {"error": "control is disabled: set LIPCAST_OVERLAY_TOKEN to enable it"},
                status=403,
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._control_token.encode()
        ):
            return web.json_response(
                {"error": "missing or wrong token: send Authorization: Bearer <token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="lipcast overlay"'},
            )
        action = request.match_info["action"]
        if action not in CONTROL_ACTIONS:
            return web.json_response(
                {"error": f"unknown action: use one of {', '.join(CONTROL_ACTIONS)}"}, status=404
            )
        turn_id = request.query.get("turn_id") or None
        try:
            answer = await self.control(action, turn_id)
        except InputError as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"ok": True, **answer})

    def _origin_allowed(self, request: web.Request) -> bool:
        """Browsers send Origin with a WebSocket handshake: only this server's own page may."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser (a script, a test client)
        try:
            parsed = URL(origin)
            own = URL(f"http://{request.host}")
        except ValueError:
            return False
        return (parsed.host, parsed.port) == (own.host, own.port)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_allowed(request):
            raise web.HTTPForbidden(text="this WebSocket serves the overlay page of this server")
        page = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await page.prepare(request)
        async with self._send_lock:
            # Joining and the state snapshot happen under the broadcast lock: every change is
            # either in the snapshot or broadcast to this page after it, never lost or doubled.
            self._pages.add(page)
            await self._send(page, [event.to_json() for event in self._welcome()])
        log.info("overlay page connected (%d open)", len(self._pages))
        try:
            async for message in page:
                if message.type is not WSMsgType.TEXT:
                    continue
                report = parse_report(str(message.data), at=time.monotonic(), wall=time.time())
                if report is not None:
                    await self._on_report(report)
        finally:
            self._pages.discard(page)
            log.info("overlay page disconnected (%d open)", len(self._pages))
        return page

    def _welcome(self) -> list[Event]:
        assert self._assets is not None
        hello = Hello(
            assets=self._assets.version,
            instance=self._instance,
            paused=self._paused,
            idle=self._idle_urls,
            options=self.options,
            persona=self._persona_info(),
        )
        # What is current: clips not begun anywhere yet, of replies still within their deadline.
        now = time.monotonic()
        backlog = [
            self._fresh(clip)
            for clip in self._pending.values()
            if clip.clip_id not in self._started
            and (turn := self._turns.get(clip.turn_id)) is not None
            and (turn.begun or now <= turn.deadline)
        ]
        return [hello, *backlog, self._queue_state()]


def _versioned(url: str, path: Path | None) -> str | None:
    """``url`` with a version that changes with the file, so a page shows a replaced one."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return url
    return f"{url}?v={stat.st_mtime_ns:x}-{stat.st_size:x}"


def _check_turn_id(turn_id: str) -> str:
    if not isinstance(turn_id, str) or not turn_id or len(turn_id) > _MAX_TURN_ID:
        raise InputError(f"turn id must be a non-empty string of at most {_MAX_TURN_ID} characters")
    return turn_id


def _check_sprite(audio: bytes | None, sample_rate: int | None, timeline: bytes) -> dict[str, Any]:
    """The timeline of a sprite clip as the page reads it; InputError when the clip is unusable."""
    if not audio or len(audio) % 2:
        raise InputError("a sprite clip's speech must be 16-bit PCM: a non-empty, even length")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise InputError("a sprite clip needs the sample rate of its speech")
    if not 8000 <= sample_rate <= 192_000:
        raise InputError(f"a sample rate of {sample_rate} Hz is not one a page can play")
    if len(timeline) > _MAX_TIMELINE:
        raise InputError("a sprite clip's timeline is larger than any sentence's")
    try:
        frames: Any = json.loads(timeline)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"a sprite clip's timeline is not JSON: {err}") from err
    if (
        not isinstance(frames, dict)
        or not isinstance(frames.get("fps"), int)
        or not isinstance(frames.get("visemes"), str)
        or not isinstance(frames.get("levels"), list)
        or len(frames["levels"]) != len(frames["visemes"])
    ):
        raise InputError("a sprite clip's timeline lacks fps, visemes or levels")
    return frames


def _clean_viewer(viewer: str | None) -> str | None:
    if viewer is None:
        return None
    viewer = str(viewer).strip().lstrip("@")[:_MAX_VIEWER]
    return viewer or None
