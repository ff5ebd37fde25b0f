"""Encoding frames and audio into browser-playable MP4 (H.264 + AAC) with PyAV.

Two forms: fast-start files (``moov`` first, for files people open) and fragmented MP4 (for
bytes that travel in messages and play while they arrive). Audio is resampled to 48 kHz, the
rate Discord and browsers prefer.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from lipsync.errors import EncodeError
from lipsync.renderer import Frame

AUDIO_RATE = 48_000
AUDIO_BITRATE = 96_000
FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
# What a page's Media Source Extensions are told a streamed clip holds: H.264 High profile
# (level 3.1 covers the sizes lipcast renders) and AAC-LC.
STREAM_MIME = 'video/mp4; codecs="avc1.64001f, mp4a.40.2"'
AAC_FRAME = 1024  # samples per AAC frame

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


@dataclass(frozen=True, kw_only=True)
class EncodeOptions:
    fps: int = 25
    crf: int = 23
    preset: Preset = "veryfast"
    threads: int = 1  # x264 threads; one keeps several workers from fighting over cores


def _encode(
    target: str | io.BytesIO,
    frames: Iterable[Frame],
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    options: EncodeOptions,
    movflags: str,
) -> int:
    import av
    import cv2

    container = av.open(target, mode="w", format="mp4", options={"movflags": movflags})
    try:
        video = None
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = AUDIO_BITRATE
        count = 0
        for frame in frames:
            if video is None:
                height, width = frame.shape[:2]
                if width % 2 or height % 2:
                    raise EncodeError(f"frame size {width}x{height} must be even for H.264")
                video = container.add_stream("libx264", rate=options.fps)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                video.options = {
                    "preset": options.preset,
                    "crf": str(options.crf),
                    "threads": str(options.threads),
                    "profile": "high",
                }
            yuv = np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)
            video_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            video_frame.pts = count
            container.mux(video.encode(video_frame))
            count += 1
        if video is None:
            raise EncodeError("no video frames to encode")
        container.mux(video.encode(None))
        pcm = np.clip(samples, -1.0, 1.0).astype(np.float32).reshape(1, -1)
        audio_frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
        audio_frame.sample_rate = sample_rate
        audio_frame.pts = 0
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        for resampled in [*resampler.resample(audio_frame), *resampler.resample(None)]:
            container.mux(audio.encode(resampled))
        container.mux(audio.encode(None))
    except EncodeError:
        raise
    except (av.FFmpegError, ValueError) as err:
        raise EncodeError(f"encoding the clip failed: {err}") from err
    finally:
        container.close()
    return count


def encode_mp4_bytes(
    frames: Iterable[Frame],
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    options: EncodeOptions | None = None,
) -> bytes:
    """A fragmented MP4 in memory (plays in browsers and MSE while it arrives)."""
    buffer = io.BytesIO()
    _encode(buffer, frames, samples, sample_rate, options or EncodeOptions(), FRAGMENTED)
    return buffer.getvalue()


def encode_mp4_file(
    path: Path,
    frames: Iterable[Frame],
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    options: EncodeOptions | None = None,
) -> None:
    """A fast-start MP4 at ``path``, written whole or not at all.

    The clip is encoded next to its destination and moved into place only when complete, so an
    error or an interruption never leaves a half-written file behind.
    """
    folder = path.parent if str(path.parent) else Path()
    if not folder.is_dir():
        raise EncodeError(f"{path}: the folder {folder} does not exist")
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as err:
        raise EncodeError(f"{path}: cannot write there: {err.strerror or err}") from err
    os.close(handle)
    Path(temp_name).chmod(0o644)  # mkstemp makes files private; a clip is for sharing
    try:
        _encode(temp_name, frames, samples, sample_rate, options or EncodeOptions(), "+faststart")
        Path(temp_name).replace(path)
    except OSError as err:
        raise EncodeError(f"{path}: cannot write the clip: {err.strerror or err}") from err
    finally:
        Path(temp_name).unlink(missing_ok=True)


def encode_fragments(
    frames: Iterable[Frame],
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    options: EncodeOptions | None = None,
    *,
    fragment_s: float = 0.5,
) -> Iterator[bytes]:
    """A fragmented MP4, yielded piece by piece as it is encoded: first the initialisation
    segment, then one fragment (``moof`` + ``mdat``, video with its audio) about every
    ``fragment_s`` seconds, each as soon as the encoder finishes it. The pieces joined are one
    playable file; a page appends them to a Media Source as they come (:data:`STREAM_MIME`).
    """
    import av
    import cv2

    options = options or EncodeOptions()
    keyint = max(1, round(fragment_s * options.fps))
    buffer = io.BytesIO()
    sent = 0
    container = av.open(buffer, mode="w", format="mp4", options={"movflags": FRAGMENTED})
    try:
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = AUDIO_BITRATE
        pcm = np.clip(samples, -1.0, 1.0).astype(np.float32).reshape(1, -1)
        source = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
        source.sample_rate = sample_rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        resampled = [*resampler.resample(source), *resampler.resample(None)]
        speech = np.concatenate([f.to_ndarray().reshape(-1) for f in resampled]).astype(np.float32)
        video = None
        audio_done = 0
        for number, frame in enumerate(frames):
            if video is None:
                height, width = frame.shape[:2]
                if width % 2 or height % 2:
                    raise EncodeError(f"frame size {width}x{height} must be even for H.264")
                video = container.add_stream("libx264", rate=options.fps)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                video.options = {
                    "preset": options.preset,
                    "crf": str(options.crf),
                    "threads": str(options.threads),
                    "profile": "high",
                    # A keyframe, hence a fragment, every fragment_s; none in between.
                    "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
                }
            yuv = np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)
            picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            picture.pts = number
            container.mux(video.encode(picture))
            # The audio up to the end of this frame, in whole AAC frames, interleaved.
            until = min(len(speech), round((number + 1) * AUDIO_RATE / options.fps))
            while audio_done + AAC_FRAME <= until:
                audio_done = _mux_audio(container, audio, speech, audio_done)
            data = buffer.getvalue()
            if len(data) > sent:
                yield data[sent:]
                sent = len(data)
        if video is None:
            raise EncodeError("no video frames to encode")
        container.mux(video.encode(None))
        while audio_done < len(speech):
            audio_done = _mux_audio(container, audio, speech, audio_done)
        container.mux(audio.encode(None))
    except EncodeError:
        raise
    except (av.FFmpegError, ValueError) as err:
        raise EncodeError(f"encoding the clip failed: {err}") from err
    finally:
        container.close()
    data = buffer.getvalue()
    if len(data) > sent:
        yield data[sent:]


def _mux_audio(container: object, stream: object, speech: npt.NDArray[np.float32], at: int) -> int:
    """Encode and mux one AAC frame of ``speech`` from sample ``at``; the next sample."""
    import av

    chunk = speech[at : at + AAC_FRAME]
    frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = at
    container.mux(stream.encode(frame))  # type: ignore[attr-defined]
    return at + len(chunk)
