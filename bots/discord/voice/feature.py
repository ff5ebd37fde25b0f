"""Discord voice channels as a spoken conversation: a feature of the Discord adapter.

The adapter calls :meth:`VoiceFeature.setup` once (``/join`` and ``/leave`` are registered on
its command tree) and :meth:`VoiceFeature.play` with every released clip of a reply to a voice
channel, in order. In a joined channel:

* each speaker's packets go through lipcast's receiver (:mod:`~bots.discord.voice.receive`),
  are resampled to 16 kHz and cut into utterances by the segmenter (Silero VAD);
* each utterance is transcribed (the ``[stt]`` backend) and handed to the listener as an
  :class:`~pipeline.utterance.Utterance` with ``trigger="voice"``; the linked text channel,
  when configured, gets "🎙 viewer: transcript";
* replies play sentence by sentence through a :class:`~bots.discord.voice.playback.SpeechSource`;
  a viewer who starts talking over the persona stops (or ducks) it within one VAD onset
  (about 100 ms) plus one 20 ms frame, and the rest of that reply is dropped;
* a speaker whose packets cannot be decrypted ``rejoin_after_failures`` times in a row makes
  the bot re-join the channel (a fresh DAVE session).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bots.base import Readiness
from bots.discord.voice.playback import BargeIn, SpeechSource
from bots.discord.voice.receive import ConnectionKeys, SpeakerStats, VoiceReceiver
from pipeline.clips import Clip
from pipeline.errors import LipcastError
from pipeline.services.stt import STT
from pipeline.speech.resample import StreamResampler
from pipeline.speech.segmenter import (
    Segmenter,
    SegmenterOptions,
    SegmentEvent,
    SpeechFinished,
    SpeechStarted,
)
from pipeline.speech.vad import SileroVAD
from pipeline.utterance import Listener, Utterance

log = logging.getLogger(__name__)

TICK_S = 0.05  # how often silence after the last packet is checked
FAILURE_REPORT_S = 60.0  # how often new decryption failures are summed up in the log
LIVE_REPORT_S = 5.0  # how often the running feature writes its doctor lines (live_report)
LIVE_REPORT_STALE_S = 30.0  # an older report is from a lipcast that no longer runs


@dataclass(frozen=True, kw_only=True)
class VoiceOptions:
    """How the feature listens and speaks (``[voice]`` in bot.toml)."""

    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    barge_in: BargeIn = "stop"
    duck_volume: float = 0.25
    text_channel: int | None = None  # "🎙 viewer: transcript" and the replies go there
    post_clips: bool = False
    rejoin_after_failures: int = 36
    language: str | None = None  # a hint for speech-to-text; None: the backend guesses
    auto_join: tuple[int, ...] = ()  # voice channel ids joined on connecting (routes' join)
    # while lipcast runs, the joined channels' receive counts go here for `lipcast doctor`
    live_report: Path | None = None


class VoiceLink(Protocol):
    """What a session needs of a voice connection (a ``ListeningVoiceClient``)."""

    def attach(self, receiver: VoiceReceiver) -> None: ...

    def keys(self) -> ConnectionKeys: ...

    def play(
        self, source: Any, *, after: Callable[[Exception | None], Any] | None = None
    ) -> Any: ...

    def is_playing(self) -> bool: ...

    def stop(self) -> None: ...

    async def disconnect(self, *, force: bool = False) -> None: ...


class TextChannelPoster(Protocol):
    """Posts lines in the linked text channel; :meth:`post` returns something :meth:`edit`
    takes (a ``discord.Message``)."""

    async def post(self, channel_id: int, text: str, media: tuple[bytes, str] | None) -> Any: ...

    async def edit(self, message: Any, text: str) -> None: ...


NameOf = Callable[[int], str]


class VoiceSession:
    """One joined voice channel: receive, segment, transcribe, hear; speak with barge-in."""

    def __init__(
        self,
        *,
        link: VoiceLink,
        guild_id: int,
        channel_id: int,
        listener: Listener,
        stt: STT,
        vad: SileroVAD,
        options: VoiceOptions,
        name_of: NameOf,
        poster: TextChannelPoster | None = None,
        on_rejoin: Callable[[], None] | None = None,
    ) -> None:
        self.link = link
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.options = options
        self._listener = listener
        self._stt = stt
        self._name_of = name_of
        self._poster = poster
        self._on_rejoin = on_rejoin
        self._loop = asyncio.get_running_loop()
        self.segmenter = Segmenter(vad, options.segmenter)
        self.receiver = VoiceReceiver(
            keys=link.keys,
            on_audio=self._on_audio,
            on_sustained_failure=self._on_failures,
            rejoin_after=options.rejoin_after_failures,
        )
        self._resamplers: dict[int, StreamResampler] = {}
        self._events: asyncio.Queue[SegmentEvent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._source: SpeechSource | None = None
        self._interrupted: set[str] = set()  # turn ids cut off by barge-in: their clips drop
        self._current_turn: str | None = None
        self._reply_lines: dict[str, tuple[Any, str]] = {}  # turn id -> (message, text so far)
        self.heard: list[Utterance] = []
        self.report_every_s = FAILURE_REPORT_S
        self._reported_failures = (0, 0)
        self.first_frame_at: float | None = None  # when the latest reply's first frame played

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Listen: attach the receiver and start the session's tasks."""
        self.link.attach(self.receiver)
        self._spawn(self._tick(), f"voice-tick-{self.channel_id}")
        self._spawn(self._consume(), f"voice-events-{self.channel_id}")

    async def close(self) -> None:
        """Stop listening and speaking."""
        if self._source is not None:
            self._source.barge_in("stop")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("voice task %s failed", task.get_name(), exc_info=task.exception())

    # -- listening (socket thread, then the event loop) --------------------------------------

    def _on_audio(self, user_id: int, pcm: bytes) -> None:
        resampler = self._resamplers.get(user_id)
        if resampler is None:
            resampler = self._resamplers[user_id] = StreamResampler()
        for event in self.segmenter.feed(str(user_id), resampler.push(pcm)):
            if isinstance(event, SpeechStarted):
                self._barge_in()  # at once, from this thread: no hop through the loop
            elif isinstance(event, SpeechFinished):
                self._unduck()
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _unduck(self) -> None:
        source = self._source
        if source is not None and not self.segmenter.speaking():  # nobody else still talks
            source.release()

    def forget(self, user_id: int) -> None:
        """A speaker left the channel: drop what they were saying."""
        self.segmenter.drop(str(user_id))
        self._resamplers.pop(user_id, None)

    def _barge_in(self) -> None:
        source = self._source
        if source is None or source.ended or self.options.barge_in == "off":
            return
        source.barge_in(self.options.barge_in, self.options.duck_volume)
        if self.options.barge_in == "stop" and self._current_turn is not None:
            self._interrupted.add(self._current_turn)

    def _on_failures(self, user_id: int) -> None:
        log.warning(
            "voice: %s packets in a row from user %s could not be decrypted; re-joining",
            self.options.rejoin_after_failures,
            user_id,
        )
        if self._on_rejoin is not None:
            # The feature re-joins: the new connection outlives this session and its tasks.
            self._loop.call_soon_threadsafe(self._on_rejoin)

    async def _tick(self) -> None:
        reported = self._loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            if self._loop.time() - reported >= self.report_every_s:
                reported = self._loop.time()
                self._report_failures()
            for event in self.segmenter.tick():
                if isinstance(event, SpeechFinished):
                    self._unduck()
                self._events.put_nowait(event)

    async def _consume(self) -> None:
        while True:
            event = await self._events.get()
            if isinstance(event, SpeechFinished) and event.audio is not None:
                self._spawn(self._answer(event), f"voice-stt-{event.speaker}")

    async def _answer(self, event: SpeechFinished) -> None:
        assert event.audio is not None
        user_id = int(event.speaker)
        try:
            transcript = await self._stt.transcribe(event.audio, language=self.options.language)
        except LipcastError as err:
            log.warning("voice: speech of user %s not transcribed: %s", user_id, err)
            return
        if not transcript.text:
            return
        name = self._name_of(user_id)
        utterance = Utterance(
            platform="discord",
            channel=str(self.channel_id),
            guild=str(self.guild_id),
            viewer_scope=str(self.guild_id),  # one history with the viewer's text messages
            user=str(user_id),
            user_name=name,
            text=transcript.text,
            trigger="voice",
            language=transcript.language,
        )
        self.heard.append(utterance)
        await self._post(f"🎙 {name}: {transcript.text}")
        admission = await self._listener.hear(utterance)
        if not admission.accepted:
            log.info("voice: %s not answered (%s)", name, admission.reason)

    def _report_failures(self) -> None:
        """Log the decryption failures since the last report, per speaker (none: no line)."""
        stats = self.receiver.stats()
        dave = sum(s.dave_failures for s in stats.values())
        transport = sum(s.transport_failures for s in stats.values())
        last_dave, last_transport = self._reported_failures
        if (dave, transport) == (last_dave, last_transport):
            return
        self._reported_failures = (dave, transport)
        speakers = ", ".join(
            f"{self._name_of(user)}: {s.dave_failures} DAVE, {s.transport_failures} corrupt"
            for user, s in stats.items()
            if s.dave_failures or s.transport_failures
        )
        log.warning(
            "voice receive in channel %s: %d packets not decryptable (DAVE) and %d corrupt since "
            "the last report (%s); `lipcast doctor` shows the totals while lipcast runs",
            self.channel_id,
            dave - last_dave,
            transport - last_transport,
            speakers,
        )

    # -- speaking ----------------------------------------------------------------------------

    async def play(self, clip: Clip) -> None:
        """Queue one clip's speech; a reply cut off by barge-in plays no further."""
        turn = clip.turn.turn_id
        if turn in self._interrupted:
            return
        await self._post_reply(clip)
        if clip.audio is None:
            return
        self._current_turn = turn
        source = self._source
        if source is not None and await asyncio.to_thread(source.add, clip.audio, clip.text):
            return
        source = SpeechSource(on_first_frame=self._first_frame)
        await asyncio.to_thread(source.add, clip.audio, clip.text)
        self._source = source
        if self.link.is_playing():  # the last source has ended; its player may not have yet
            self.link.stop()
        self.link.play(source, after=self._played)

    def _first_frame(self, at: float) -> None:
        self.first_frame_at = at

    def _played(self, error: Exception | None) -> None:
        if error is not None:
            log.warning("voice: playback ended with an error: %s", error)

    async def _post(self, text: str, media: tuple[bytes, str] | None = None) -> Any:
        if self._poster is None or self.options.text_channel is None:
            return None
        try:
            return await self._poster.post(self.options.text_channel, text[:2000], media)
        except Exception as err:  # noqa: BLE001 - a chat line must never stop the voice
            log.warning("voice: could not post in the linked text channel: %s", err)
            return None

    async def _post_reply(self, clip: Clip) -> None:
        """The reply's text in the linked channel: one message per reply, grown per sentence."""
        if self._poster is None or self.options.text_channel is None:
            return
        turn = clip.turn.turn_id
        media = None
        if self.options.post_clips and clip.media and clip.content_type.startswith("video/"):
            media = (clip.media, f"{turn}-{clip.seq}.mp4")
        name = clip.turn.persona_name or "persona"
        previous = self._reply_lines.get(turn)
        if previous is None or media is not None:
            text = f"{name}: {clip.text}"
            message = await self._post(text, media)
            self._reply_lines[turn] = (message, text)
            return
        message, text = previous
        text = f"{text} {clip.text}"
        self._reply_lines[turn] = (message, text)
        if message is not None:
            try:
                await self._poster.edit(message, text[:2000])
            except Exception as err:  # noqa: BLE001 - see _post
                log.warning("voice: could not edit the reply line: %s", err)

    # -- doctor ------------------------------------------------------------------------------

    def stats(self) -> dict[int, SpeakerStats]:
        return self.receiver.stats()


def receive_report(sessions: list[VoiceSession]) -> list[Readiness]:
    """Doctor lines for the joined channels: packets and decrypt failures per speaker."""
    lines = []
    for session in sessions:
        stats = session.stats()
        packets = sum(s.packets for s in stats.values())
        dave = sum(s.dave_failures for s in stats.values())
        transport = sum(s.transport_failures for s in stats.values())
        lost = sum(s.lost for s in stats.values())
        failing = [str(user) for user, s in stats.items() if s.failures_in_a_row >= 5]
        detail = (
            f"voice receive in channel {session.channel_id}: {len(stats)} speakers, "
            f"{packets} packets, {dave} not decryptable (DAVE), {transport} corrupt, {lost} lost"
        )
        if failing:
            detail += f"; failing now for users {', '.join(failing)}"
        lines.append(Readiness(ok=not failing, detail=detail, warning=bool(dave or transport)))
    return lines


class DiscordPoster:
    """:class:`TextChannelPoster` through discord.py (mentions never ping)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def post(self, channel_id: int, text: str, media: tuple[bytes, str] | None) -> Any:
        import io

        import discord

        channel = self._client.get_channel(channel_id) or await self._client.fetch_channel(
            channel_id
        )
        file = discord.File(io.BytesIO(media[0]), filename=media[1]) if media else None
        kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if file is not None:
            kwargs["file"] = file
        return await channel.send(text, **kwargs)

    async def edit(self, message: Any, text: str) -> None:
        await message.edit(content=text)


class VoiceFeature:
    """``/join``, ``/leave`` and spoken replies, for the Discord adapter."""

    def __init__(self, *, stt: STT, options: VoiceOptions, vad: SileroVAD | None = None) -> None:
        self._stt = stt
        self.options = options
        self._vad = vad or SileroVAD()
        self._sessions: dict[int, VoiceSession] = {}
        self._client: Any = None
        self._listener: Listener | None = None
        self._rejoining: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._left: set[int] = set()  # guilds where /leave was used: not joined again by routes
        self.auto_joined: dict[int, str] = {}  # a route's voice channel -> how joining it went
        self.live_report_every_s = LIVE_REPORT_S

    async def setup(self, client: Any, tree: Any, listener: Listener) -> None:
        """Register ``/join`` and ``/leave`` on ``tree``; load the VAD and STT models."""
        from discord import app_commands

        self._client = client
        self._listener = listener
        await asyncio.to_thread(self._vad.load)
        await self._stt.warm_up()
        feature = self

        @app_commands.command(name="join", description="Join your voice channel and listen")
        @app_commands.guild_only()
        async def join(interaction: Any) -> None:
            await feature._join_command(interaction)

        @app_commands.command(name="leave", description="Leave the voice channel")
        @app_commands.guild_only()
        async def leave(interaction: Any) -> None:
            left = interaction.guild is not None and await feature.leave(interaction.guild.id)
            if interaction.guild is not None:
                feature._left.add(interaction.guild.id)  # a route's join waits for /join
            await interaction.response.send_message(
                "Left the voice channel." if left else "I am not in a voice channel here.",
                ephemeral=True,
            )

        tree.add_command(join)
        tree.add_command(leave)
        if self.options.auto_join:
            self._spawn(self._join_on_ready(), "voice-auto-join")
        if self.options.live_report is not None:
            self._spawn(self._write_live_report(self.options.live_report), "voice-live-report")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coroutine`` as a named task of the feature (cancelled by :meth:`close`)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_live_report(self, path: Path) -> None:
        """Every few seconds, the doctor lines only this process knows (the routes' channels,
        the joined channels' packets and failures) to ``path``, for ``lipcast doctor``."""
        try:
            while True:
                lines = [*self._route_lines(), *receive_report(list(self._sessions.values()))]
                try:
                    await asyncio.to_thread(write_live_report, path, lines)
                except OSError as err:
                    log.warning("voice: cannot write %s for lipcast doctor: %s", path, err)
                    return
                await asyncio.sleep(self.live_report_every_s)
        finally:  # this lipcast no longer hears: no report
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _join_on_ready(self) -> None:
        """Join the routes' voice channels each time the gateway is ready (at start and after a
        new gateway session), never failing: each channel's outcome is logged and kept."""
        if self._client.is_ready():
            await self.join_routes()
        while True:
            await self._client.wait_for("ready")
            await self.join_routes()

    async def join_routes(self) -> None:
        """Join each voice channel a route names with ``join = true`` that the bot is not in."""
        for channel_id in self.options.auto_join:
            outcome = await self._join_route(channel_id)
            self.auto_joined[channel_id] = outcome
            if outcome != "joined":
                log.warning("voice: the route's channel %s is not joined: %s", channel_id, outcome)

    async def _join_route(self, channel_id: int) -> str:
        import discord

        channel = self._client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self._client.fetch_channel(channel_id)
            except discord.HTTPException as err:
                return f"Discord says {err.status} {err.text or ''}".strip() + (
                    " (is the bot in that server, and may it view the channel?)"
                )
        if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            return f"#{getattr(channel, 'name', channel_id)} is not a voice channel"
        guild = channel.guild
        if guild.id in self._left:
            return "/leave was used in this server; /join listens again"
        session = self._sessions.get(guild.id)
        if session is not None:
            if session.channel_id == channel.id:
                return "joined"
            return (
                f"the bot already listens in channel {session.channel_id} of this server, and "
                "Discord allows one voice channel per server"
            )
        try:
            await self.join(channel)
        except Exception as err:  # noqa: BLE001 - discord.py's ClientException, timeouts, ...
            return f"joining failed: {_why(err)}"
        return "joined"

    async def _join_command(self, interaction: Any) -> None:
        voice = getattr(interaction.user, "voice", None)
        channel = getattr(voice, "channel", None)
        if channel is None:
            await interaction.response.send_message(
                "Join a voice channel first, then use /join.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        self._left.discard(channel.guild.id)
        try:
            await self.join(channel)
        except Exception as err:  # noqa: BLE001 - told to the user, in one line
            log.warning("voice: /join in %s failed: %s", channel.id, err)
            await interaction.followup.send(f"Could not join {channel.mention}: {err}")
            return
        await interaction.followup.send(f"Listening in {channel.mention}. Talk to me!")

    async def join(self, channel: Any) -> VoiceSession:
        """Connect to ``channel`` (a voice or stage channel) and listen there."""
        from bots.discord.voice.client import ListeningVoiceClient

        if self._listener is None:
            raise RuntimeError("VoiceFeature.setup() was not called")
        guild = channel.guild
        await self.leave(guild.id)
        link = await channel.connect(cls=ListeningVoiceClient, self_deaf=False, self_mute=False)

        def name_of(user_id: int) -> str:
            member = guild.get_member(user_id)
            return str(member.display_name) if member is not None else str(user_id)

        def rejoin() -> None:
            if guild.id in self._rejoining:
                return
            self._rejoining.add(guild.id)
            self._spawn(self._rejoin(channel), f"voice-rejoin-{channel.id}")

        session = VoiceSession(
            link=link,
            guild_id=guild.id,
            channel_id=channel.id,
            listener=self._listener,
            stt=self._stt,
            vad=self._vad,
            options=self.options,
            name_of=name_of,
            poster=DiscordPoster(self._client),
            on_rejoin=rejoin,
        )
        link.on_speaker_left = session.forget
        session.start()
        self._sessions[guild.id] = session
        log.info("voice: listening in %s (%s)", channel.name, channel.id)
        return session

    async def _rejoin(self, channel: Any) -> None:
        try:
            await self.join(channel)
            log.info("voice: re-joined %s with a fresh session", channel.id)
        except Exception as err:  # noqa: BLE001 - logged; /join tries again
            log.warning("voice: re-joining %s failed: %s; use /join", channel.id, err)
        finally:
            self._rejoining.discard(channel.guild.id)

    async def leave(self, guild_id: int) -> bool:
        """Disconnect from the guild's voice channel; False when not in one."""
        session = self._sessions.pop(guild_id, None)
        if session is None:
            return False
        await session.close()
        await session.link.disconnect(force=True)
        return True

    async def play(self, clip: Clip) -> None:
        """Speak a released clip in the voice channel its utterance came from."""
        origin = clip.turn.utterance
        if origin.guild is None:
            return
        session = self._sessions.get(int(origin.guild))
        if session is not None and str(session.channel_id) == origin.channel:
            await session.play(clip)

    async def transcribe_message(self, data: bytes) -> str:
        """The words of a Discord voice message's attachment, by the same speech-to-text."""
        from bots.discord.voice.messages import transcribe_voice_message

        return await transcribe_voice_message(data, self._stt, language=self.options.language)

    async def check(self) -> list[Readiness]:
        """Doctor lines: what voice receive needs, the routes' voice channels, and the joined
        channels' failure counts."""
        return [
            *voice_requirements(),
            *self._route_lines(),
            *receive_report(list(self._sessions.values())),
        ]

    def _route_lines(self) -> list[Readiness]:
        lines = []
        for channel_id in self.options.auto_join:
            outcome = self.auto_joined.get(channel_id)
            if outcome is None:
                detail = f"voice channel {channel_id} (a route's join): joined when lipcast runs"
                lines.append(Readiness(ok=True, detail=detail))
            else:
                detail = f"voice channel {channel_id} (a route's join): {outcome}"
                lines.append(Readiness(ok=outcome == "joined", detail=detail))
        return lines

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for guild_id in list(self._sessions):
            await self.leave(guild_id)
        await self._stt.aclose()


def write_live_report(path: Path, lines: list[Readiness]) -> None:
    """``lines`` to ``path`` as JSON with the time, whole or not at all."""
    data = {
        "written_at": time.time(),
        "lines": [dataclasses.asdict(line) for line in lines],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    temporary.write_text(json.dumps(data), encoding="utf-8")
    temporary.replace(path)


def read_live_report(path: Path, *, stale_s: float = LIVE_REPORT_STALE_S) -> list[Readiness] | None:
    """The doctor lines a running lipcast wrote to ``path``; None when there are none, they
    are older than ``stale_s`` (that lipcast stopped), or the file is not such a report."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if time.time() - float(data["written_at"]) > stale_s:
            return None
        return [
            Readiness(
                ok=bool(line["ok"]), detail=str(line["detail"]), warning=bool(line["warning"])
            )
            for line in data["lines"]
        ]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _why(err: BaseException) -> str:
    """One line about a failed join: discord.py's message, or the exception's name."""
    return str(err) or type(err).__name__


def voice_requirements() -> list[Readiness]:
    """Whether this machine can receive and send Discord voice under DAVE."""
    import importlib.util

    lines = []
    for module, package in (("nacl", "PyNaCl"), ("davey", "davey")):
        if importlib.util.find_spec(module) is None:
            lines.append(
                Readiness(
                    ok=False,
                    detail=f'voice needs {package}: pip install "lipcast[voice]"',
                )
            )
    try:
        import discord.opus

        discord.opus.Decoder()  # type: ignore[no-untyped-call]
        opus = "libopus loaded"
    except Exception as err:  # noqa: BLE001 - discord.opus.OpusNotLoaded and ctypes errors
        lines.append(
            Readiness(ok=False, detail=f"voice needs libopus (apt install libopus0): {err}")
        )
        opus = ""
    if not lines:
        import davey

        lines.append(
            Readiness(
                ok=True,
                detail=f"voice receive: DAVE v{davey.DAVE_PROTOCOL_VERSION} (davey "
                f"{davey.__version__}), {opus}; tested offline only, against real packets "
                "made on this machine, not yet against Discord's servers",
            )
        )
    return lines
