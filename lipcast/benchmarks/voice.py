"""``lipcast bench voice``: from the end of a viewer's speech to the persona's first sound.

A viewer says each of a few English sentences (eSpeak) in a voice channel: 48 kHz stereo,
20 ms Opus frames from libopus, RTP packets with a header extension, sealed with the transport
cipher, handed to lipcast's receiver every 20 ms as discord.py's socket thread would. Then the
real voice path: the Silero VAD segmenter (``[voice]`` settings: the end-of-speech silence),
speech-to-text (faster-whisper tiny.en, or ``[stt]``), a stand-in language model on 127.0.0.1
that answers at once through the real OpenAI client and sentence splitter, eSpeak for the
first sentence, and lipcast's ``AudioSource`` read every 20 ms as discord.py's player reads it.
DAVE is not applied (its decryption costs microseconds; the tests cover it).

Figures (medians over the sentences; ``per_sentence`` has each):

- ``end_of_speech_to_first_audio_s``: from the end of the viewer's speech plus the configured
  end-of-speech silence to the first reply frame handed to discord.py (goal: at most 1.0 s);
- its stages: ``vad_s`` (the segmenter's lateness after that silence), ``stt_s``,
  ``llm_first_sentence_s``, ``tts_s`` (and ``playback_start_s``, the source's first read);
- ``wer``: word error rate of the transcripts over all sentences;
- ``barge_in_s``: a viewer starts talking while the persona speaks, to the persona's source
  ending (goal: at most 0.2 s).

Replies in ``lipcast run`` also pass through the clip renderer before they are spoken; this
measures the voice path itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from pipeline.audio import AudioChunk, concat
from pipeline.conversation.sentences import SentenceSplitter
from pipeline.services.llm import ChatMessage, OpenAIChatLLM, RetryPolicy
from pipeline.services.tts.base import Voice
from pipeline.services.tts.espeak import EspeakTTS
from pipeline.speech.resample import StreamResampler, to_stereo_pcm16
from pipeline.speech.segmenter import Segmenter, SegmenterOptions, SpeechFinished, SpeechStarted
from pipeline.speech.vad import SileroVAD
from pipeline.speech.wer import word_error_rate

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "a spoken question in a voice channel: end of speech to first reply audio (JSON)"

SENTENCES = (
    "Hello, can you hear me?",
    "What is the weather like today?",
    "Please tell me a story about a dragon.",
    "I would like to learn some German.",
    "Where is the nearest train station?",
)
REPLY = "Sure, I can hear you. Let me think about that for a second. Here is my answer."
GOAL_S = 1.0
BARGE_IN_GOAL_S = 0.2
_FRAME_S = 0.02
SSRC = 4242


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sentences", type=int, default=5, help="spoken questions (1-5)")


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    return asyncio.run(_bench(args, context))


class _InstantChat:
    """An OpenAI-compatible chat server that streams its whole reply at once."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for token in REPLY.split(" "):
            delta = {"content": token + " "}
            chunk = {"id": "b", "object": "chat.completion.chunk", "created": 0, "model": "b"}
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _packets(audio: AudioChunk, secret: bytes, ssrc: int) -> list[bytes]:
    """The viewer's client: Opus frames in sealed RTP packets with a header extension."""
    import discord.opus
    import nacl.secret

    pcm = to_stereo_pcm16(audio)
    size = discord.opus.Encoder.FRAME_SIZE
    pcm += bytes(-len(pcm) % size)
    encoder = discord.opus.Encoder()
    box = nacl.secret.Aead(secret)
    packets = []
    for index, start in enumerate(range(0, len(pcm), size)):
        frame = encoder.encode(pcm[start : start + size], discord.opus.Encoder.SAMPLES_PER_FRAME)
        header = struct.pack(">BBHII", 0x90, 0x78, index, index * 960, ssrc)
        header += struct.pack(">HH", 0xBEDE, 1)
        nonce = struct.pack(">I", index)
        sealed = box.encrypt(b"\x10\x7f\x00\x00" + frame, header, nonce + bytes(20)).ciphertext
        packets.append(header + sealed + nonce)
    return packets


def _trailing_silence_s(audio: AudioChunk) -> float:
    loud = np.flatnonzero(np.abs(audio.samples) > 0.01)
    last = int(loud[-1]) if len(loud) else 0
    return (len(audio.samples) - last) / audio.sample_rate


def _player(source: Any, first: Callable[[float], None] | None = None) -> threading.Thread:
    """Reads ``source`` every 20 ms, as discord.py's AudioPlayer thread does."""

    def run() -> None:
        started = time.perf_counter()
        loops = 0
        while source.read():
            loops += 1
            delay = started + loops * _FRAME_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    thread = threading.Thread(target=run, name="bench-audio-player", daemon=True)
    thread.start()
    return thread


class _Channel:
    """Receiver -> 16 kHz per speaker -> segmenter, events onto the event loop."""

    def __init__(self, vad: SileroVAD, options: SegmenterOptions, secret: bytes) -> None:
        from bots.discord.voice.receive import ConnectionKeys, VoiceReceiver

        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self.segmenter = Segmenter(vad, options)
        self.on_started: Callable[[], None] | None = None
        self._resampler = StreamResampler()
        keys = ConnectionKeys(secret_key=secret, mode="aead_xchacha20_poly1305_rtpsize", dave=None)
        self.receiver = VoiceReceiver(keys=lambda: keys, on_audio=self._audio)
        self.receiver.map_ssrc(SSRC, 1)  # the viewer's SPEAKING event came first

    def _audio(self, user: int, pcm: bytes) -> None:
        for event in self.segmenter.feed(str(user), self._resampler.push(pcm)):
            if isinstance(event, SpeechStarted) and self.on_started is not None:
                self.on_started()
            self._put(event)

    def _put(self, event: Any) -> None:
        now = time.monotonic()
        self.loop.call_soon_threadsafe(self.events.put_nowait, (now, event))

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            for event in self.segmenter.tick():
                self.events.put_nowait((time.monotonic(), event))

    def talk(self, packets: list[bytes]) -> tuple[threading.Thread, list[float]]:
        """Feed packets 20 ms apart from a thread; the list gets the first and last times."""
        times: list[float] = []

        def run() -> None:
            started = time.perf_counter()
            for index, packet in enumerate(packets):
                delay = started + index * _FRAME_S - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if index == 0:
                    times.append(time.monotonic())
                self.receiver.feed(packet)
            times.append(time.monotonic())

        thread = threading.Thread(target=run, name="bench-voice-socket", daemon=True)
        thread.start()
        return thread, times


async def _bench(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    from lipcast.wiring import build_stt

    settings = context.settings
    voice = settings.voice
    options = SegmenterOptions(
        threshold=voice.vad_threshold,
        end_silence_ms=voice.end_silence_ms,
        min_speech_ms=voice.min_speech_ms,
        max_utterance_s=voice.max_utterance_s,
    )
    stt = build_stt(settings, context.secrets)
    tts = EspeakTTS(**settings.tts.espeak.model_dump())
    vad = SileroVAD()
    server = _InstantChat()
    base_url = await server.start()
    llm = OpenAIChatLLM(base_url=base_url, model="bench", retry=RetryPolicy(retries=0))
    secret = os.urandom(32)
    english = Voice(language="en")

    async def speak(text: str) -> AudioChunk:
        return concat([chunk async for chunk in tts.synthesize(text, english)])

    try:
        await asyncio.to_thread(vad.load)
        await stt.warm_up()
        warm = await speak(SENTENCES[0])  # a running bot is warm: models loaded, client made
        await stt.transcribe(warm, language="en")
        async for _ in llm.stream([ChatMessage(role="user", content="hi")]):
            pass
        runs = []
        for sentence in SENTENCES[: max(1, min(args.sentences, len(SENTENCES)))]:
            runs.append(
                await _turn(sentence, await speak(sentence), stt, llm, speak, vad, options, secret)
            )
        barge_in = await _barge_in(await speak(SENTENCES[0]), vad, options, secret)
    finally:
        await server.close()
        await llm.aclose()
        await stt.aclose()
    return _summary(runs, barge_in, settings.stt.backend, voice.end_silence_ms)


async def _turn(
    sentence: str,
    audio: AudioChunk,
    stt: Any,
    llm: OpenAIChatLLM,
    speak: Callable[[str], Any],
    vad: SileroVAD,
    options: SegmenterOptions,
    secret: bytes,
) -> dict[str, Any]:
    from bots.discord.voice.playback import SpeechSource

    channel = _Channel(vad, options, secret)
    ticker = asyncio.create_task(channel.tick(), name="bench-voice-tick")
    try:
        thread, times = channel.talk(_packets(audio, secret, ssrc=SSRC))
        while True:
            decided, event = await channel.events.get()
            if isinstance(event, SpeechFinished) and event.audio is not None:
                break
        await asyncio.to_thread(thread.join)
    finally:
        ticker.cancel()
    # the speech ended when its last packet's audio did, less the voice's own trailing silence
    speech_end = times[-1] + _FRAME_S - _trailing_silence_s(audio)
    start = speech_end + options.end_silence_ms / 1000
    transcript = await stt.transcribe(event.audio, language="en")
    transcribed = time.monotonic()
    splitter = SentenceSplitter(language="en", first_soft_max_chars=60)
    first: str | None = None
    async for piece in llm.stream([ChatMessage(role="user", content=transcript.text)]):
        ready = splitter.feed(piece)
        if ready:
            first = ready[0].text
            break
    first = first or splitter.flush()[0].text
    answered = time.monotonic()
    reply_audio = await speak(first)
    spoken = time.monotonic()
    heard: list[float] = []
    first_frame = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_first_frame(at: float) -> None:
        heard.append(at)
        loop.call_soon_threadsafe(first_frame.set)

    source = SpeechSource(on_first_frame=on_first_frame, gap_s=0.0)
    await asyncio.to_thread(source.add, reply_audio, first)
    player = _player(source)
    await first_frame.wait()
    source.barge_in("stop")
    await asyncio.to_thread(player.join)
    return {
        "sentence": sentence,
        "transcript": transcript.text,
        "end_of_speech_to_first_audio_s": heard[0] - start,
        "vad_s": decided - start,
        "stt_s": transcribed - decided,
        "llm_first_sentence_s": answered - transcribed,
        "tts_s": spoken - answered,
        "playback_start_s": heard[0] - spoken,
    }


async def _barge_in(
    audio: AudioChunk, vad: SileroVAD, options: SegmenterOptions, secret: bytes
) -> float:
    """A viewer talks over a playing reply: first packet to the reply's source ending."""
    from bots.discord.voice.playback import SpeechSource

    tone = np.sin(2 * np.pi * 220 * np.arange(48_000 * 5) / 48_000).astype(np.float32) * 0.3
    source = SpeechSource()
    source.add(AudioChunk(samples=tone, sample_rate=48_000))
    ended: list[float] = []
    channel = _Channel(vad, options, secret)

    def stop() -> None:
        source.barge_in("stop")

    channel.on_started = stop

    def play() -> None:
        while source.read():
            time.sleep(_FRAME_S)
        ended.append(time.monotonic())

    player = threading.Thread(target=play, name="bench-audio-player", daemon=True)
    player.start()
    await asyncio.sleep(0.2)
    lead = 0.02 * int(_leading_silence_s(audio) / _FRAME_S)
    thread, times = channel.talk(_packets(audio, secret, ssrc=SSRC))
    await asyncio.to_thread(player.join, 10)
    await asyncio.to_thread(thread.join)
    return float(ended[0] - times[0] - lead) if ended else float("nan")


def _leading_silence_s(audio: AudioChunk) -> float:
    loud = np.flatnonzero(np.abs(audio.samples) > 0.01)
    return (int(loud[0]) if len(loud) else 0) / audio.sample_rate


def _summary(
    runs: list[dict[str, Any]], barge_in: float, stt_backend: str, end_silence_ms: int
) -> dict[str, Any]:
    def median(key: str) -> float:
        return round(float(statistics.median(run[key] for run in runs)), 3)

    total = median("end_of_speech_to_first_audio_s")
    wer = word_error_rate((run["sentence"], run["transcript"]) for run in runs)
    return {
        "end_of_speech_to_first_audio_s": total,
        "vad_s": median("vad_s"),
        "stt_s": median("stt_s"),
        "llm_first_sentence_s": median("llm_first_sentence_s"),
        "tts_s": median("tts_s"),
        "playback_start_s": median("playback_start_s"),
        "wer": round(wer, 3),
        "barge_in_s": round(barge_in, 3),
        "end_silence_s": end_silence_ms / 1000,
        "stt": stt_backend,
        "tts": "espeak",
        "sentences": len(runs),
        "goals": {
            "end_of_speech_to_first_audio_s": GOAL_S,
            "barge_in_s": BARGE_IN_GOAL_S,
            "met": total <= GOAL_S and barge_in <= BARGE_IN_GOAL_S,
        },
        "per_sentence": [
            {
                key: (round(value, 3) if isinstance(value, float) else value)
                for key, value in run.items()
            }
            for run in runs
        ],
    }
