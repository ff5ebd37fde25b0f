"""eSpeak NG backend: real offline synthesis through the library espeakng-loader ships."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import AudioChunk, concat
from pipeline.errors import BackendError, InputError
from pipeline.services.tts.base import Voice
from pipeline.services.tts.espeak import EspeakTTS

SENTENCES = {
    "en": "Hello everyone, thanks for joining the stream tonight.",
    "de": "Hallo zusammen, danke, dass ihr heute Abend beim Stream dabei seid.",
    "fr": "Bonjour à tous, merci d'être venus ce soir sur le stream.",
}


async def speak(tts: EspeakTTS, text: str, voice: Voice) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, voice)]


@pytest.mark.parametrize("language", ["en", "de", "fr"])
async def test_speaks_each_language_audibly_at_a_plausible_length(language: str) -> None:
    text = SENTENCES[language]
    chunks = await speak(EspeakTTS(), text, Voice(language=language))

    audio = concat(chunks)
    assert audio.sample_rate == 22050
    assert audio.samples.dtype == np.float32
    assert float(np.sqrt(np.mean(audio.samples**2))) > 0.02  # not silence
    assert float(np.max(np.abs(audio.samples))) <= 1.0
    expected_s = len(text.split()) / 165 * 60  # at the default 165 words per minute
    assert 0.5 * expected_s < audio.duration_s < 2.5 * expected_s


async def test_chunks_arrive_while_synthesis_is_still_running() -> None:
    tts = EspeakTTS()
    await speak(tts, "Warm up.", Voice(language="en"))  # library load and init out of the way
    text = " ".join([SENTENCES["en"]] * 40)

    start = time.perf_counter()
    arrivals = []
    async for _chunk in tts.synthesize(text, Voice(language="en")):
        arrivals.append(time.perf_counter() - start)

    assert len(arrivals) > 100  # about 100 ms of audio per chunk
    assert arrivals[0] < arrivals[-1] / 4


async def test_named_voice_speed_and_pitch_change_the_audio() -> None:
    text = SENTENCES["en"]
    normal = concat(await speak(EspeakTTS(), text, Voice(language="en")))
    fast = concat(await speak(EspeakTTS(), text, Voice(language="en", speed=2.0)))
    variant = concat(await speak(EspeakTTS(pitch=90), text, Voice(language="de", name="en-us+f3")))

    assert fast.duration_s < 0.7 * normal.duration_s
    assert variant.duration_s > 0.5 * normal.duration_s
    assert not np.array_equal(variant.samples[: len(normal.samples)], normal.samples)


async def test_unknown_voice_is_a_clear_permanent_error() -> None:
    with pytest.raises(BackendError, match="no voice 'xx-nope'") as caught:
        await speak(EspeakTTS(), "Hello.", Voice(language="en", name="xx-nope"))
    assert not caught.value.transient

    with pytest.raises(BackendError, match=r"'qq'.*language 'qq'"):
        await speak(EspeakTTS(), "Hello.", Voice(language="qq"))


@pytest.mark.parametrize("text", ["", "   \n\t "])
async def test_empty_text_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError):
        await speak(EspeakTTS(), text, Voice(language="en"))


async def test_a_consumer_may_stop_early_and_the_engine_goes_on() -> None:
    tts = EspeakTTS()
    text = " ".join([SENTENCES["en"]] * 20)
    stream = tts.synthesize(text, Voice(language="en"))
    first = await anext(stream)
    await stream.aclose()

    assert len(first.samples) > 0
    again = concat(await speak(tts, SENTENCES["de"], Voice(language="de")))
    assert again.duration_s > 1.0


async def test_concurrent_requests_are_serialised_not_mixed() -> None:
    tts = EspeakTTS()
    alone_en = concat(await speak(tts, SENTENCES["en"], Voice(language="en")))
    alone_de = concat(await speak(tts, SENTENCES["de"], Voice(language="de")))

    both = await asyncio.gather(
        *(speak(tts, SENTENCES[lang], Voice(language=lang)) for lang in ["en", "de"] * 3)
    )

    assert abs(alone_en.duration_s - alone_de.duration_s) > 0.2
    for chunks, alone in zip(both, [alone_en, alone_de] * 3, strict=True):
        assert concat(chunks).duration_s == pytest.approx(alone.duration_s, abs=0.05)


def test_importing_the_backends_does_no_work() -> None:
    code = (
        "import sys, threading, pathlib\n"
        "import pipeline.services.tts.espeak, pipeline.services.tts.piper\n"
        "import pipeline.services.tts.openai, pipeline.services.tts.silero\n"
        "heavy = {'openai', 'piper', 'onnxruntime', 'espeakng_loader'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert 'espeak' not in pathlib.Path('/proc/self/maps').read_text()\n"
        "assert threading.active_count() == 1\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=root)
