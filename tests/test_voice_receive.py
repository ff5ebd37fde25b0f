"""lipcast's voice receiver, fed as discord.py's socket would feed it: real speech (eSpeak),
Opus from libopus, RTP with header extension and padding, PyNaCl's transport cipher, DAVE
frames from davey sessions in one real MLS group; then Silero VAD and faster-whisper tiny.en."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import discord.opus
import pytest

from bots.discord.voice.receive import ConnectionKeys, VoiceReceiver
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.speech.resample import StreamResampler
from pipeline.speech.segmenter import Segmenter, SegmenterOptions, SpeechFinished, SpeechStarted
from pipeline.speech.vad import SileroVAD
from pipeline.speech.wer import word_error_rate
from tests.voice_dave import Group, form_group
from tests.voice_support import SENTENCES, Talker, opus_frames, speak

SECRET = os.urandom(32)
ALICE, BOB = 2002, 3003
SSRC_ALICE, SSRC_BOB = 111, 222


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingDecoder:
    """discord.py's Opus decoder, remembering what it was given."""

    def __init__(self, seen: list[bytes | None]) -> None:
        self._decoder = discord.opus.Decoder()  # type: ignore[no-untyped-call]
        self._seen = seen

    def decode(self, data: bytes | None, *, fec: bool = False) -> bytes:
        self._seen.append(data)
        # decode(None) conceals a lost packet, though discord.py annotates it as bytes
        return bytes(self._decoder.decode(data, fec=fec))  # type: ignore[arg-type]


@dataclass
class Channel:
    """The receiving side: receiver -> 16 kHz per speaker -> segmenter; a simulated clock."""

    group: Group | None
    secret: bytes = SECRET
    clock: Clock = field(default_factory=Clock)
    decoded_inputs: list[bytes | None] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    pcm_frames: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resamplers: dict[int, StreamResampler] = {}
        self.segmenter = Segmenter(
            VAD, SegmenterOptions(end_silence_ms=500, min_speech_ms=250), clock=self.clock
        )
        self.receiver = VoiceReceiver(
            keys=self.keys,
            on_audio=self.on_audio,
            decoder_factory=lambda: RecordingDecoder(self.decoded_inputs),
            on_sustained_failure=self.failures.append,
            rejoin_after=36,
            clock=self.clock,
        )

    def keys(self) -> ConnectionKeys:
        dave = self.group.bot if self.group is not None else None
        return ConnectionKeys(
            secret_key=self.secret, mode="aead_xchacha20_poly1305_rtpsize", dave=dave
        )

    def on_audio(self, user: int, pcm: bytes) -> None:
        assert len(pcm) == 3840  # 20 ms of 48 kHz stereo s16
        self.pcm_frames[user] = self.pcm_frames.get(user, 0) + 1
        resampler = self.resamplers.setdefault(user, StreamResampler())
        self.events += self.segmenter.feed(str(user), resampler.push(pcm))

    def play(self, *streams: list[bytes]) -> None:
        """Deliver packets of several speakers interleaved, 20 ms apart, then 1 s of quiet."""
        for index in range(max(len(stream) for stream in streams)):
            self.clock.now += 0.02
            for stream in streams:
                if index < len(stream):
                    self.receiver.feed(stream[index])
        self.quiet(1.0)

    def quiet(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.05)):
            self.clock.now += 0.05
            self.events += self.segmenter.tick()

    def utterances(self) -> list[SpeechFinished]:
        return [e for e in self.events if isinstance(e, SpeechFinished) and e.audio is not None]


VAD = SileroVAD()


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperSTT:
    return FasterWhisperSTT()


@pytest.fixture(scope="module")
def group() -> Group:
    return form_group((ALICE, BOB))


async def frames_of(text: str) -> list[bytes]:
    return opus_frames(await speak(text))


def talker(group: Group | None, user: int, ssrc: int, **options: Any) -> Talker:
    dave = group.viewers[user] if group is not None else None
    return Talker(secret_key=SECRET, ssrc=ssrc, dave=dave, **options)


async def transcribe(whisper: FasterWhisperSTT, channel: Channel) -> list[tuple[str, str]]:
    said = []
    for utterance in channel.utterances():
        assert utterance.audio is not None
        said.append(
            (utterance.speaker, (await whisper.transcribe(utterance.audio, language="en")).text)
        )
    return said


async def test_sentences_through_the_whole_receive_path_wer(
    group: Group, whisper: FasterWhisperSTT
) -> None:
    channel = Channel(group)
    alice = talker(group, ALICE, SSRC_ALICE)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    for index, sentence in enumerate(SENTENCES):
        alice.padding = (0, 1, 7, 15)[index % 4]  # as some clients pad, others not
        channel.play(alice.packets(await frames_of(sentence)))
    heard = await transcribe(whisper, channel)
    assert len(heard) == len(SENTENCES), heard
    wer = word_error_rate(zip(SENTENCES, [text for _, text in heard], strict=True))
    assert wer <= 0.2, heard
    stats = channel.receiver.stats()[ALICE]
    assert stats.dave_failures == stats.transport_failures == stats.lost == 0
    assert all(
        data is not None and not data.endswith(b"\xfa\xfa") for data in channel.decoded_inputs
    )


@pytest.mark.parametrize("padding", [0, 1, 13])
@pytest.mark.parametrize(
    "extension", [None, b"\x10\xff\x00\x00", b"\x22\x01\x02\x03\x00\x00\x00\x00"]
)
async def test_padding_and_header_extension_present_or_absent(
    group: Group, padding: int, extension: bytes | None
) -> None:
    frames = await frames_of("Hello there.")
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.play(
        talker(group, ALICE, SSRC_ALICE, padding=padding, extension=extension).packets(frames)
    )
    stats = channel.receiver.stats()[ALICE]
    assert (stats.decoded, stats.dave_failures, stats.transport_failures) == (len(frames), 0, 0)
    assert channel.decoded_inputs == frames  # exactly the Opus frames that were sent


async def test_two_speakers_interleaved_are_two_utterances(
    group: Group, whisper: FasterWhisperSTT
) -> None:
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.receiver.map_ssrc(SSRC_BOB, BOB)
    channel.play(
        talker(group, ALICE, SSRC_ALICE).packets(await frames_of(SENTENCES[1])),
        talker(group, BOB, SSRC_BOB).packets(await frames_of(SENTENCES[2])),
    )
    heard = dict(await transcribe(whisper, channel))
    assert set(heard) == {str(ALICE), str(BOB)}
    assert (
        word_error_rate([(SENTENCES[1], heard[str(ALICE)]), (SENTENCES[2], heard[str(BOB)])]) <= 0.2
    )
    started = [e.speaker for e in channel.events if isinstance(e, SpeechStarted)]
    assert sorted(started) == [str(ALICE), str(BOB)]


async def test_lost_packet_is_concealed(group: Group, whisper: FasterWhisperSTT) -> None:
    frames = await frames_of(SENTENCES[0])
    packets = talker(group, ALICE, SSRC_ALICE).packets(frames)
    del packets[30]
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.play(packets)
    stats = channel.receiver.stats()[ALICE]
    assert (stats.lost, stats.concealed, stats.decoded) == (1, 1, len(frames) - 1)
    assert channel.pcm_frames[ALICE] == len(frames)  # the gap is filled, timing kept
    assert channel.decoded_inputs[30] is None  # concealment, not a made-up frame
    heard = await transcribe(whisper, channel)
    assert word_error_rate([(SENTENCES[0], heard[0][1])]) <= 0.2


async def test_unmapped_ssrc_is_held_until_its_speaking_event(
    group: Group, whisper: FasterWhisperSTT
) -> None:
    frames = await frames_of(SENTENCES[4])
    packets = talker(group, ALICE, SSRC_ALICE).packets(frames)
    channel = Channel(group)
    for packet in packets[:20]:  # op 5 comes after the first 400 ms of packets
        channel.clock.now += 0.02
        channel.receiver.feed(packet)
    assert ALICE not in channel.pcm_frames
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    assert channel.pcm_frames[ALICE] == 20
    channel.play(packets[20:])
    assert channel.receiver.stats()[ALICE].decoded == len(frames)
    heard = await transcribe(whisper, channel)
    assert word_error_rate([(SENTENCES[4], heard[0][1])]) == 0.0


async def test_held_packets_expire(group: Group) -> None:
    packets = talker(group, ALICE, SSRC_ALICE).packets(await frames_of("Hello."))
    channel = Channel(group)
    for packet in packets[:5]:
        channel.receiver.feed(packet)
    channel.clock.now += 5.0  # the SPEAKING event comes far too late
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    assert ALICE not in channel.pcm_frames


async def test_corrupt_packets_are_counted_and_concealed_never_decoded(group: Group) -> None:
    frames = await frames_of("Hello there, how are you?")
    alice = talker(group, ALICE, SSRC_ALICE)
    packets = alice.packets(frames)
    # transport damage: a flipped bit in the sealed payload fails Poly1305
    damaged = bytearray(packets[10])
    damaged[30] ^= 0x01
    packets[10] = bytes(damaged)
    # end-to-end damage: intact transport, a DAVE frame its session cannot open
    sent = alice.dave.encrypt_opus(frames[20])
    broken = bytearray(sent)
    broken[2] ^= 0x40
    packets[20] = Talker(
        secret_key=SECRET,
        ssrc=SSRC_ALICE,
        sequence=alice.sequence - len(frames) + 20,
        timestamp=0,
        counter=999,
    ).packets([bytes(broken)])[0]
    packets.insert(25, b"\x80\xc9\x00\x07" + os.urandom(28))  # an RTCP receiver report
    packets.insert(26, b"\x12\x34")  # not RTP at all
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.play(packets)
    stats = channel.receiver.stats()[ALICE]
    assert stats.transport_failures == 1 and stats.dave_failures == 1
    assert stats.concealed == 2 and stats.decoded == len(frames) - 2
    assert channel.receiver.ignored == 2
    assert channel.pcm_frames[ALICE] == len(frames)
    sent_frames = set(frames)
    assert all(data is None or data in sent_frames for data in channel.decoded_inputs)


async def test_sustained_dave_failures_ask_for_a_rejoin_once(group: Group) -> None:
    stranger = form_group((ALICE,))  # another group: its keys are not ours
    frames = await frames_of("Hello there, how are you doing today?")
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.play(talker(stranger, ALICE, SSRC_ALICE).packets(frames))
    assert len(frames) > 72
    assert channel.failures == [ALICE]  # once, not at every failure after the 36th
    stats = channel.receiver.stats()[ALICE]
    assert stats.dave_failures == len(frames) and stats.decoded == 0
    assert set(channel.decoded_inputs) == {None}


async def test_passthrough_and_calls_without_dave() -> None:
    frames = await frames_of("Hello.")
    # a call without DAVE: no session, plain Opus frames
    plain = Channel(None)
    plain.receiver.map_ssrc(SSRC_ALICE, ALICE)
    plain.play(talker(None, ALICE, SSRC_ALICE).packets(frames))
    assert plain.receiver.stats()[ALICE].decoded == len(frames)
    # a DAVE group in passthrough (a transition): unencrypted frames pass davey
    group = form_group((ALICE,))
    group.bot.set_passthrough_mode(True, 10)
    mixed = Channel(group)
    mixed.receiver.map_ssrc(SSRC_ALICE, ALICE)
    mixed.play(talker(None, ALICE, SSRC_ALICE).packets(frames))
    assert mixed.receiver.stats()[ALICE].decoded == len(frames)
    stats = group.bot.get_decryption_stats(ALICE)
    assert stats is not None and stats.passthroughs == len(frames)
    # without passthrough the same frames are refused (and concealed)
    strict = form_group((ALICE,))
    strict.bot.set_passthrough_mode(False, 0)
    refused = Channel(strict)
    refused.receiver.map_ssrc(SSRC_ALICE, ALICE)
    refused.play(talker(None, ALICE, SSRC_ALICE).packets(frames[:10]))
    assert refused.receiver.stats()[ALICE].dave_failures == 10


async def test_disconnect_forgets_the_speaker(group: Group) -> None:
    channel = Channel(group)
    channel.receiver.map_ssrc(SSRC_ALICE, ALICE)
    channel.receiver.forget_user(ALICE)
    assert channel.receiver.user_of(SSRC_ALICE) is None
    packets = talker(group, ALICE, SSRC_ALICE).packets(await frames_of("Hello."))
    channel.play(packets)
    assert ALICE not in channel.pcm_frames  # held, as an unknown SSRC, then expired


def test_receiver_ignores_packets_before_the_session_keys() -> None:
    receiver = VoiceReceiver(
        keys=lambda: ConnectionKeys(secret_key=None, mode=None, dave=None),
        on_audio=lambda user, pcm: pytest.fail("no audio without keys"),
    )
    receiver.feed(b"\x80\x78" + bytes(40))
    assert receiver.ignored == 1


def test_another_transport_mode_is_said_once_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    receiver = VoiceReceiver(
        keys=lambda: ConnectionKeys(secret_key=SECRET, mode="xsalsa20_poly1305_lite", dave=None),
        on_audio=lambda user, pcm: pytest.fail("no audio in another mode"),
    )
    packet = Talker(secret_key=SECRET, ssrc=SSRC_ALICE).packets([b"\xf8\xff\xfe"])[0]
    receiver.feed(packet)
    receiver.feed(packet)
    assert receiver.ignored == 2
    assert caplog.text.count("xsalsa20_poly1305_lite") == 1
