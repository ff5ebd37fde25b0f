"""One MP4 from a reply's sentence clips, small enough for an upload limit.

A chat platform takes one attachment of at most so many bytes (Discord: 10 MiB on most servers,
less in a test). :func:`fit_clips` joins the sentence clips of a reply (each an MP4, fragmented
or not) into one fast-start MP4 and, when that is over the limit, encodes it again smaller: a
bitrate that fits the limit over the clip's duration, at a lower resolution when that bitrate
is too thin for the original one. When even the smallest picture at the lowest useful bitrate
cannot fit, it returns None and the caller posts the text alone.

Pure PyAV; the work is CPU-bound, so callers on an event loop run it in an executor.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lipsync.errors import EncodeError

AUDIO_RATE = 48_000
# Bitrates below these make a clip nobody wants to watch (or hear): text alone is better.
MIN_VIDEO_BITRATE = 48_000
MIN_AUDIO_BITRATE = 24_000
# Heights tried, largest first, when the original picture is too large for the bitrate.
HEIGHTS = (720, 576, 512, 480, 384, 320, 256, 192, 160, 128)
# Bits per pixel and frame at which H.264 still shows a talking face well enough.
GOOD_BITS_PER_PIXEL = 0.06
CONTAINER_OVERHEAD = 16_384  # bytes of moov/atoms beyond the streams, for short clips
HEADROOM = 0.9  # single-pass bitrate control overshoots; aim below the limit
ATTEMPTS = 3  # encodes tried at ever lower bitrates before giving up
LIKELY_TO_FIT = 1.5  # clips this much over the limit are not first joined at their quality


@dataclass(frozen=True, kw_only=True)
class FittedClip:
    """The joined clip, as it will be uploaded."""

    media: bytes
    width: int
    height: int
    duration_s: float
    reencoded: bool  # False: the clips were joined at their own quality


@dataclass(frozen=True)
class _Source:
    """The clips, measured: their picture size and frame rate (the first clip's), how many
    frames they hold, and their audio end to end. Frames are decoded again for each encode
    rather than held: a long reply's raw frames would take hundreds of megabytes."""

    parts: Sequence[bytes]
    frame_count: int
    width: int
    height: int
    fps: int
    audio: npt.NDArray[np.float32]  # mono, AUDIO_RATE

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def fit_clips(
    parts: Sequence[bytes], *, limit_bytes: int, crf: int = 23, preset: str = "veryfast"
) -> FittedClip | None:
    """Join ``parts`` (MP4 clips, in order) into one fast-start MP4 of at most ``limit_bytes``.

    First at ``crf`` and the original size; when that is too large, at a bitrate computed for
    the limit, smaller if needed, trying lower bitrates when the encoder overshoots. None when
    nothing watchable fits. Raises :class:`EncodeError` when a part cannot be decoded.
    """
    if not parts:
        raise EncodeError("no clips to join")
    source = _decode(parts)
    # Joined at their own quality they come out about as large as they are: worth a try only
    # when that is not far over the limit.
    if sum(map(len, parts)) <= limit_bytes * LIKELY_TO_FIT:
        first = _encode(source, source.width, source.height, crf=crf, preset=preset)
        if len(first) <= limit_bytes:
            return FittedClip(
                media=first,
                width=source.width,
                height=source.height,
                duration_s=source.duration_s,
                reencoded=False,
            )
    duration = max(source.duration_s, 0.1)
    budget_bits = (limit_bytes - CONTAINER_OVERHEAD) * 8 * HEADROOM
    audio_bitrate = 64_000 if budget_bits / duration > 400_000 else 32_000
    video_bitrate = budget_bits / duration - audio_bitrate
    for _ in range(ATTEMPTS):
        if video_bitrate < MIN_VIDEO_BITRATE:
            return None
        width, height = _size_for(source, video_bitrate)
        media = _encode(
            source,
            width,
            height,
            video_bitrate=int(video_bitrate),
            audio_bitrate=audio_bitrate,
            preset=preset,
        )
        if len(media) <= limit_bytes:
            return FittedClip(
                media=media, width=width, height=height, duration_s=duration, reencoded=True
            )
        # Over by some margin: aim lower by as much, and a little more.
        video_bitrate *= limit_bytes / len(media) * 0.85
        audio_bitrate = max(MIN_AUDIO_BITRATE, audio_bitrate // 2)
    return None


def _size_for(source: _Source, video_bitrate: float) -> tuple[int, int]:
    """The largest picture (keeping the aspect) that ``video_bitrate`` fills well enough."""
    aspect = source.width / source.height
    candidates = [h for h in HEIGHTS if h < source.height]
    for height in [source.height, *candidates]:
        width = _even(height * aspect)
        if video_bitrate / (width * height * source.fps) >= GOOD_BITS_PER_PIXEL:
            return width, _even(height)
    height = min(source.height, HEIGHTS[-1])
    return _even(height * aspect), _even(height)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _decode(parts: Sequence[bytes]) -> _Source:
    """Every frame (at the first clip's size) and the audio of each clip, end to end; each
    clip's audio is padded or cut to its picture, so the sentences stay in sync."""
    import av

    frame_count = 0
    audio: list[npt.NDArray[np.float32]] = []
    width = height = fps = 0
    for index, part in enumerate(parts):
        try:
            with av.open(io.BytesIO(part), mode="r") as container:
                if not container.streams.video:
                    raise EncodeError(f"clip {index + 1} has no picture")
                video = container.streams.video[0]
                if not fps:
                    # the stream's frame rate; its average over a fragmented file's duration
                    # is skewed by the audio's length
                    rate = video.base_rate or video.guessed_rate or video.average_rate
                    fps = round(float(rate or 25)) or 25
                count = 0
                for frame in container.decode(video):
                    if not width:
                        width, height = _even(frame.width), _even(frame.height)
                    count += 1
            samples = _decode_audio(part)
        except av.FFmpegError as err:
            raise EncodeError(f"clip {index + 1} cannot be decoded: {err}") from err
        wanted = round(count / fps * AUDIO_RATE)
        if len(samples) < wanted:
            samples = np.concatenate([samples, np.zeros(wanted - len(samples), np.float32)])
        audio.append(samples[:wanted])
        frame_count += count
    if not frame_count:
        raise EncodeError("the clips hold no frames")
    return _Source(
        parts=parts,
        frame_count=frame_count,
        width=width,
        height=height,
        fps=fps,
        audio=np.concatenate(audio).astype(np.float32),
    )


def _decode_audio(part: bytes) -> npt.NDArray[np.float32]:
    """A clip's audio as mono float32 at AUDIO_RATE; empty when it has none."""
    import av

    with av.open(io.BytesIO(part), mode="r") as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks: list[npt.NDArray[np.float32]] = []
        for frame in container.decode(container.streams.audio[0]):
            frame.pts = None  # the resampler keeps its own clock
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32)


def _encode(
    source: _Source,
    width: int,
    height: int,
    *,
    crf: int | None = None,
    video_bitrate: int | None = None,
    audio_bitrate: int = 96_000,
    preset: str = "veryfast",
) -> bytes:
    """``source`` as a fast-start MP4 (H.264 + AAC) at ``width`` x ``height``."""
    import av

    # Fast start rewrites the file's head when it ends: that needs a real file, not a buffer.
    handle, name = tempfile.mkstemp(prefix="lipcast-fit-", suffix=".mp4")
    os.close(handle)
    path = Path(name)
    try:
        container = av.open(name, mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            video = container.add_stream("libx264", rate=source.fps)
            video.width, video.height = width, height
            video.pix_fmt = "yuv420p"
            options: dict[str, str] = {"preset": preset, "threads": "1", "profile": "high"}
            if video_bitrate is not None:
                video.bit_rate = video_bitrate
                # A bounded buffer keeps the encoder near the asked rate over short clips.
                options["maxrate"] = str(video_bitrate)
                options["bufsize"] = str(video_bitrate)
            else:
                options["crf"] = str(crf if crf is not None else 23)
            video.options = {**options}
            audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            audio.bit_rate = audio_bitrate
            frame_time = Fraction(1, source.fps)
            for pts, frame in enumerate(_frames(source, width, height)):
                frame.pts, frame.time_base = pts, frame_time
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
            if len(source.audio):
                pcm = np.clip(source.audio, -1.0, 1.0).reshape(1, -1)
                audio_frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
                audio_frame.sample_rate = AUDIO_RATE
                audio_frame.pts = 0
                resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
                for resampled in [*resampler.resample(audio_frame), *resampler.resample(None)]:
                    container.mux(audio.encode(resampled))
            container.mux(audio.encode(None))
        finally:
            container.close()
        return path.read_bytes()
    except (av.FFmpegError, ValueError, OSError) as err:
        raise EncodeError(f"encoding the joined clip failed: {err}") from err
    finally:
        path.unlink(missing_ok=True)


def _frames(source: _Source, width: int, height: int) -> Iterator[Any]:
    """Every frame of the clips in order, decoded again and scaled to ``width`` x ``height``."""
    import av

    for part in source.parts:
        with av.open(io.BytesIO(part), mode="r") as container:
            for frame in container.decode(container.streams.video[0]):
                scaled = frame.reformat(width=width, height=height, format="yuv420p")
                scaled.pts = None
                yield scaled
