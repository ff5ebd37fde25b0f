"""A Discord voice message to the bot is heard, transcribed and answered like text."""

from __future__ import annotations

import asyncio
from typing import Any

import discord

from bots.discord.adapter import DiscordAdapter, DiscordOptions
from bots.discord.voice.messages import transcribe_voice_message
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from tests.discord_support import (
    TOKEN,
    FakeDiscord,
    RecordingListener,
    guild_payload,
    message_payload,
)
from tests.test_voice_messages import ogg_opus
from tests.voice_support import speak

VOICE_MESSAGE_FLAG = 1 << 13  # IS_VOICE_MESSAGE


def voice_message(fake: FakeDiscord, data: bytes) -> dict[str, Any]:
    """A DM that is a voice message, its recording served where Discord's CDN would be."""
    fake.files["voice-message.ogg"] = data
    base = discord.http.Route.BASE.removesuffix("/api/v10")
    payload = message_payload("", direct=True)
    payload["flags"] = VOICE_MESSAGE_FLAG
    payload["attachments"] = [
        {
            "id": "990001",
            "filename": "voice-message.ogg",
            "size": len(data),
            "url": f"{base}/attachments/voice-message.ogg",
            "proxy_url": f"{base}/attachments/voice-message.ogg",
            "content_type": "audio/ogg",
            "duration_secs": 2.1,
            "waveform": "AAAA",
        }
    ]
    return payload


async def test_a_voice_message_in_a_dm_is_transcribed_and_heard(
    fake_discord: FakeDiscord,
) -> None:
    stt = FasterWhisperSTT()

    async def transcribe(data: bytes) -> str:
        return await transcribe_voice_message(data, stt, language="en")

    adapter = DiscordAdapter(
        token=TOKEN, options=DiscordOptions(sync_commands=False), transcribe=transcribe
    )
    recording = ogg_opus(await speak("Please tell me a story about a dragon."))
    listener = RecordingListener()
    client = await adapter.login(listener)
    client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
    try:
        payload = voice_message(fake_discord, recording)
        client._connection.parse_message_create(payload)  # type: ignore[arg-type]
        async with asyncio.timeout(60):
            await listener.arrived.wait()
    finally:
        await client.close()
        await stt.aclose()
    (utterance,) = listener.heard
    assert utterance.trigger == "voice" and utterance.direct
    assert utterance.message_id == payload["id"]  # the answer replies to the voice message
    assert utterance.text is not None
    assert utterance.text.lower().rstrip(".") == "please tell me a story about a dragon"
