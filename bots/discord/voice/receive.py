"""lipcast's receiver for Discord voice under DAVE: packets in, 20 ms of PCM per speaker out.

Per packet, on discord.py's socket thread (:meth:`VoiceReceiver.feed`):

1. the RTP header (:mod:`bots.discord.voice.rtp`); anything but Opus (RTCP) is ignored;
2. transport decryption with the connection's secret key, the header extension body and the
   RTP padding removed (the DAVE trailer must end the frame);
3. the speaker: SSRC → user from the voice gateway's SPEAKING events (op 5), dropped on
   CLIENT_DISCONNECT (op 13). Packets of an SSRC not yet mapped wait, briefly, for its event;
4. DAVE decryption with the connection's davey session, read fresh per packet (it changes on
   every transition and re-join); a frame that cannot be decrypted is *concealed* — the Opus
   decoder's packet-loss concealment fills its 20 ms — never handed to the decoder;
5. Opus decoding with one decoder per SSRC; lost packets (gaps in the sequence) are concealed.

Failures are counted per speaker (:class:`SpeakerStats`); after ``rejoin_after`` undecryptable
packets in a row from a speaker, ``on_sustained_failure`` is called once (the feature re-joins).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from bots.discord.voice.rtp import (
    OPUS_PAYLOAD_TYPE,
    TRANSPORT_MODE,
    PacketError,
    TransportCipher,
    parse_header,
)

log = logging.getLogger(__name__)

DAVE_MAGIC = b"\xfa\xfa"  # the last two bytes of every DAVE-encrypted frame
OPUS_SILENCE = b"\xf8\xff\xfe"
MAX_CONCEALED = 5  # lost packets concealed at most per gap (100 ms); a longer gap is a pause
UNMAPPED_PACKETS = 50  # packets kept per unmapped SSRC (one second)
UNMAPPED_TTL_S = 2.0  # and for no longer than this


class DaveDecryptor(Protocol):
    """What the receiver uses of a ``davey.DaveSession``."""

    @property
    def ready(self) -> bool: ...

    def decrypt(self, user_id: int, media_type: Any, packet: bytes) -> bytes: ...


class OpusDecoder(Protocol):
    """What the receiver uses of ``discord.opus.Decoder`` (48 kHz stereo)."""

    def decode(self, data: bytes | None, *, fec: bool = False) -> bytes: ...


@dataclass(frozen=True, kw_only=True)
class ConnectionKeys:
    """The voice connection's secrets as they are now (both change on every re-join)."""

    secret_key: bytes | None  # None until the voice gateway's SESSION_DESCRIPTION
    mode: str | None
    dave: DaveDecryptor | None  # None when the call is not end-to-end encrypted


KeySource = Callable[[], ConnectionKeys]
AudioCallback = Callable[[int, bytes], None]  # (user id, 20 ms of 48 kHz stereo s16 PCM)


@dataclass(kw_only=True)
class SpeakerStats:
    """What happened to one speaker's packets."""

    packets: int = 0
    decoded: int = 0  # frames decoded from real audio
    concealed: int = 0  # 20 ms frames made up by the decoder: lost or undecryptable packets
    lost: int = 0  # packets that never came (sequence gaps)
    transport_failures: int = 0  # packets failing authentication (corrupt or a stale key)
    dave_failures: int = 0  # frames the DAVE session could not decrypt
    opus_failures: int = 0
    failures_in_a_row: int = 0


@dataclass(kw_only=True)
class _Stream:
    """One SSRC's decoding state."""

    ssrc: int
    user_id: int | None = None
    decoder: OpusDecoder | None = None
    last_sequence: int | None = None
    waiting: deque[tuple[float, int, bytes]] = field(default_factory=deque)


class VoiceReceiver:
    """Turns a voice connection's UDP packets into PCM per speaker (thread-safe)."""

    def __init__(
        self,
        *,
        keys: KeySource,
        on_audio: AudioCallback,
        decoder_factory: Callable[[], OpusDecoder] | None = None,
        on_sustained_failure: Callable[[int], None] | None = None,
        rejoin_after: int = 36,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._on_audio = on_audio
        self._decoder_factory = decoder_factory or _discord_decoder
        self._on_failure = on_sustained_failure
        self._rejoin_after = rejoin_after
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._stats: dict[int, SpeakerStats] = {}
        self._cipher: TransportCipher | None = None
        self.ignored = 0  # packets that were not voice (RTCP, malformed, before the keys)
        self._warned_mode = False

    # -- the voice gateway's events (from the event loop) ------------------------------------

    def map_ssrc(self, ssrc: int, user_id: int) -> None:
        """SPEAKING (op 5): ``ssrc`` is ``user_id``'s; packets waiting for it are decoded."""
        with self._lock:
            for other in self._streams.values():
                if other.user_id == user_id and other.ssrc != ssrc:
                    other.user_id = None  # the user re-joined with a new SSRC
            stream = self._stream(ssrc)
            if stream.user_id == user_id:
                return
            stream.user_id = user_id
            waiting, stream.waiting = stream.waiting, deque()
            now = self._clock()
            for received, sequence, frame in waiting:
                if now - received <= UNMAPPED_TTL_S:
                    self._decode(stream, sequence, frame)

    def forget_user(self, user_id: int) -> None:
        """CLIENT_DISCONNECT (op 13): the user left; their SSRC and decoder go."""
        with self._lock:
            for ssrc in [s.ssrc for s in self._streams.values() if s.user_id == user_id]:
                del self._streams[ssrc]

    def user_of(self, ssrc: int) -> int | None:
        with self._lock:
            stream = self._streams.get(ssrc)
            return stream.user_id if stream else None

    def stats(self) -> dict[int, SpeakerStats]:
        """Per user id, a copy of the counters."""
        with self._lock:
            return {user: SpeakerStats(**vars(stats)) for user, stats in self._stats.items()}

    # -- packets (from discord.py's socket thread) -------------------------------------------

    def feed(self, packet: bytes) -> None:
        """One UDP packet from the voice socket."""
        try:
            header = parse_header(packet)
        except PacketError:
            self.ignored += 1
            return
        if header.payload_type != OPUS_PAYLOAD_TYPE:
            self.ignored += 1  # RTCP and anything else
            return
        keys = self._keys()
        if keys.secret_key is None or (keys.mode is not None and keys.mode != TRANSPORT_MODE):
            self.ignored += 1
            if keys.mode is not None and not self._warned_mode:
                self._warned_mode = True
                log.warning(
                    "voice: the connection uses the transport mode %r; lipcast receives only %r, "
                    "so it hears nothing in this channel",
                    keys.mode,
                    TRANSPORT_MODE,
                )
            return
        with self._lock:
            stream = self._stream(header.ssrc)
            stats = self._stats_for(stream)
            if stats is not None:
                stats.packets += 1
            try:
                cipher = self._cipher_for(keys.secret_key)
            except ValueError:  # not a 32-byte key: the session description was not one
                self.ignored += 1
                return
            try:
                frame = cipher.open(packet, header)
            except PacketError as err:
                # Counted, and left as a gap in the sequence: the next packet conceals it.
                if stats is not None:
                    stats.transport_failures += 1
                log.debug("voice packet from SSRC %s dropped: %s", header.ssrc, err)
                return
            if stream.user_id is None:
                self._hold(stream, header.sequence, frame)
                return
            self._decode(stream, header.sequence, frame, keys)

    # -- inside the lock ---------------------------------------------------------------------

    def _stream(self, ssrc: int) -> _Stream:
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = _Stream(ssrc=ssrc)
        return stream

    def _stats_for(self, stream: _Stream) -> SpeakerStats | None:
        if stream.user_id is None:
            return None
        return self._stats.setdefault(stream.user_id, SpeakerStats())

    def _cipher_for(self, secret_key: bytes) -> TransportCipher:
        if self._cipher is None or self._cipher.secret_key != secret_key:
            self._cipher = TransportCipher(secret_key)
        return self._cipher

    def _hold(self, stream: _Stream, sequence: int, frame: bytes) -> None:
        now = self._clock()
        stream.waiting.append((now, sequence, frame))
        while stream.waiting and (
            len(stream.waiting) > UNMAPPED_PACKETS or now - stream.waiting[0][0] > UNMAPPED_TTL_S
        ):
            stream.waiting.popleft()

    def _decode(
        self, stream: _Stream, sequence: int, frame: bytes, keys: ConnectionKeys | None = None
    ) -> None:
        user_id = stream.user_id
        assert user_id is not None
        stats = self._stats.setdefault(user_id, SpeakerStats())
        if stream.decoder is None:
            stream.decoder = self._decoder_factory()
        if stream.last_sequence is not None:
            step = (sequence - stream.last_sequence) & 0xFFFF
            if step == 0 or step >= 0x8000:
                return  # a duplicate, or too late to be played
            missing = step - 1
            stats.lost += missing
            for _ in range(min(missing, MAX_CONCEALED)):
                self._conceal(stream, user_id, stats)
        stream.last_sequence = sequence
        opus = self._open_dave(frame, user_id, stats, keys or self._keys())
        if opus is None:
            self._conceal(stream, user_id, stats)
            return
        try:
            pcm = stream.decoder.decode(opus, fec=False)
        except Exception as err:  # noqa: BLE001 - discord.opus.OpusError, or ctypes' own
            stats.opus_failures += 1
            log.debug("Opus frame from user %s undecodable: %s", user_id, err)
            self._conceal(stream, user_id, stats)
            return
        stats.decoded += 1
        self._on_audio(user_id, pcm)

    def _open_dave(
        self, frame: bytes, user_id: int, stats: SpeakerStats, keys: ConnectionKeys
    ) -> bytes | None:
        """The Opus frame inside ``frame``; None when it cannot be decrypted."""
        dave = keys.dave
        if frame == OPUS_SILENCE:
            opus: bytes | None = frame
        elif dave is not None and dave.ready:
            import davey

            try:
                opus = dave.decrypt(user_id, davey.MediaType.audio, frame)
            except ValueError as err:
                opus = None
                log.debug("DAVE frame from user %s not decrypted: %s", user_id, err)
        elif frame.endswith(DAVE_MAGIC):
            opus = None  # end-to-end encrypted, and this connection holds no group key yet
        else:
            opus = frame  # a call without DAVE (or before its first transition)
        if opus is None:
            stats.dave_failures += 1
            stats.failures_in_a_row += 1
            if stats.failures_in_a_row == self._rejoin_after and self._on_failure is not None:
                self._on_failure(user_id)  # once per run of failures
            return None
        stats.failures_in_a_row = 0
        return opus

    def _conceal(self, stream: _Stream, user_id: int, stats: SpeakerStats) -> None:
        assert stream.decoder is not None
        try:
            pcm = stream.decoder.decode(None, fec=False)
        except Exception:  # noqa: BLE001 - a decoder that never decoded has nothing to conceal
            return
        stats.concealed += 1
        self._on_audio(user_id, pcm)


def _discord_decoder() -> OpusDecoder:
    import discord.opus

    return cast(OpusDecoder, discord.opus.Decoder())  # type: ignore[no-untyped-call]
