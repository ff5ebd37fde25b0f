"""Speech for the voice tests: eSpeak sentences, word error rate, Discord-style packets."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import nacl.secret

from pipeline.audio import AudioChunk, concat
from pipeline.clips import Clip, TurnInfo
from pipeline.services.tts.base import Voice
from pipeline.services.tts.espeak import EspeakTTS
from pipeline.speech.resample import to_stereo_pcm16
from pipeline.utterance import Utterance

# Sentences tiny.en hears well from eSpeak's en-us voice.
SENTENCES = (
    "Hello, can you hear me?",
    "What is the weather like today?",
    "Please tell me a story about a dragon.",
    "I would like to learn some German.",
    "Thank you very much for the help.",
    "Where is the nearest train station?",
)


async def speak(text: str, *, words_per_minute: int = 165) -> AudioChunk:
    """``text`` spoken by eSpeak NG (22,050 Hz mono)."""
    tts = EspeakTTS(words_per_minute=words_per_minute)
    return concat([chunk async for chunk in tts.synthesize(text, Voice(language="en"))])


def seal_packet(
    *,
    secret_key: bytes,
    sequence: int,
    timestamp: int,
    ssrc: int,
    frame: bytes,
    counter: int,
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    """A voice packet as a Discord client sends it (written from the protocol, independently of
    the receiver): RTP header (payload type 0x78), the optional one-byte header extension
    (0xBEDE, its body encrypted), ``frame``, ``padding`` bytes of RTP padding, sealed with
    ``aead_xchacha20_poly1305_rtpsize`` by PyNaCl, the 4-byte nonce counter last."""
    flags = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0)
    header = struct.pack(">BBHII", flags, 0x78, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    body = frame
    if extension is not None:
        assert len(extension) % 4 == 0
        header += struct.pack(">HH", 0xBEDE, len(extension) // 4)
        body = extension + frame
    if padding:
        body += bytes(padding - 1) + bytes([padding])
    nonce = struct.pack(">I", counter)
    box = nacl.secret.Aead(secret_key)
    return header + box.encrypt(body, header, nonce + bytes(20)).ciphertext + nonce


def open_packet(packet: bytes, secret_key: bytes) -> tuple[int, bytes]:
    """``(ssrc, payload)`` of a packet sealed with ``aead_xchacha20_poly1305_rtpsize``, as a
    Discord client opens the bot's (the inverse of :func:`seal_packet`, written from the
    protocol): the RTP header and any extension header are the associated data, the 4-byte
    nonce counter is last; the extension's body and RTP padding are dropped."""
    flags = packet[0]
    header_length = 12 + 4 * (flags & 0x0F)
    if flags & 0x10:
        header_length += 4  # the extension's header is in the clear; its body is sealed
    header, nonce = packet[:header_length], packet[-4:]
    box = nacl.secret.Aead(secret_key)
    body = box.decrypt(packet[header_length:-4], header, nonce + bytes(20))
    if flags & 0x10:
        body = body[4 * struct.unpack_from(">H", packet, header_length - 2)[0] :]
    if flags & 0x20:
        body = body[: -body[-1]]
    return struct.unpack_from(">I", packet, 8)[0], body


def opus_frames(audio: AudioChunk) -> list[bytes]:
    """``audio`` as Discord clients send it: 48 kHz stereo, 20 ms Opus frames (libopus through
    discord.py's own encoder)."""
    import discord.opus

    pcm = to_stereo_pcm16(audio)
    frame_bytes = discord.opus.Encoder.FRAME_SIZE
    pcm += bytes(-len(pcm) % frame_bytes)
    encoder = discord.opus.Encoder()
    return [
        encoder.encode(pcm[i : i + frame_bytes], discord.opus.Encoder.SAMPLES_PER_FRAME)
        for i in range(0, len(pcm), frame_bytes)
    ]


@dataclass(kw_only=True)
class Talker:
    """One viewer's client in a voice channel: sends sealed packets as Discord's clients do."""

    secret_key: bytes
    ssrc: int
    dave: Any = None  # the viewer's davey session; None: frames go unencrypted
    extension: bytes | None = b"\x10\x00\x00\x00"  # a one-byte-header extension (audio level)
    padding: int = 0
    sequence: int = 1000
    timestamp: int = 50_000
    counter: int = 7

    def packets(self, frames: list[bytes]) -> list[bytes]:
        """One packet per frame, numbered on from the last."""
        sealed = []
        for frame in frames:
            payload = self.dave.encrypt_opus(frame) if self.dave is not None else frame
            sealed.append(
                seal_packet(
                    secret_key=self.secret_key,
                    sequence=self.sequence,
                    timestamp=self.timestamp,
                    ssrc=self.ssrc,
                    frame=payload,
                    counter=self.counter,
                    extension=self.extension,
                    padding=self.padding,
                )
            )
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.timestamp = (self.timestamp + 960) & 0xFFFFFFFF
            self.counter += 1
        return sealed


def reply_clip(
    origin: Utterance, audio: AudioChunk, text: str, *, turn: str = "t1", seq: int = 0
) -> Clip:
    """A sentence of the persona's answer to ``origin``, as the conversation hands it on."""
    info = TurnInfo(
        turn_id=turn,
        utterance=origin,
        viewer_name="Ada",
        language="en",
        mode="reply",
        persona_name="Cohost",
    )
    return Clip(
        turn=info,
        seq=seq,
        text=text,
        media=b"",
        content_type="video/mp4",
        duration_s=audio.duration_s,
        timings={},
        audio=audio,
    )
