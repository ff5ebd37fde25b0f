"""The Discord adapter, end to end: gateway payloads through discord.py's own parsers into the
real router and conversations (real queue, worker, eSpeak and sprite renderer, a language model
behind a local OpenAI-compatible server), replies out through the real reply sinks and
discord.py's HTTP client to a local server that plays Discord's REST API and gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import numpy as np
import pytest

from bots.discord.adapter import DiscordAdapter, DiscordOptions, LipcastClient
from bots.discord.commands import PersonaChoice
from lipcast.config import RenderSettings, Secrets, Settings
from lipcast.wiring import build_job_handler, routes_from_settings
from pipeline.conversation.filters import FilterRules
from pipeline.sinks.replies import ReplySink
from tests.conversation_support import running_pipeline
from tests.discord_support import (
    ADA_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    MOD_ID,
    OTHER_BOT_ID,
    OWNER_ID,
    TOKEN,
    FakeDiscord,
    FakeGateway,
    RecordingListener,
    guild_payload,
    interaction_payload,
    message_payload,
)
from tests.media import decode_audio, decode_frames, probe
from tests.openai_stub import OpenAIStub, last_user_text
from tests.platform_support import Platform, running_router, stub_llm

MENTION = f"<@{BOT_ID}>"
PERSONAS = (
    PersonaChoice(id="cohost", label="Nova", languages=("en",)),
    PersonaChoice(id="teacher", label="Mira", languages=("en", "de", "fr", "es")),
)
# The routes lipcast uses when bot.toml has none: each DM and each channel a conversation.
ROUTES = routes_from_settings(Settings())


def render_handler() -> Any:
    """The real render handler (eSpeak, sprite, H.264/AAC), small frames to keep tests quick."""
    settings = Settings(render=RenderSettings(size=192, fps=20, preset="ultrafast"))
    return build_job_handler(settings, Secrets())


@dataclass
class Session:
    fake: FakeDiscord
    adapter: DiscordAdapter
    client: LipcastClient
    platform: Platform
    listener: RecordingListener  # records what reaches the router, and passes it on

    def message(self, payload: dict[str, Any]) -> dict[str, Any]:
        """MESSAGE_CREATE from the gateway."""
        self.client._connection.parse_message_create(payload)  # type: ignore[arg-type]
        return payload

    def interaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        """INTERACTION_CREATE from the gateway."""
        self.fake.allow_interaction(payload)
        self.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        return payload

    def heard(self, trigger: str) -> Any:
        return next(u for u in self.listener.heard if u.trigger == trigger)


@contextlib.asynccontextmanager
async def session(
    fake: FakeDiscord,
    model: OpenAIStub,
    *,
    options: DiscordOptions | None = None,
    features: tuple[Any, ...] = (),
    routes: list[Any] = ROUTES,
) -> AsyncIterator[Session]:
    """The adapter logged in to the fake Discord, talking to the real router."""
    adapter = DiscordAdapter(
        token=TOKEN,
        options=options or DiscordOptions(guilds=(GUILD_ID,), personas=PERSONAS),
        features=features,
    )
    llm = stub_llm(model.base_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(llm.aclose)
        platform = await stack.enter_async_context(
            running_router(routes, [adapter], handler=render_handler(), llm=llm)
        )
        listener = RecordingListener(inner=platform.router)
        client = await adapter.login(listener)
        client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
        try:
            yield Session(fake, adapter, client, platform, listener)
        finally:
            await client.close()


def clip_message(fake: FakeDiscord) -> Any:
    return next(sent for sent in fake.sent if sent.files)


def clips_sent(fake: FakeDiscord) -> int:
    return sum(1 for sent in fake.sent if sent.files)


# -- connecting ------------------------------------------------------------------------------


async def test_run_joins_discord_and_answers(
    fake_discord: FakeDiscord, gateway: FakeGateway, model: OpenAIStub
) -> None:
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(guilds=(GUILD_ID,)))
    llm = stub_llm(model.base_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(llm.aclose)
        platform = await stack.enter_async_context(
            running_router(ROUTES, [adapter], handler=render_handler(), llm=llm)
        )
        running = asyncio.create_task(adapter.run(platform.router), name="test-discord")
        try:
            await asyncio.wait_for(gateway.identified.wait(), 10)
            question = message_payload(f"{MENTION} Bonjour!", mentions=(BOT_ID,))
            await gateway.dispatch("MESSAGE_CREATE", question)
            await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        finally:
            await adapter.stop()
            await asyncio.wait_for(running, 10)  # stop() ends run()

    assert gateway.identify is not None and gateway.identify["token"] == TOKEN
    assert gateway.identify["intents"] & discord.Intents(message_content=True).value
    assert fake_discord.synced[str(GUILD_ID)]
    assert fake_discord.sent[0].reference == int(question["id"])
    assert "Bonjour" in fake_discord.sent[0].content


async def test_a_refused_intent_ends_run_with_the_fix_in_one_line(
    fake_discord: FakeDiscord, gateway: FakeGateway
) -> None:
    from bots.base import AdapterUnavailable

    gateway.close_code = 4014
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(sync_commands=False))
    with pytest.raises(AdapterUnavailable) as caught:
        await asyncio.wait_for(adapter.run(RecordingListener()), 10)
    assert "Message Content Intent" in str(caught.value) and "replies = false" in str(caught.value)
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)


async def test_a_refused_token_ends_run_with_the_fix(fake_discord: FakeDiscord) -> None:
    from bots.base import AdapterUnavailable

    fake_discord.valid_token = "another-token"
    adapter = DiscordAdapter(token=TOKEN)
    with pytest.raises(AdapterUnavailable, match="Reset Token") as caught:
        await asyncio.wait_for(adapter.run(RecordingListener()), 10)
    assert TOKEN not in str(caught.value)


async def test_an_unreachable_discord_is_retried_until_stopped(
    refused_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", f"{refused_url}/api/v10")
    adapter = DiscordAdapter(token=TOKEN)
    running = asyncio.create_task(adapter.run(RecordingListener()), name="test-discord")
    async with asyncio.timeout(10):
        while "cannot reach Discord" not in caplog.text:  # noqa: ASYNC110 - a log line
            await asyncio.sleep(0.05)
    await adapter.stop()
    await asyncio.wait_for(running, 5)  # ends quietly: no error to report
    assert TOKEN not in caplog.text


# -- questions in ------------------------------------------------------------------------------


async def test_login_syncs_the_commands_to_the_configured_server(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model):
        names = fake_discord.synced[str(GUILD_ID)]
    assert set(names) == {
        "ask",
        "persona",
        "language",
        "forget",
        "skip",
        "clear",
        "pause",
        "resume",
    }
    assert "global" not in fake_discord.synced


async def test_a_mention_is_answered_with_text_then_one_clip(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        question = s.message(message_payload(f"{MENTION} What is a verb?", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        utterance = s.heard("mention")

    assert utterance.platform == "discord"
    assert utterance.channel == str(CHANNEL_ID) and utterance.guild == str(GUILD_ID)
    assert not utterance.direct and utterance.trigger == "mention"
    assert utterance.user == str(ADA_ID) and utterance.user_name == "Ada"
    assert utterance.channel_name == "#general"
    assert utterance.viewer_scope == str(GUILD_ID)  # one history with the viewer's speech
    assert utterance.message_id == question["id"] and utterance.text == "What is a verb?"
    assert not utterance.moderator

    text, clip = fake_discord.sent
    assert text.where == f"channel:{CHANNEL_ID}" and text.reference == int(question["id"])
    assert (
        text.content == "You asked about What is a verb. That is all I know about What is a verb."
    )
    assert clip.content == "" and [name for name, _ in clip.files] == ["reply.mp4"]
    assert clip.reference == int(question["id"])
    for sent in (text, clip):  # only the viewer asking is pinged: never @everyone or a role
        assert sent.allowed_mentions == {"parse": [], "replied_user": True}
    info = probe(clip.files[0][1])  # both sentences in one clip, picture and sound in step
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.audio_seconds > 2.0 and abs(info.video_seconds - info.audio_seconds) < 0.3
    assert CHANNEL_ID in fake_discord.typing  # typing while the clip was made
    assert fake_discord.rejected == []


async def test_a_reply_to_the_bot_and_a_direct_message_are_questions(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        earlier = message_payload("Hello, I am the persona.", author=BOT_ID)
        reply = s.message(message_payload("Tell me more", replying_to=earlier))
        s.message(message_payload("Are you there?", direct=True))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 2)
        answered, direct = s.heard("reply"), s.heard("direct")
        conversations = len(s.platform.router.conversations)

    assert answered.message_id == reply["id"] and answered.text == "Tell me more"
    assert direct.direct and direct.guild is None and direct.channel == str(DM_CHANNEL_ID)
    assert direct.channel_name == "DM with Ada"
    assert direct.viewer_scope is None  # a DM's history stays in the DM
    places = {sent.where for sent in fake_discord.sent}
    assert places == {f"channel:{CHANNEL_ID}", f"channel:{DM_CHANNEL_ID}"}
    assert conversations == 2  # the channel's and Ada's own, answering at the same time


async def test_moderators_and_the_owner_are_flagged_from_their_roles(
    fake_discord: FakeDiscord,
) -> None:
    listener = RecordingListener()
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(sync_commands=False))
    client = await adapter.login(listener)
    client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
    try:
        for author in (ADA_ID, MOD_ID, OWNER_ID):
            payload = message_payload(f"{MENTION} hi", author=author, mentions=(BOT_ID,))
            client._connection.parse_message_create(payload)  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            while len(listener.heard) < 3:
                listener.arrived.clear()
                await listener.arrived.wait()
    finally:
        await client.close()
    flags = {u.user_name: (u.moderator, u.broadcaster) for u in listener.heard}
    # the moderator role may manage messages; the owner may do everything
    assert flags == {"Ada": (False, False), "Mona": (True, False), "Otto": (True, True)}


async def test_other_bots_and_messages_not_for_the_persona_are_ignored(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        s.message(message_payload(f"{MENTION} I am a bot", author=OTHER_BOT_ID, mentions=(BOT_ID,)))
        s.message(message_payload("just chatting with friends"))
        s.message(message_payload(f"{MENTION} my own echo", author=BOT_ID, mentions=(BOT_ID,)))
        s.message(message_payload(f"{MENTION}", mentions=(BOT_ID,)))  # nothing to answer
        s.message(message_payload(f"{MENTION} the real question", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        asked = [utterance.text for utterance in s.listener.heard]

    assert asked == ["the real question"]
    assert fake_discord.reactions == []
    assert len(model.requests) == 1


async def test_a_2000_character_question_is_cut_and_answered(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    long_question = ("Warum ist die Grammatik so schwer? " * 60)[: 2000 - len(MENTION) - 1]
    async with session(fake_discord, model, options=DiscordOptions(clips=False)) as s:
        s.message(message_payload(f"{MENTION} {long_question}", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 1)
        heard = s.heard("mention")

    assert heard.text == long_question.strip()  # the whole question reaches the pipeline ...
    asked = last_user_text(model.requests[0]["messages"])
    assert "Warum ist die Grammatik" in asked and len(asked) < 400  # ... whose filter cuts it
    assert fake_discord.sent[0].content.startswith("You asked about")
    assert fake_discord.rejected == []


async def test_where_no_route_leads_the_persona_stays_silent(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    from pipeline.routing import Route

    dms_only = [Route(platform="discord", direct=True, stage="personal", per="viewer")]
    async with session(fake_discord, model, routes=dms_only) as s:
        s.message(message_payload(f"{MENTION} anyone here?", mentions=(BOT_ID,)))
        s.interaction(interaction_payload("ask", {"question": "hello?"}))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 1)
        async with asyncio.timeout(5):
            while len(s.listener.heard) < 2:  # both were handed to the router
                s.listener.arrived.clear()
                await s.listener.arrived.wait()
    (note,) = fake_discord.sent  # the mention gets nothing at all, not even a reaction
    assert note.ephemeral and note.content == "The persona does not answer here."
    assert fake_discord.reactions == [] and len(fake_discord.deleted_originals) == 1


async def test_a_long_reply_is_split_at_2000_characters(fake_discord: FakeDiscord) -> None:
    from pipeline.clips import Reply

    listener = RecordingListener()
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(sync_commands=False))
    client = await adapter.login(listener)
    client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
    try:
        question = message_payload(f"{MENTION} explain everything", mentions=(BOT_ID,))
        client._connection.parse_message_create(question)  # type: ignore[arg-type]
        await asyncio.wait_for(listener.arrived.wait(), 5)
        sentence = "Das ist ein langer Satz über die deutsche Grammatik und ihre Regeln. "
        text = (sentence * 70).strip()  # about 4,800 characters
        await adapter.deliver(
            Reply(
                utterance=listener.heard[0],
                turn_id="t1",
                text=text,
                persona_name="Mira",
                outcome="completed",
            )
        )
    finally:
        await client.close()
    pieces = [sent.content for sent in fake_discord.sent]
    assert len(pieces) == 3 and all(len(piece) <= 2000 for piece in pieces)
    assert " ".join(pieces) == text
    assert all(piece.endswith(".") for piece in pieces)  # cut after a sentence
    assert fake_discord.sent[0].reference == int(question["id"])


class VoiceLike:
    """A feature as voice is one (bots.discord.features.DiscordFeature): its own command on
    the adapter's tree, and the clips of every Discord reply."""

    def __init__(self) -> None:
        self.set_up_with: tuple[Any, ...] = ()
        self.played: list[Any] = []

    async def setup(self, client: Any, tree: Any, listener: Any) -> None:
        self.set_up_with = (client, tree, listener)

        async def join(interaction: discord.Interaction[discord.Client]) -> None:
            await interaction.response.send_message("joined", ephemeral=True)

        tree.add_command(
            discord.app_commands.Command(name="join", description="Join", callback=join)
        )

    async def play(self, clip: Any) -> None:
        self.played.append(clip)

    async def close(self) -> None:
        return None


async def test_a_feature_adds_its_commands_and_gets_every_clip(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    voice = VoiceLike()
    async with session(fake_discord, model, features=(voice,)) as s:
        s.message(message_payload(f"{MENTION} What is a verb?", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        client, tree, listener = voice.set_up_with
        assert client is s.client and tree is s.client.tree and listener is s.listener

    assert "join" in fake_discord.synced[str(GUILD_ID)]  # synced with lipcast's own
    assert [clip.seq for clip in voice.played] == [0, 1]  # both sentences, in order
    assert all(clip.audio is not None for clip in voice.played)


# -- slash commands ------------------------------------------------------------------------------


async def test_slash_ask_defers_then_follows_up_with_text_and_clip(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        payload = s.interaction(interaction_payload("ask", {"question": "Wie sagt man hello?"}))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        utterance = s.heard("slash")

    assert fake_discord.callbacks[0]["type"] == 5  # deferred: answered within three seconds
    assert utterance.text == "Wie sagt man hello?" and utterance.user == str(ADA_ID)
    assert utterance.channel == str(CHANNEL_ID) and utterance.guild == str(GUILD_ID)
    assert utterance.viewer_scope == str(GUILD_ID)
    token = payload["token"]
    assert [sent.where for sent in fake_discord.sent] == [f"followup:{token}"] * 2
    assert "Wie sagt man hello" in fake_discord.sent[0].content
    assert fake_discord.sent[0].allowed_mentions == {"parse": [], "replied_user": True}
    assert not any(sent.ephemeral for sent in fake_discord.sent)
    assert fake_discord.typing == []  # the deferred 'thinking' shows instead


async def test_a_slash_command_discord_has_forgotten_is_dropped(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        late = interaction_payload("ask", {"question": "too late"})
        fake_discord.expired.add(late["token"])
        s.interaction(late)
        s.interaction(interaction_payload("ask", {"question": "in time"}))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
    assert [utterance.text for utterance in s.listener.heard] == ["in time"]
    assert not any(late["token"] in sent.where for sent in fake_discord.sent)


def _background(clip: bytes) -> tuple[int, ...]:
    """The colour of a clip's first frame at its top-left corner: the persona's background."""
    frame = decode_frames(clip)[0]
    return tuple(int(v) for v in frame[4, 4])


async def test_a_persona_switch_in_the_middle_of_a_conversation(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        s.message(message_payload(f"{MENTION} What is a noun?", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 1)
        s.interaction(
            interaction_payload("persona", {"name": "teacher", "language": "de"}, user=MOD_ID)
        )
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 3)
        s.message(message_payload(f"{MENTION} Was ist ein Verb?", mentions=(BOT_ID,)))
        await fake_discord.wait_for(lambda: clips_sent(fake_discord) == 2)
        conversations = s.platform.router.conversations

    (command,) = s.listener.controls
    assert command.name == "persona" and command.argument == "teacher de"
    assert command.origin.moderator and command.origin.user == str(MOD_ID)
    assert fake_discord.callbacks[0]["data"]["flags"] & 64  # deferred privately
    note = fake_discord.sent[2]
    assert note.ephemeral and note.content == "now Mira (de)"
    before, after = (model.requests[0]["messages"], model.requests[1]["messages"])
    assert "Mira" not in before[0]["content"] and "Mira" in after[0]["content"]
    assert len(conversations) == 1  # the channel's one conversation goes on, with Mira
    first, second = (sent.files[0][1] for sent in fake_discord.sent if sent.files)
    assert _background(first) != _background(second)  # the teacher's own picture


async def test_persona_offers_the_languages_the_chosen_persona_speaks(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        typing = interaction_payload("persona", {"name": "teacher", "language": ""}, user=MOD_ID)
        typing["type"] = 4  # APPLICATION_COMMAND_AUTOCOMPLETE, the language option focused
        typing["data"]["options"][1]["focused"] = True
        s.interaction(typing)
        await fake_discord.wait_for(lambda: len(fake_discord.callbacks) == 1)
    (answer,) = fake_discord.callbacks
    assert answer["type"] == 8  # autocomplete result
    assert [choice["value"] for choice in answer["data"]["choices"]] == ["en", "de", "fr", "es"]


async def test_a_viewer_may_not_skip_and_is_told_privately(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        s.interaction(interaction_payload("skip"))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 1)
    (note,) = fake_discord.sent
    assert note.ephemeral and "not allowed" in note.content


async def test_language_and_forget_go_to_the_viewers_conversation(
    fake_discord: FakeDiscord, model: OpenAIStub
) -> None:
    async with session(fake_discord, model) as s:
        s.interaction(interaction_payload("language", {"code": "fr"}, direct=True))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 1)
        s.interaction(interaction_payload("forget", direct=True))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 2)
        typed = s.interaction(interaction_payload("ask", {"question": "!lang de"}, direct=True))
        await fake_discord.wait_for(lambda: len(fake_discord.sent) == 3)
    language, forget, command = fake_discord.sent
    assert language.ephemeral and "speaks en" in language.content  # cohost speaks English only
    assert forget.ephemeral and "forgot" in forget.content
    assert [command.origin.direct for command in s.listener.controls] == [True, True]
    # a command typed into /ask is run as one, and answered as privately
    assert command.ephemeral and "speaks en" in command.content
    assert fake_discord.deleted_originals == [typed["token"]]


# -- refusals ------------------------------------------------------------------------------------


async def test_refusals_are_a_reaction_or_a_private_note(fake_discord: FakeDiscord) -> None:
    rules = FilterRules(max_chars=300, user_cooldown_s=600, global_per_minute=1000)
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(clips=False))
    async with running_pipeline(handler=render_handler(), rules=rules) as pipeline:
        conversation = pipeline.conversation
        conversation.sinks.append(ReplySink(adapter))
        turns = asyncio.create_task(conversation.run(), name="test-turns")
        client = await adapter.login(conversation)
        client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
        state = client._connection
        try:
            state.parse_message_create(
                message_payload(f"{MENTION} first question", mentions=(BOT_ID,))  # type: ignore[arg-type]
            )
            await fake_discord.wait_for(lambda: len(fake_discord.sent) == 1)
            second = message_payload(f"{MENTION} second question", mentions=(BOT_ID,))
            state.parse_message_create(second)  # type: ignore[arg-type]
            await fake_discord.wait_for(lambda: len(fake_discord.reactions) == 1)
            payload = interaction_payload("ask", {"question": "third question"})
            fake_discord.allow_interaction(payload)
            state.parse_interaction_create(payload)  # type: ignore[arg-type]
            await fake_discord.wait_for(lambda: len(fake_discord.sent) == 2)
        finally:
            await client.close()
            await conversation.close()
            await asyncio.gather(turns, return_exceptions=True)

    assert fake_discord.reactions == [(int(second["id"]), "\N{HOURGLASS WITH FLOWING SAND}")]
    note = fake_discord.sent[1]
    assert note.ephemeral and "cooldown" in note.content
    assert fake_discord.deleted_originals == [payload["token"]]  # no 'thinking' left behind
    assert len(conversation.reports) == 1


# -- the clip and the upload limit ---------------------------------------------------------------


def noisy_clip(seconds: float, seed: int) -> bytes:
    """An MP4 that compresses badly (noise) with a tone: about 1.3 MB a second at crf 18."""
    from lipsync.encode import EncodeOptions, encode_mp4_bytes

    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(int(seconds * 25))]
    t = np.arange(int(seconds * 22050)) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return encode_mp4_bytes(frames, tone, 22050, EncodeOptions(crf=18, preset="ultrafast"))


async def _deliver_to_slash(
    fake: FakeDiscord, parts: list[bytes], *, limit: int
) -> tuple[FakeDiscord, dict[str, Any]]:
    """/ask with ``attachment_size_limit`` = ``limit``; then a reply made of ``parts``."""
    from pipeline.clips import Clip, Reply, TurnInfo

    listener = RecordingListener()
    adapter = DiscordAdapter(token=TOKEN, options=DiscordOptions(sync_commands=False))
    client = await adapter.login(listener)
    client._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
    try:
        payload = interaction_payload("ask", {"question": "Show me"}, attachment_size_limit=limit)
        fake.allow_interaction(payload)
        client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        await asyncio.wait_for(listener.arrived.wait(), 5)
        utterance = listener.heard[0]
        turn = TurnInfo(
            turn_id="t1", utterance=utterance, viewer_name="Ada", language="en", mode="reply"
        )
        clips = tuple(
            Clip(
                turn=turn,
                seq=i,
                text=f"part {i}",
                media=media,
                content_type="video/mp4",
                duration_s=1.0,
                timings={},
            )
            for i, media in enumerate(parts)
        )
        await adapter.deliver(
            Reply(
                utterance=utterance,
                turn_id="t1",
                text="Here you go.",
                persona_name="Mira",
                outcome="completed",
                clips=clips,
            )
        )
    finally:
        await client.close()
    return fake, payload


async def test_a_clip_over_1_mib_is_reencoded_to_fit_and_still_plays(
    fake_discord: FakeDiscord,
) -> None:
    parts = [noisy_clip(2.0, 1), noisy_clip(1.6, 2)]
    assert sum(map(len, parts)) > 3 * 1024 * 1024
    await _deliver_to_slash(fake_discord, parts, limit=1024 * 1024)

    assert fake_discord.rejected == []
    media = clip_message(fake_discord).files[0][1]
    assert len(media) <= 1024 * 1024
    info = probe(media)
    assert info.frames == 90 and abs(info.audio_seconds - 3.6) < 0.1
    samples, rate = decode_audio(media)
    level = float(np.sqrt(np.mean(samples[rate // 2 : 3 * rate] ** 2)))
    assert 0.1 < level < 0.4  # the tone is there, at its level (0.3 peak -> 0.21 RMS)


async def test_a_limit_nothing_fits_under_posts_the_text_with_a_note(
    fake_discord: FakeDiscord,
) -> None:
    await _deliver_to_slash(fake_discord, [noisy_clip(3.0, 3)], limit=20_000)

    assert fake_discord.rejected == []  # never a failed upload
    (text,) = fake_discord.sent
    assert text.files == [] and text.content == "Here you go."
    assert text.edits and "does not fit" in text.edits[-1]
