"""The Twitch adapter end to end: twitchio's HTTP client, EventSub websocket and parsers against
a local server that plays Twitch (tests.twitch_support), into a recording listener or the real
conversation pipeline, and replies back out through Helix ``POST /chat/messages``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

pytest.importorskip("twitchio")

from bots.base import AdapterUnavailable
from bots.twitch.adapter import TwitchAdapter
from bots.twitch.auth import StoredToken, TokenStore
from lipcast.config import Secrets, TwitchSettings, parse_settings
from lipcast.wiring import build_twitch_adapter
from personas import Persona, load_persona
from pipeline.conversation.filters import ChatFilter, FilterRules
from pipeline.conversation.safety import SafetyGuard
from pipeline.conversation.turns import ClipSink, Conversation, ConversationOptions
from pipeline.jobs.queue.base import QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.worker import RenderWorker
from pipeline.routing import Route, Router, Stage
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from pipeline.sinks.queued import QueuedSink
from pipeline.sinks.replies import ReplySink
from pipeline.utterance import Admission, Control, Utterance
from tests.conversation_support import OPEN_RULES, RecordingHandler, RecordingSink
from tests.openai_stub import OpenAIStub, last_user_text
from tests.twitch_support import (
    BOT_ID,
    BOT_LOGIN,
    BOT_SCOPES,
    CHANNEL_ID,
    CHANNEL_LOGIN,
    CLIENT_ID,
    CLIENT_SECRET,
    Account,
    FakeTwitch,
    badge,
    chat_message_event,
    cheermote_fragment,
    mention_fragment,
    point_twitchio_at,
    redemption_event,
    text_fragment,
)

BOT_TOKEN, BOT_REFRESH = "bot-access-token-abcdef0123456789", "bot-refresh-token-abcdef0123456789"
OWNER_TOKEN, OWNER_REFRESH = "owner-access-token-0123456789ab", "owner-refresh-token-0123456789ab"
CHAT = "channel.chat.message"
REDEEM = "channel.channel_points_custom_reward_redemption.add"


@pytest.fixture
async def twitch(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwitch]:
    fake = FakeTwitch()
    await fake.start()
    point_twitchio_at(monkeypatch, fake.base_url)
    fake.add_account(
        Account(
            user_id=BOT_ID, login=BOT_LOGIN, token=BOT_TOKEN, refresh=BOT_REFRESH, scopes=BOT_SCOPES
        )
    )
    yield fake
    await fake.close()


def store(tmp_path: Path, *, owner_scopes: list[str] | None = None) -> TokenStore:
    tokens = TokenStore(path=tmp_path / "tokens.json")
    tokens.put(
        StoredToken(
            user_id=BOT_ID, login=BOT_LOGIN, token=BOT_TOKEN, refresh=BOT_REFRESH, scopes=BOT_SCOPES
        )
    )
    if owner_scopes is not None:
        tokens.put(
            StoredToken(
                user_id=CHANNEL_ID,
                login=CHANNEL_LOGIN,
                token=OWNER_TOKEN,
                refresh=OWNER_REFRESH,
                scopes=owner_scopes,
                role="broadcaster",
            )
        )
    return tokens


def make_adapter(
    tmp_path: Path, *, owner_scopes: list[str] | None = None, **twitch: Any
) -> TwitchAdapter:
    values: dict[str, Any] = {"enabled": True, "channels": [CHANNEL_LOGIN], **twitch}
    settings = TwitchSettings.model_validate(values)
    return TwitchAdapter(
        settings=settings,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        tokens=store(tmp_path, owner_scopes=owner_scopes),
    )


class RecordingListener:
    """A listener that records what the adapter hands it and answers as told."""

    def __init__(self, answer: Admission | None = None) -> None:
        self.heard: list[Utterance] = []
        self.controls: list[Control] = []
        self.answer = answer or Admission(accepted=True, reason="accepted")
        self.arrived = asyncio.Event()

    async def hear(self, utterance: Utterance) -> Admission:
        self.heard.append(utterance)
        self.arrived.set()
        return self.answer

    async def control(self, command: Control) -> Admission:
        self.controls.append(command)
        self.arrived.set()
        if command.name in ("skip", "clear", "pause", "resume", "persona") and not (
            command.origin.moderator or command.origin.broadcaster
        ):
            return Admission(accepted=False, reason="not_allowed", detail="for moderators only")
        return Admission(accepted=False, reason="command", detail=f"{command.name} done")


@contextlib.asynccontextmanager
async def running(
    adapter: TwitchAdapter, listener: Any, fake: FakeTwitch, subs: int = 1
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(adapter.run(listener), name="test-twitch-adapter")
    async with asyncio.timeout(10):
        while len(fake.subscriptions) < subs:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield task
    finally:
        await adapter.stop()
        with contextlib.suppress(AdapterUnavailable):
            await asyncio.wait_for(task, 10)


async def heard(listener: RecordingListener, count: int = 1) -> None:
    async with asyncio.timeout(5):
        while len(listener.heard) + len(listener.controls) < count:
            listener.arrived.clear()
            await listener.arrived.wait()


async def test_connects_subscribes_to_chat_with_the_bot_token(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    listener = RecordingListener()
    async with running(adapter, listener, twitch):
        sub = twitch.subscriptions[0]
        assert sub["type"] == CHAT and sub["version"] == "1"
        assert sub["condition"] == {"broadcaster_user_id": CHANNEL_ID, "user_id": BOT_ID}
        assert sub["transport"]["method"] == "websocket" and sub["token_user"] == BOT_ID
        await twitch.notify(CHAT, chat_message_event("!ask what is the weather like?"))
        await heard(listener)
    utterance = listener.heard[0]
    assert utterance.platform == "twitch" and utterance.channel == CHANNEL_ID
    assert utterance.channel_name == CHANNEL_LOGIN and utterance.user == "4145994"
    assert utterance.text == "what is the weather like?" and utterance.trigger == "command"


# -- through the real conversation pipeline ------------------------------------------------


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    server = OpenAIStub(reply="Sunny all day. Enjoy the stream!", tokens_per_s=2000)
    await server.start()
    yield server
    await server.close()


def stub_llm(stub: OpenAIStub) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        base_url=stub.base_url,
        model="stub-model",
        timeout_s=2.0,
        retry=RetryPolicy(retries=0, base_s=0.01),
    )


@contextlib.asynccontextmanager
async def live(
    adapter: TwitchAdapter,
    fake: FakeTwitch,
    stub: OpenAIStub,
    rules: FilterRules = OPEN_RULES,
    stream_sinks: Sequence[ClipSink] = (),
    reply_layers: Sequence[Any] = (),
) -> AsyncIterator[RecordingSink]:
    """The adapter in front of what ``lipcast run`` builds: the real router with a Twitch
    route on the stream stage, its conversation (memory queue, in-process worker, the model
    behind the OpenAI stub), the reply sink on its queue back to the adapter, and stream sinks
    (a recording one stands in for the overlay unless ``stream_sinks`` are given)."""
    overlay = RecordingSink()
    queue = MemoryJobQueue(QueueOptions(result_timeout_s=10.0))
    await queue.start()
    worker = RenderWorker(queue, RecordingHandler(), concurrency=2)
    worker_task = asyncio.create_task(worker.run(), name="test-worker")
    replies = QueuedSink(ReplySink(adapter), name="replies-twitch")
    llm = stub_llm(stub)

    def safety(persona: Persona, place: Utterance | None = None) -> SafetyGuard:
        return SafetyGuard.build(
            phrases=persona.spec.safety.blocked_phrases, reply_layers=reply_layers
        )

    def make_conversation(persona: Persona, stage: Stage, place: Utterance) -> Conversation:
        sinks: list[ClipSink] = [replies]
        if stage == "stream":
            sinks += [overlay, *stream_sinks]
        return Conversation(
            persona=persona,
            queue=queue,
            chat_filter=ChatFilter(rules),
            safety=safety(persona),
            sinks=sinks,
            llm=llm,
            options=ConversationOptions(),
        )

    router = Router(
        routes=[Route(platform="twitch", stage="stream")],
        load_persona=lambda name, language: load_persona(name, language=language),
        make_conversation=make_conversation,
        make_safety=safety,
    )
    await router.start()
    try:
        async with running(adapter, router, fake):
            yield overlay
    finally:
        await router.close()
        await replies.aclose()
        worker.stop()
        await asyncio.wait_for(worker_task, 5)
        await queue.close()
        await llm.aclose()


async def test_a_question_is_answered_in_chat_as_a_reply_and_in_the_overlay(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = make_adapter(tmp_path)
    event = chat_message_event(
        "!ask what is the weather like?", badges=[badge("subscriber", "0", "8")]
    )
    with caplog.at_level(logging.DEBUG):
        async with live(adapter, twitch, stub) as overlay:
            await twitch.notify(CHAT, event)
            posts = await twitch.wait_posts(1)
    post = posts[0]
    assert post["broadcaster_id"] == CHANNEL_ID and post["sender_id"] == BOT_ID
    assert post["token_user"] == BOT_ID  # sent with the bot's own user token
    assert post["reply_parent_message_id"] == event["message_id"]
    assert post["message"] == "Sunny all day. Enjoy the stream!"
    assert "what is the weather like?" in last_user_text(stub.exchanges[0].body["messages"])
    assert [clip.text for clip in overlay.clips] == ["Sunny all day.", "Enjoy the stream!"]
    for secret in (CLIENT_SECRET, BOT_TOKEN, BOT_REFRESH):
        assert secret not in caplog.text


async def test_the_reply_reaches_the_real_overlay_server_and_chat(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path
) -> None:
    from obs_overlay.server import OverlayServer
    from obs_overlay.sink import OverlaySink

    overlay = OverlayServer(host="127.0.0.1", port=0)
    await overlay.start()
    try:
        adapter = make_adapter(tmp_path)
        sink = QueuedSink(OverlaySink(overlay), name="overlay")
        async with live(adapter, twitch, stub, stream_sinks=[sink]):
            await twitch.notify(
                CHAT,
                chat_message_event(fragments=[mention_fragment(), text_fragment(" how are you?")]),
            )
            posts = await twitch.wait_posts(1)
        await sink.aclose()
        assert posts[0]["message"] == "Sunny all day. Enjoy the stream!"
        assert len(overlay.store) == 2  # both sentences' clips were published to the page
        async with aiohttp.ClientSession() as session, session.get(overlay.url) as page:
            assert page.status == 200
    finally:
        await overlay.stop()


async def test_moderator_commands_run_and_are_answered_non_moderators_are_ignored_silently(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    async with live(adapter, twitch, stub):
        await twitch.notify(CHAT, chat_message_event("!pause", login="troll", user_id="666"))
        await twitch.notify(
            CHAT, chat_message_event("!ask are you there?", login="fan", user_id="7")
        )
        await twitch.wait_posts(1)  # not paused: the fan is answered
        mod = chat_message_event("!pause", login="moddy", user_id="55", badges=[badge("moderator")])
        await twitch.notify(CHAT, mod)
        posts = await twitch.wait_posts(2)
        await twitch.notify(
            CHAT, chat_message_event("!ask still there?", login="fan2", user_id="8")
        )
        posts = await twitch.wait_posts(3)
    assert posts[0]["message"] == "Sunny all day. Enjoy the stream!"
    assert posts[1]["message"] == "@moddy replies paused"
    assert posts[1]["reply_parent_message_id"] == mod["message_id"]
    assert posts[2]["message"].startswith("@fan2 replies are paused")
    assert all("troll" not in post["message"] for post in posts)  # refused without a word


async def test_a_viewer_on_cooldown_is_told_once_per_window_not_per_message(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path
) -> None:
    rules = FilterRules(
        max_chars=300, user_cooldown_s=3600, global_per_minute=1000, duplicate_window_s=0
    )
    adapter = make_adapter(tmp_path, notice_window_s=600)
    async with live(adapter, twitch, stub, rules):
        for n in range(5):
            await twitch.notify(CHAT, chat_message_event(f"!ask question number {n}"))
        await twitch.notify(
            CHAT, chat_message_event("!ask a different viewer", login="other", user_id="99")
        )
        await twitch.wait_posts(3)
        await asyncio.sleep(0.3)  # nothing more arrives
    texts = [post["message"] for post in twitch.chat_posts]
    notices = [text for text in texts if "ask again" in text]
    assert notices == ["@viewer32 you asked a moment ago; ask again in a little while"]
    assert texts.count("Sunny all day. Enjoy the stream!") == 2
    assert len(twitch.chat_posts) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!ask مرحبا، كيف حالك اليوم؟", "مرحبا، كيف حالك اليوم؟"),  # right-to-left
        # emoji with joiners: the pipeline drops invisible characters, the pictures stay
        ("!ask family 👨‍👩‍👧‍👦 and 🏳️‍🌈 hi", "family 👨👩👧👦 and 🏳️🌈 hi"),
    ],
)
async def test_unusual_text_reaches_the_model_intact(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path, text: str, expected: str
) -> None:
    adapter = make_adapter(tmp_path)
    async with live(adapter, twitch, stub):
        await twitch.notify(CHAT, chat_message_event(text))
        await twitch.wait_posts(1)
    assert expected in last_user_text(stub.exchanges[0].body["messages"])


async def test_combining_mark_floods_and_500_character_messages_are_bounded_by_the_pipeline(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    zalgo = "!ask h" + "\u0301\u0302\u0303" * 60 + "ello"
    long = "!ask " + " ".join(["word"] * 99) + "!"  # 500 characters, Twitch's longest
    assert len(long) == 500
    async with live(adapter, twitch, stub):
        await twitch.notify(CHAT, chat_message_event(zalgo, login="z", user_id="71"))
        await twitch.wait_posts(1)
        await twitch.notify(CHAT, chat_message_event(long, login="l", user_id="72"))
        await twitch.wait_posts(2)
    first = last_user_text(stub.exchanges[0].body["messages"])
    assert "ello" in first and first.count("\u0301") < 10  # the flood is cut down
    second = last_user_text(stub.exchanges[1].body["messages"])
    assert "word word" in second and second.count("word") <= 300 // 5  # [chat] max_chars


# -- redemptions, cheers, and what is not answered ---------------------------------------------


async def test_a_redemption_is_answered_and_fulfilled_a_refused_one_refunded(
    twitch: FakeTwitch, stub: OpenAIStub, tmp_path: Path
) -> None:
    twitch.add_account(
        Account(
            user_id=CHANNEL_ID,
            login=CHANNEL_LOGIN,
            token=OWNER_TOKEN,
            refresh=OWNER_REFRESH,
            scopes=["channel:bot", "channel:manage:redemptions"],
        )
    )
    adapter = make_adapter(
        tmp_path,
        owner_scopes=["channel:bot", "channel:manage:redemptions"],
        triggers={"rewards": ["Ask the AI"]},
        manage_rewards=True,
    )
    rules = FilterRules(
        max_chars=300, user_cooldown_s=3600, global_per_minute=1000, duplicate_window_s=0
    )
    async with live(adapter, twitch, stub, rules):
        await twitch.wait_until(lambda: len(twitch.subscriptions) >= 2)
        redeem = twitch.subscriptions[1]
        assert redeem["type"] == REDEEM and redeem["token_user"] == CHANNEL_ID
        answered = redemption_event("Ask the AI", "tell me a joke")
        await twitch.notify(REDEEM, answered)
        posts = await twitch.wait_posts(1)
        assert posts[0]["message"] == "@Cooler_user Sunny all day. Enjoy the stream!"
        # the same viewer again at once: on cooldown, so refused and refunded
        refused = redemption_event("ask the ai", "another one")
        await twitch.notify(REDEEM, refused)
        await twitch.notify(REDEEM, redemption_event("Hydrate", "ignored: not a trigger"))
        await twitch.wait_until(lambda: len(twitch.redemption_updates) >= 2)
        posts = await twitch.wait_posts(2)
    assert "reply_parent_message_id" not in posts[0]  # nothing to reply to
    assert posts[1]["message"] == "@Cooler_user you asked a moment ago; ask again in a little while"
    updates = {update["id"]: update for update in twitch.redemption_updates}
    assert updates[answered["id"]]["status"] == "FULFILLED"
    assert updates[refused["id"]]["status"] == "CANCELED"
    assert all(update["token_user"] == CHANNEL_ID for update in updates.values())
    assert "tell me a joke" in last_user_text(stub.exchanges[0].body["messages"])


async def test_rewards_without_the_broadcasters_token_say_which_command_to_run(
    twitch: FakeTwitch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = make_adapter(tmp_path, triggers={"rewards": ["Ask the AI"]})
    with caplog.at_level(logging.WARNING):
        async with running(adapter, RecordingListener(), twitch):
            pass
    assert [sub["type"] for sub in twitch.subscriptions] == [CHAT]
    assert "lipcast twitch auth --broadcaster" in caplog.text


async def test_cheers_own_messages_and_shared_chat(twitch: FakeTwitch, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path, triggers={"prefix": "", "min_bits": 100})
    listener = RecordingListener()
    async with running(adapter, listener, twitch):
        await twitch.notify(
            CHAT,
            chat_message_event(
                "from the bot", user_id=BOT_ID, login=BOT_LOGIN, badges=[badge("moderator")]
            ),
        )
        await twitch.notify(CHAT, chat_message_event("elsewhere", source=("777", "otherstreamer")))
        await twitch.notify(CHAT, chat_message_event("Cheer50 small", bits=50))
        cheer = chat_message_event(
            fragments=[cheermote_fragment(500), text_fragment(" what is your favourite game?")],
            bits=500,
        )
        await twitch.notify(CHAT, cheer)
        await twitch.notify(CHAT, cheer)  # delivered twice: answered once
        await heard(listener)
        await asyncio.sleep(0.2)
    assert [u.text for u in listener.heard] == ["what is your favourite game?"]
    assert listener.heard[0].bits == 500 and listener.heard[0].trigger == "cheer"
    assert CHANNEL_ID in adapter.moderated  # the bot's own message showed its moderator badge


async def test_a_revoked_token_ends_the_run_once_with_the_fix(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    task = asyncio.create_task(adapter.run(RecordingListener()))
    await asyncio.wait_for(twitch.subscribed.wait(), 10)
    await twitch.revoke()
    with pytest.raises(AdapterUnavailable, match=r"revoked.*lipcast twitch auth"):
        await asyncio.wait_for(task, 10)


async def test_a_token_that_cannot_be_refreshed_is_reported_without_showing_it(
    twitch: FakeTwitch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    twitch.accounts.clear()  # Twitch no longer knows the bot's token ...
    twitch.refused_refresh = True  # ... nor its refresh token
    adapter = make_adapter(tmp_path)
    with caplog.at_level(logging.DEBUG), pytest.raises(AdapterUnavailable) as caught:
        await asyncio.wait_for(adapter.run(RecordingListener()), 10)
    message = str(caught.value)
    assert "persona_bot" in message and "lipcast twitch auth" in message
    for secret in (BOT_TOKEN, BOT_REFRESH, CLIENT_SECRET):
        assert secret not in message and secret not in caplog.text


async def test_an_expired_token_is_refreshed_and_the_store_follows(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    twitch.accounts[BOT_TOKEN].expires_in = 0  # expired: Twitch answers 401 to validate
    adapter = make_adapter(tmp_path)
    async with running(adapter, RecordingListener(), twitch):
        pass
    saved = TokenStore.load(tmp_path / "tokens.json").tokens[BOT_ID]
    assert saved.token != BOT_TOKEN and saved.token in twitch.accounts
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600


async def test_a_wrong_client_secret_names_the_variable(twitch: FakeTwitch, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    adapter._client_secret = "not-the-secret-at-all"
    with pytest.raises(AdapterUnavailable, match="TWITCH_CLIENT_SECRET") as caught:
        await asyncio.wait_for(adapter.run(RecordingListener()), 10)
    assert "not-the-secret-at-all" not in str(caught.value)


# -- start-up without credentials, and lipcast doctor ----------------------------------------


@pytest.mark.parametrize(
    ("env", "secrets", "tokens", "expected"),
    [
        ({}, {}, False, "TWITCH_CLIENT_ID"),
        ({"TWITCH_CLIENT_ID": CLIENT_ID}, {}, False, "TWITCH_CLIENT_SECRET"),
        (
            {"TWITCH_CLIENT_ID": CLIENT_ID},
            {"twitch_client_secret": CLIENT_SECRET},
            False,
            "`lipcast twitch auth`",
        ),
    ],
)
def test_a_missing_credential_is_named_exactly(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    secrets: dict[str, str],
    tokens: bool,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("TWITCH_CLIENT_ID", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = parse_settings({"twitch": {"enabled": True, "channels": ["streamer"]}}, source="t")
    with pytest.raises(AdapterUnavailable, match=expected):
        build_twitch_adapter(
            settings, Secrets.model_validate(secrets), token_path=tmp_path / "none.json"
        )


def test_the_builder_reads_the_stored_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    store(tmp_path).save()
    settings = parse_settings({"twitch": {"enabled": True, "channels": ["streamer"]}}, source="t")
    adapter = build_twitch_adapter(
        settings,
        Secrets(twitch_client_secret=SecretStr(CLIENT_SECRET)),
        token_path=tmp_path / "tokens.json",
    )
    assert isinstance(adapter, TwitchAdapter)
    assert adapter.describe() == "twitch: #streamer as persona_bot"
    assert BOT_TOKEN not in repr(adapter.bot) and BOT_REFRESH not in repr(adapter.tokens)


async def test_doctor_validates_tokens_read_only_and_names_missing_scopes(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    twitch.add_account(
        Account(
            user_id=CHANNEL_ID,
            login=CHANNEL_LOGIN,
            token=OWNER_TOKEN,
            refresh=OWNER_REFRESH,
            scopes=["channel:bot"],
        )
    )
    adapter = make_adapter(
        tmp_path, owner_scopes=["channel:bot"], triggers={"rewards": ["Ask"]}, automod_check=True
    )
    lines = await adapter.check()
    details = [line.detail for line in lines]
    assert lines[0].ok and "bot persona_bot: token valid" in details[0]
    assert lines[1].warning and "channel:read:redemptions, moderation:read" in details[1]
    assert "--broadcaster" in details[1]
    assert not twitch.chat_posts and not twitch.subscriptions  # nothing changed
    twitch.accounts[BOT_TOKEN].scopes = ["user:read:chat"]
    lines = await adapter.check()
    assert not lines[0].ok and "user:write:chat, user:bot" in lines[0].detail
    assert all(BOT_TOKEN not in line.detail for line in lines)


def test_a_damaged_token_file_makes_the_adapter_unavailable_not_lipcast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    (tmp_path / "tokens.json").write_text("{not json")
    settings = parse_settings({"twitch": {"enabled": True, "channels": ["streamer"]}}, source="t")
    with pytest.raises(AdapterUnavailable, match=r"delete it and run `lipcast twitch auth`"):
        build_twitch_adapter(
            settings,
            Secrets(twitch_client_secret=SecretStr(CLIENT_SECRET)),
            token_path=tmp_path / "tokens.json",
        )


async def test_forget_at_user_names_the_viewer_by_id_and_only_for_moderators(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    listener = RecordingListener()
    async with running(adapter, listener, twitch):
        await twitch.notify(CHAT, chat_message_event("!ask hello", login="pest", user_id="31337"))
        await twitch.notify(CHAT, chat_message_event("!forget @Pest", login="fan", user_id="7"))
        mod = chat_message_event(
            "!forget @Pest", login="moddy", user_id="55", badges=[badge("moderator")]
        )
        await twitch.notify(CHAT, mod)
        await heard(listener, 2)
        await twitch.wait_posts(1)
    [command] = listener.controls
    assert command.name == "forget" and command.argument == "31337"
    assert command.origin.user == "55" and command.origin.moderator
    assert twitch.chat_posts[0]["message"] == "@moddy forget done"


async def test_busy_notices_name_each_refused_viewer_once(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path)
    listener = RecordingListener(Admission(accepted=False, reason="busy", detail="5 waiting"))
    async with running(adapter, listener, twitch):
        for round_ in range(3):
            for n, name in enumerate(("ann", "ben", "cat")):
                await twitch.notify(
                    CHAT, chat_message_event(f"!ask q{round_}", login=name, user_id=str(100 + n))
                )
        await heard(listener, 9)
        await twitch.wait_posts(1)
        await asyncio.sleep(0.3)
    text = " ".join(post["message"] for post in twitch.chat_posts)
    for name in ("ann", "ben", "cat"):
        assert text.count(f"@{name} too many questions are waiting") == 1
    assert len(twitch.chat_posts) <= 3  # notices waiting together go out as one line


async def test_cheers_subscribers_and_moderators_are_answered_before_other_viewers(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    slow = OpenAIStub(reply="Sunny all day. Enjoy the stream!", tokens_per_s=15)
    await slow.start()
    try:
        adapter = make_adapter(tmp_path, triggers={"min_bits": 100})
        first = chat_message_event("!ask first in line", login="a", user_id="1")
        plain = chat_message_event("!ask just a viewer", login="b", user_id="2")
        sub = chat_message_event(
            "!ask a subscriber", login="c", user_id="3", badges=[badge("subscriber")]
        )
        cheer = chat_message_event(
            fragments=[cheermote_fragment(300), text_fragment(" a cheer")],
            bits=300,
            login="d",
            user_id="4",
        )
        mod = chat_message_event(
            "!ask a moderator", login="e", user_id="5", badges=[badge("moderator")]
        )
        async with live(adapter, twitch, slow):
            await twitch.notify(CHAT, first)
            async with asyncio.timeout(10):
                while not slow.exchanges:  # noqa: ASYNC110 - until the first turn is running
                    await asyncio.sleep(0.01)
            for event in (plain, sub, cheer, mod):
                await twitch.notify(CHAT, event)
            posts = await twitch.wait_posts(5, within_s=20)
    finally:
        await slow.close()
    order = [post["reply_parent_message_id"] for post in posts]
    expected = [first, mod, cheer, sub, plain]
    assert order == [event["message_id"] for event in expected]


async def test_a_sentence_the_channels_automod_would_hold_is_never_said_or_posted(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    owner_scopes = ["channel:bot", "moderation:read"]
    twitch.add_account(
        Account(
            user_id=CHANNEL_ID,
            login=CHANNEL_LOGIN,
            token=OWNER_TOKEN,
            refresh=OWNER_REFRESH,
            scopes=owner_scopes,
        )
    )
    rude = OpenAIStub(reply="Sunny all day. You absolute blorp!", tokens_per_s=2000)
    await rude.start()
    try:
        adapter = make_adapter(tmp_path, owner_scopes=owner_scopes, automod_check=True)
        layer = adapter.automod_check()
        assert layer is not None and layer.name == "automod"
        async with live(adapter, twitch, rude, reply_layers=[layer]) as overlay:
            await twitch.notify(CHAT, chat_message_event("!ask how is the weather?"))
            posts = await twitch.wait_posts(1)
    finally:
        await rude.close()
    assert [post["message"] for post in posts] == ["Sunny all day."]
    assert [clip.text for clip in overlay.clips] == ["Sunny all day."]
    assert twitch.automod_checks == ["Sunny all day.", "You absolute blorp!"]
    assert layer.last_latency_s > 0
