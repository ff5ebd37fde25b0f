"""Demo reply clips, so a streamer can set the overlay up in OBS before any LLM or renderer runs.

``lipcast overlay --demo`` plays them in a loop; the overlay tests use them as real clips.
A demo clip is a real browser-playable MP4 (H.264 + AAC, fast-start or fragmented): the
avatar image (or a plain card) framed in a colour, with a soft sine tone. Every clip of a
demo reply gets its own colour and pitch so a viewer (or a test) can tell them apart.

Encoding is CPU work: call :func:`encode_demo_clip` from an executor inside a running loop.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Distinct frame colours and tone pitches for consecutive demo clips.
_COLORS = ((233, 84, 84), (74, 163, 240), (102, 204, 110), (240, 190, 60), (180, 110, 230))
_TONES_HZ = (440.0, 554.37, 659.25, 739.99, 880.0)
_CARD = (36, 38, 52)  # behind a transparent avatar
_SAMPLE_RATE = 48_000
_AAC_FRAME = 1024  # samples per AAC frame

DEMO_CAPTIONS = (
    "Hi chat! I am your lipcast co-host.",
    "Every sentence I say arrives as its own clip.",
    "The overlay plays them back to back, with captions.",
)


@dataclass(frozen=True, kw_only=True)
class DemoClip:
    """One encoded demo clip and what it shows."""

    mp4: bytes
    caption: str
    duration_s: float
    color: tuple[int, int, int]
    tone_hz: float


def _frame_image(avatar: Image.Image | None, size: int, color: tuple[int, int, int]) -> Image.Image:
    card = Image.new("RGB", (size, size), color)
    border = max(4, size // 24)
    inner = size - 2 * border
    draw = ImageDraw.Draw(card)
    draw.rectangle((border, border, size - border - 1, size - border - 1), fill=_CARD)
    if avatar is not None:
        face = avatar.resize((inner, inner), Image.Resampling.LANCZOS)
        card.paste(face, (border, border), face)  # the avatar's own alpha as the mask
    else:
        draw.ellipse(
            (size * 0.3, size * 0.25, size * 0.7, size * 0.65), fill=color, outline=(255, 255, 255)
        )
    return card


def _tone(duration_s: float, hz: float) -> np.ndarray:
    """A sine tone with 20 ms fades (no clicks at clip boundaries), float32 in [-1, 1]."""
    count = round(duration_s * _SAMPLE_RATE)
    t = np.arange(count, dtype=np.float64) / _SAMPLE_RATE
    wave = 0.3 * np.sin(2 * math.pi * hz * t)
    fade = min(count // 2, int(0.02 * _SAMPLE_RATE))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return wave.astype(np.float32)


def encode_demo_clip(
    index: int,
    *,
    caption: str = "",
    avatar_path: Path | None = None,
    duration_s: float = 1.5,
    size: int = 256,
    fps: int = 25,
    fragmented: bool = False,
) -> DemoClip:
    """Encode demo clip number ``index`` (colour and pitch depend on it) to MP4 bytes."""
    color = _COLORS[index % len(_COLORS)]
    tone_hz = _TONES_HZ[index % len(_TONES_HZ)]
    avatar = None
    if avatar_path is not None:
        with Image.open(avatar_path) as opened:
            avatar = opened.convert("RGBA")
    image = _frame_image(avatar, size, color)
    rgb = np.asarray(image, dtype=np.uint8)

    # Fast-start moves the index to the front in a second pass over a real file; fragmented
    # MP4 streams to memory.
    with tempfile.TemporaryDirectory(prefix="lipcast-demo-") as folder:
        target: Path | io.BytesIO = Path(folder) / "clip.mp4" if not fragmented else io.BytesIO()
        _encode(target, rgb, tone_hz, duration_s=duration_s, size=size, fps=fps)
        mp4 = target.read_bytes() if isinstance(target, Path) else target.getvalue()
    frames = round(duration_s * fps)
    return DemoClip(
        mp4=mp4,
        caption=caption,
        duration_s=frames / fps,
        color=color,
        tone_hz=tone_hz,
    )


def _encode(
    target: Path | io.BytesIO,
    rgb: np.ndarray,
    tone_hz: float,
    *,
    duration_s: float,
    size: int,
    fps: int,
) -> None:
    import av  # imported here: PyAV loads FFmpeg, and importing this module must stay free

    fragmented = isinstance(target, io.BytesIO)
    movflags = "frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
    opened = av.open(
        target if fragmented else str(target),
        mode="w",
        format="mp4",
        options={"movflags": movflags},
    )
    with opened as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = size
        video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "tune": "stillimage"}
        audio = container.add_stream("aac", rate=_SAMPLE_RATE, layout="mono")

        frames = round(duration_s * fps)
        samples = _tone(frames / fps, tone_hz)
        audio_done = 0
        for number in range(frames):
            # A thin progress bar, so the picture changes while the clip plays.
            frame_rgb = rgb.copy()
            bar = int(size * (number + 1) / frames)
            frame_rgb[size - 6 : size - 2, :bar] = 255
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = number
            container.mux(video.encode(frame))
            # Interleave: audio up to the end of this video frame, in whole AAC frames.
            audio_until = (
                len(samples) if number == frames - 1 else (number + 1) * len(samples) // frames
            )
            while audio_done < audio_until:
                chunk = samples[audio_done : audio_done + _AAC_FRAME]
                sound = av.AudioFrame.from_ndarray(
                    chunk.reshape(1, -1), format="fltp", layout="mono"
                )
                sound.sample_rate = _SAMPLE_RATE
                sound.pts = audio_done
                container.mux(audio.encode(sound))
                audio_done += len(chunk)
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def demo_reply(
    *, avatar_path: Path | None = None, duration_s: float = 1.5, size: int = 256
) -> list[DemoClip]:
    """The three clips of the demo reply, one per caption in :data:`DEMO_CAPTIONS`."""
    return [
        encode_demo_clip(
            index, caption=caption, avatar_path=avatar_path, duration_s=duration_s, size=size
        )
        for index, caption in enumerate(DEMO_CAPTIONS)
    ]
