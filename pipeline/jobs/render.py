"""Turning a persona's line of text into a clip: TTS, then lip-sync frames, then H.264/AAC.

For the overlay alone no frame is drawn: the speech and the sprite's timeline are enough
(:meth:`ClipRenderer.speak_line`).

:class:`ClipRenderer` is what the render worker runs for each job and what ``lipcast say``
runs once. The audio is synthesised first (eSpeak and Piper are many times faster than real
time), then frames are rendered and fed straight into the encoder in a worker thread, so a
long reply never holds all its frames in memory and the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lipsync.avatar import Avatar, FaceGeometry, hex_to_rgb, load_avatar
from lipsync.encode import EncodeOptions, encode_fragments, encode_mp4_bytes, encode_mp4_file
from lipsync.errors import LipsyncError
from lipsync.renderer import Frame, Renderer, frames_for_encoder
from lipsync.sprite import SpriteRenderer
from lipsync.timeline import TIMELINE_CONTENT_TYPE, Timeline, sprite_timeline
from personas import Persona
from pipeline.audio import AudioChunk, concat
from pipeline.backends import BackendSpec
from pipeline.clips import pcm_content_type
from pipeline.errors import InputError, PersonaError, RenderError
from pipeline.jobs.wire import RenderJob
from pipeline.jobs.worker import ResultChunk
from pipeline.services.tts import TTS, Voice

Progress = Callable[[int, int], None]  # (frames done, frames in all)

RENDERERS: dict[str, BackendSpec] = {  # ``[render] renderer`` in bot.toml
    "sprite": BackendSpec(
        target="lipsync.sprite:SpriteRenderer",
        description="drawn mouth shapes, blinks and head motion; CPU, no model weights",
    ),
    "wav2lip": BackendSpec(
        target="lipsync.wav2lip.renderer:Wav2LipRenderer",
        requires=("torch",),
        package="torch",
        extra="wav2lip",
        description="the Wav2Lip generator on a checkpoint you download; torch or ONNX Runtime",
    ),
}


@dataclass(frozen=True, kw_only=True)
class RenderedClip:
    """A finished clip: MP4 bytes (or a file) and what it took to make it."""

    mp4: bytes | None  # None when written to a file
    path: Path | None
    duration_s: float  # the audio's duration
    frames: int
    fps: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds: tts, render, encode
    audio: AudioChunk | None = field(default=None, repr=False)  # the speech it was made from


@dataclass(frozen=True, kw_only=True)
class SpokenLine:
    """A line's speech and, for a renderer that has one, its timeline (no video made)."""

    audio: AudioChunk = field(repr=False)
    timeline: Timeline | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: tts, timeline


def avatar_for(persona: Persona) -> Avatar:
    """The persona's avatar with its declared geometry, or with its face detected."""
    spec = persona.spec.avatar
    geometry = None
    if spec.mouth and spec.mouth_width and spec.eyes and spec.eye_size:
        geometry = FaceGeometry(
            mouth=(float(spec.mouth[0]), float(spec.mouth[1])),
            mouth_width=float(spec.mouth_width),
            eyes=(
                (float(spec.eyes[0][0]), float(spec.eyes[0][1])),
                (float(spec.eyes[1][0]), float(spec.eyes[1][1])),
            ),
            eye_size=(float(spec.eye_size[0]), float(spec.eye_size[1])),
            skin=hex_to_rgb(spec.skin) if spec.skin else None,
            lip=hex_to_rgb(spec.lip) if spec.lip else None,
        )
    try:
        return load_avatar(persona.avatar_path, geometry)
    except LipsyncError as err:
        raise PersonaError(f"persona {persona.id!r}: {err}") from err


class ClipRenderer:
    """TTS → renderer → encoder for one persona line at a time."""

    def __init__(
        self,
        *,
        tts: TTS,
        tts_name: str,
        renderer: Renderer,
        encode: EncodeOptions,
    ) -> None:
        self.tts = tts
        self.tts_name = tts_name
        self.renderer = renderer
        self.encode = encode
        self._avatars: dict[tuple[str, float], Avatar] = {}

    def avatar(self, persona: Persona) -> Avatar:
        """The persona's avatar, read and analysed once per file version."""
        key = (str(persona.avatar_path), persona.avatar_path.stat().st_mtime)
        if key not in self._avatars:
            self._avatars[key] = avatar_for(persona)
        return self._avatars[key]

    def voice(self, persona: Persona) -> Voice:
        return Voice(language=persona.language, name=persona.voice_for(self.tts_name))

    async def speak(self, text: str, persona: Persona) -> AudioChunk:
        """The persona's voice saying ``text``, as one piece of audio."""
        chunks = [chunk async for chunk in self.tts.synthesize(text, self.voice(persona))]
        audio = concat(chunks)
        if audio.duration_s <= 0:
            raise InputError("the text-to-speech backend produced no audio for this text")
        return audio

    def timeline(self, audio: AudioChunk, avatar: Avatar, start_frame: int = 0) -> Timeline | None:
        """What the renderer would draw for ``audio`` from ``start_frame`` on, frame by frame;
        None for a renderer that draws video (wav2lip), whose picture only an MP4 carries."""
        if not isinstance(self.renderer, SpriteRenderer):
            return None
        return sprite_timeline(
            audio.samples,
            audio.sample_rate,
            fps=self.renderer.fps,
            size=self.renderer.size,
            seed=avatar.key,
            start_frame=start_frame,
        )

    def start_frame(self, start_s: float) -> int:
        """The renderer's frame number ``start_s`` seconds into the persona's take."""
        return round(start_s * self.renderer.fps)

    async def speak_line(self, text: str, persona: Persona, start_frame: int = 0) -> SpokenLine:
        """``text`` spoken by ``persona`` and its timeline (from ``start_frame``: see
        :meth:`render_audio`), without drawing or encoding video."""
        loop = asyncio.get_running_loop()
        avatar = await loop.run_in_executor(None, self.avatar, persona)
        started = time.perf_counter()
        audio = await self.speak(text, persona)
        tts_s = time.perf_counter() - started
        begun = time.perf_counter()
        timeline = await loop.run_in_executor(None, self.timeline, audio, avatar, start_frame)
        timings = {"tts": tts_s, "timeline": time.perf_counter() - begun}
        return SpokenLine(audio=audio, timeline=timeline, timings=timings)

    async def render(
        self,
        text: str,
        persona: Persona,
        *,
        path: Path | None = None,
        progress: Progress | None = None,
    ) -> RenderedClip:
        """Render ``text`` spoken by ``persona`` to MP4 bytes, or to a fast-start file."""
        started = time.perf_counter()
        audio = await self.speak(text, persona)
        tts_s = time.perf_counter() - started
        return await self.render_audio(audio, persona, path=path, progress=progress, tts_s=tts_s)

    async def render_audio(
        self,
        audio: AudioChunk,
        persona: Persona,
        *,
        path: Path | None = None,
        progress: Progress | None = None,
        tts_s: float = 0.0,
        start_frame: int = 0,
    ) -> RenderedClip:
        """Render speech already synthesised (``tts_s`` took) to MP4 bytes or a file.

        ``start_frame`` is where the clip starts in the persona's take: its head motion and
        blinks carry on from the clip before it (:meth:`start_frame` of that clip's start plus
        its length)."""
        loop = asyncio.get_running_loop()
        # reading the image and finding its face is file and CPU work: off the event loop
        avatar = await loop.run_in_executor(None, self.avatar, persona)
        stop = threading.Event()
        work = loop.run_in_executor(
            None,
            self._render_sync,
            audio,
            persona,
            avatar,
            path,
            progress,
            tts_s,
            start_frame,
            stop,
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # An executor thread cannot be cancelled from outside: ask it to stop at the next
            # frame and wait for it, so that the partial file is gone when this returns.
            stop.set()
            with contextlib.suppress(RenderCancelled):
                await work
            raise

    def _frames(
        self, audio: AudioChunk, persona: Persona, avatar: Avatar, start_frame: int
    ) -> Iterator[Frame]:
        """The renderer's frames of ``audio``, as the encoder takes them best."""
        return frames_for_encoder(
            self.renderer,
            audio.samples,
            audio.sample_rate,
            avatar,
            start_frame=start_frame,
            background=hex_to_rgb(persona.spec.avatar.background),
        )

    def _render_sync(
        self,
        audio: AudioChunk,
        persona: Persona,
        avatar: Avatar,
        path: Path | None,
        progress: Progress | None,
        tts_s: float,
        start_frame: int,
        stop: threading.Event,
    ) -> RenderedClip:
        total = max(1, round(audio.duration_s * self.renderer.fps))
        render_s = 0.0
        count = 0

        def frames() -> Iterator[Frame]:
            nonlocal render_s, count
            source = self._frames(audio, persona, avatar, start_frame)
            while True:
                if stop.is_set():
                    raise RenderCancelled("the render was cancelled")
                begun = time.perf_counter()
                frame = next(source, None)
                render_s += time.perf_counter() - begun
                if frame is None:
                    return
                count += 1
                if progress is not None:
                    progress(count, total)
                yield frame

        started = time.perf_counter()
        try:
            if path is None:
                data: bytes | None = encode_mp4_bytes(
                    frames(), audio.samples, audio.sample_rate, self.encode
                )
            else:
                encode_mp4_file(path, frames(), audio.samples, audio.sample_rate, self.encode)
                data = None
        except LipsyncError as err:
            raise RenderError(str(err)) from err
        elapsed = time.perf_counter() - started
        return RenderedClip(
            mp4=data,
            path=path,
            duration_s=audio.duration_s,
            frames=count,
            fps=self.renderer.fps,
            timings={"tts": tts_s, "render": render_s, "encode": elapsed - render_s},
            audio=audio,
        )

    async def video_fragments(
        self,
        audio: AudioChunk,
        persona: Persona,
        timings: dict[str, float],
        start_frame: int = 0,
    ) -> AsyncIterator[bytes]:
        """The video of ``audio`` as fragmented-MP4 pieces of about half a second, each
        yielded as soon as the encoder finishes it (a video renderer's sentence plays while the
        rest renders). ``timings`` gets ``render`` and ``encode`` seconds when it is done."""
        loop = asyncio.get_running_loop()
        avatar = await loop.run_in_executor(None, self.avatar, persona)
        pieces: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            def put(item: bytes | Exception | None) -> None:
                loop.call_soon_threadsafe(pieces.put_nowait, item)

            render_s = 0.0

            def frames() -> Iterator[Frame]:
                nonlocal render_s
                source = self._frames(audio, persona, avatar, start_frame)
                while not stop.is_set():
                    begun = time.perf_counter()
                    frame = next(source, None)
                    render_s += time.perf_counter() - begun
                    if frame is None:
                        return
                    yield frame
                raise RenderCancelled("the render was cancelled")

            started = time.perf_counter()
            try:
                for piece in encode_fragments(
                    frames(), audio.samples, audio.sample_rate, self.encode
                ):
                    put(piece)
            except Exception as err:  # noqa: BLE001 - handed to the event loop, which raises it
                put(err)
                return
            timings.update(render=render_s, encode=time.perf_counter() - started - render_s)
            put(None)

        done = loop.run_in_executor(None, work)
        try:
            while (item := await pieces.get()) is not None:
                if isinstance(item, LipsyncError):
                    raise RenderError(str(item)) from item
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()  # a consumer that stops early stops the render at the next frame
            with contextlib.suppress(RenderCancelled):
                await done


class RenderCancelled(Exception):
    """Stops a render thread between two frames (the caller was cancelled)."""


def _pcm_part(audio: AudioChunk) -> ResultChunk:
    return ResultChunk(
        media=audio.to_pcm16(),
        content_type=pcm_content_type(audio.sample_rate),
        duration_s=audio.duration_s,
    )


PersonaLoader = Callable[[str, str | None], Persona]  # (persona id, language) -> persona


class RenderJobHandler:
    """The render worker's job handler: one :class:`RenderJob` in, its result parts out.

    A job's parts, in order: the speech as PCM (:func:`pipeline.clips.pcm_content_type`); the
    sprite persona's timeline (:data:`~lipsync.timeline.TIMELINE_CONTENT_TYPE`) when the
    renderer has one; and the MP4 when the job asks for it (``RenderJob.mp4``). Without the
    MP4 no frame is drawn or encoded: the overlay page draws the persona from the timeline
    itself. A renderer that draws video (wav2lip) sends its MP4 as fragmented-MP4 parts of
    about half a second, each as soon as it is encoded; joined, they are one MP4 file.

    Personas are loaded once per (id, language) and kept; the clip renderer keeps each
    persona's prepared avatar, so a worker pays for avatar preparation once.
    """

    def __init__(self, clips: ClipRenderer, load_persona: PersonaLoader) -> None:
        self._clips = clips
        self._load_persona = load_persona
        self._personas: dict[tuple[str, str | None], Persona] = {}

    def persona(self, name: str, language: str | None) -> Persona:
        key = (name, language)
        if key not in self._personas:
            self._personas[key] = self._load_persona(name, language)
        return self._personas[key]

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        loop = asyncio.get_running_loop()
        persona = await loop.run_in_executor(None, self.persona, job.persona, job.language)
        start_frame = self._clips.start_frame(job.start_s)
        if not job.mp4:
            line = await self._clips.speak_line(job.text, persona, start_frame)
            if line.timeline is not None:
                yield _pcm_part(line.audio)
                yield ResultChunk(
                    media=line.timeline.to_json(),
                    content_type=TIMELINE_CONTENT_TYPE,
                    duration_s=line.timeline.duration_s,
                    timings=line.timings,
                    last=True,
                )
                return
        if not isinstance(self._clips.renderer, SpriteRenderer):
            async for part in self._stream_video(job, persona, start_frame):
                yield part
            return
        # The speech and the timeline go first, before any frame is drawn: a sink that shows
        # the timeline (the overlay) need not wait for the MP4 the others asked for.
        line = await self._clips.speak_line(job.text, persona, start_frame)
        yield _pcm_part(line.audio)
        if line.timeline is not None:
            yield ResultChunk(
                media=line.timeline.to_json(),
                content_type=TIMELINE_CONTENT_TYPE,
                duration_s=line.timeline.duration_s,
            )
        clip = await self._clips.render_audio(
            line.audio, persona, tts_s=line.timings["tts"], start_frame=start_frame
        )
        assert clip.mp4 is not None  # rendered to bytes, not to a file
        yield ResultChunk(
            media=clip.mp4, duration_s=clip.duration_s, timings=dict(clip.timings), last=True
        )

    async def _stream_video(
        self, job: RenderJob, persona: Persona, start_frame: int
    ) -> AsyncIterator[ResultChunk]:
        """A video renderer's sentence: its speech, then its MP4 fragment by fragment."""
        started = time.perf_counter()
        audio = await self._clips.speak(job.text, persona)
        timings = {"tts": time.perf_counter() - started}
        yield _pcm_part(audio)
        held: bytes | None = None  # one piece is held back: the last one carries ``last``
        async for piece in self._clips.video_fragments(audio, persona, timings, start_frame):
            if held is not None:
                yield ResultChunk(media=held)
            held = piece
        yield ResultChunk(
            media=held or b"", duration_s=audio.duration_s, timings=dict(timings), last=True
        )

    async def aclose(self) -> None:
        await self._clips.tts.aclose()
