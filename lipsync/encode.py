"""Encoding frames and audio into browser-playable MP4 (H.264 + AAC) with PyAV.

Two forms: fast-start files (``moov`` first, for files people open) and fragmented MP4 (for
bytes that travel in messages and play while they arrive). Audio is resampled to 48 kHz, the
rate Discord and browsers prefer. (24 kHz would halve the AAC coder's time for 22-24 kHz voices,
but AAC's priming, which FFmpeg does not trim from a fragmented MP4, would then put the voice
43 ms behind the picture instead of 21 ms.)
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from lipsync.errors import EncodeError
from lipsync.renderer import Frame

if TYPE_CHECKING:
    import av

AUDIO_RATE = 48_000
AUDIO_BITRATE = 96_000
FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
# What a page's Media Source Extensions are told a streamed clip holds: H.264 High profile
# (level 3.1 covers the sizes lipcast renders) and AAC-LC.
STREAM_MIME = 'video/mp4; codecs="avc1.64001f, mp4a.40.2"'
AAC_FRAME = 1024  # samples per AAC frame
# x264's fastest presets switch off the lookahead and its macroblock tree, which more than
# doubles the size of a sprite clip at the same quality; the encoder keeps them on, with a
# lookahead of five frames (ten made the clip slower, larger and no better). Ultrafast also
# drops CABAC and adaptive quantisation: kept on too, for a few per cent of its time they take
# 40 % off its bytes.
LOOKAHEAD = "rc-lookahead=5:mbtree=1"
ULTRAFAST_KEEPS = "cabac=1:aq-mode=1"

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]
_WITHOUT_LOOKAHEAD: frozenset[str] = frozenset({"ultrafast", "superfast"})


@dataclass(frozen=True, kw_only=True)
class EncodeOptions:
    """H.264 settings: frame rate, quality (CRF, lower is better) and x264's speed preset.

    ``ultrafast``, with the lookahead, CABAC and adaptive quantisation kept on, codes the
    sprite renderer's whole-pixel motion at the quality ``veryfast`` gives, in under half the
    time, for about a sixth more bytes: ``lipcast bench render`` measures both. A photo-like
    video (wav2lip) moves by fractions of a pixel, which ``ultrafast`` does not search: for
    those, ``superfast`` or ``veryfast`` makes smaller files.
    """

    fps: int = 25
    crf: int = 23
    preset: Preset = "ultrafast"
    threads: int = 1  # x264 threads; one keeps several workers from fighting over cores
    # FFmpeg's "fast" AAC coder takes a third of the time of its default ("twoloop") and, for
    # speech at 96 kb/s mono, reproduces the waveform more closely (38 dB SNR against 26 dB)
    audio_coder: Literal["fast", "twoloop"] = "fast"

    def x264_options(self, params: str = "") -> dict[str, object]:
        """The libx264 options these settings stand for, with extra x264 ``params``."""
        extra = [LOOKAHEAD] if self.preset in _WITHOUT_LOOKAHEAD else []
        if self.preset == "ultrafast":
            extra.append(ULTRAFAST_KEEPS)
        if params:
            extra.append(params)
        options: dict[str, object] = {
            "preset": self.preset,
            "crf": str(self.crf),
            "threads": str(self.threads),
            "profile": "high",
        }
        if extra:
            options["x264-params"] = ":".join(extra)
        return options


def frame_size(frame: Frame) -> tuple[int, int]:
    """``(width, height)`` of an RGB frame, or of I420 planes (2-D: ``height * 3 / 2`` rows)."""
    if frame.ndim == 2:
        return frame.shape[1], frame.shape[0] * 2 // 3
    return frame.shape[1], frame.shape[0]


def _yuv_frame(frame: Frame, pts: int) -> av.VideoFrame:
    """An RGB frame, or I420 planes as a renderer's ``render_i420`` makes them, as a YUV 4:2:0
    video frame for x264."""
    import av
    import cv2

    if frame.ndim == 2:
        yuv = frame
    else:
        yuv = np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)
    # wraps the array without a copy: x264 copies the picture in when it is encoded
    picture = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")
    picture.pts = pts
    return picture


def _encode(
    target: str | io.BytesIO,
    frames: Iterable[Frame],
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    options: EncodeOptions,
    movflags: str,
) -> int:
    import av

    container = av.open(target, mode="w", format="mp4", options={"movflags": movflags})
    try:
        video = None
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = AUDIO_BITRATE
        audio.options = {"aac_coder": options.audio_coder}
        count = 0
        for frame in frames:
            if video is None:
                width, height = frame_size(frame)
                if width % 2 or height % 2:
                    raise EncodeError(f"frame size {width}x{height} must be even for H.264")
                video = container.add_stream("libx264", rate=options.fps)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                video.options = options.x264_options()
            container.mux(video.encode(_yuv_frame(frame, count)))
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

    options = options or EncodeOptions()
    keyint = max(1, round(fragment_s * options.fps))
    buffer = io.BytesIO()
    sent = 0
    container = av.open(buffer, mode="w", format="mp4", options={"movflags": FRAGMENTED})
    try:
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = AUDIO_BITRATE
        audio.options = {"aac_coder": options.audio_coder}
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
                width, height = frame_size(frame)
                if width % 2 or height % 2:
                    raise EncodeError(f"frame size {width}x{height} must be even for H.264")
                video = container.add_stream("libx264", rate=options.fps)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                # A keyframe, hence a fragment, every fragment_s; none in between.
                video.options = options.x264_options(
                    f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
                )
            container.mux(video.encode(_yuv_frame(frame, number)))
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
