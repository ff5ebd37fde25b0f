"""Moderation layers: run after the local checks, logged by name, the turn goes on.

:class:`ChannelRules` is a moderation layer as the Twitch adapter's AutoMod check plugs in:
it implements the real :class:`ModerationLayer` interface (a name and an async check), with
the rules held here instead of on Twitch's servers, which this machine cannot reach. The
OpenAI moderation layer talks to tests/openai_stub over real HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from pipeline.conversation.safety import (
    ALLOWED,
    ModerationLayer,
    OpenAIModeration,
    SafetyGuard,
    Verdict,
)
from pipeline.errors import BackendError
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from tests.conversation_support import running_pipeline, say
from tests.openai_stub import OpenAIStub


class ChannelRules:
    """A layer that holds a channel's own rules (words the channel's moderators set)."""

    name = "channel_automod"

    def __init__(self, *words: str, down: bool = False) -> None:
        self.words = words
        self.down = down
        self.seen: list[str] = []
        self.closed = 0

    async def check(self, text: str) -> Verdict:
        self.seen.append(text)
        if self.down:
            raise BackendError("the channel's AutoMod did not answer", transient=True)
        for word in self.words:
            if word in text.lower():
                return Verdict(ok=False, reason="automod", detail=f"held: {word}")
        return ALLOWED

    async def aclose(self) -> None:
        self.closed += 1


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    server = OpenAIStub(reply="Hello there, friends. Let us talk pineapples. Back to the game now.")
    await server.start()
    yield server
    await server.close()


def make_llm(stub: OpenAIStub) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        base_url=stub.base_url, model="stub", timeout_s=2.0, retry=RetryPolicy(retries=0)
    )


def test_both_layers_implement_the_protocol() -> None:
    assert isinstance(ChannelRules(), ModerationLayer)
    moderation = OpenAIModeration(base_url="http://127.0.0.1:9/v1", api_key=None)
    assert isinstance(moderation, ModerationLayer)
    assert moderation.name == "openai_moderation"


async def test_a_layer_blocks_a_reply_sentence_the_turn_goes_on_and_moderators_see_its_name(
    stub: OpenAIStub, caplog: pytest.LogCaptureFixture
) -> None:
    automod = ChannelRules("pineapple")
    safety = SafetyGuard.build(phrases=[], reply_layers=[automod])
    caplog.set_level(logging.WARNING, logger="lipcast.moderation")
    async with running_pipeline(llm=make_llm(stub), safety=safety) as p:
        report = await p.conversation.respond(say("what now?"), "what now?")
    assert p.handler.spoken == ["Hello there, friends.", "Back to the game now."]
    assert report.blocked == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "lipcast.moderation"]
    assert len(logged) == 1
    assert "channel_automod: held: pineapple" in logged[0]
    assert "automod" in logged[0]
    assert automod.seen == [
        "Hello there, friends.",
        "Let us talk pineapples.",
        "Back to the game now.",
    ]
    await safety.aclose()
    assert automod.closed == 1


async def test_layers_run_in_order_after_the_local_checks(stub: OpenAIStub) -> None:
    moderation = OpenAIModeration(base_url=stub.base_url, api_key=None, timeout_s=2.0)
    automod = ChannelRules("castle")
    safety = SafetyGuard.build(phrases=["forbidden words"], layers=[automod, moderation])
    # the local matcher decides first: no layer is asked
    local = await safety.check_viewer("say f.o.r.b.i.d.d.e.n w.o.r.d.s")
    assert local.reason == "blocked_phrase" and local.layer == ""
    assert automod.seen == [] and stub.moderation_inputs == []
    held = await safety.check_viewer("storm the castle")
    assert (held.ok, held.layer, held.reason) == (False, "channel_automod", "automod")
    assert stub.moderation_inputs == []  # the first layer already said no
    flagged = await safety.check_viewer("we attack at dawn")
    assert (flagged.ok, flagged.layer, flagged.reason) == (False, "openai_moderation", "moderation")
    assert flagged.detail == "openai_moderation: violence"
    assert (await safety.check_viewer("good morning")).ok
    await safety.aclose()


@pytest.mark.parametrize("fail_closed", [True, False])
async def test_a_layer_that_is_down_blocks_or_not_as_configured(fail_closed: bool) -> None:
    safety = SafetyGuard.build(
        phrases=[], layers=[ChannelRules(down=True)], fail_closed=fail_closed
    )
    verdict = await safety.check_viewer("hello")
    if fail_closed:
        assert (verdict.ok, verdict.reason, verdict.layer) == (
            False,
            "moderation_unavailable",
            "channel_automod",
        )
        assert "did not answer" in verdict.detail
    else:
        assert verdict.ok


async def test_the_moderator_shortcut_checks_replies_only_when_asked(stub: OpenAIStub) -> None:
    moderation = OpenAIModeration(base_url=stub.base_url, api_key=None, timeout_s=2.0)
    viewer_only = SafetyGuard.build(phrases=[], moderator=moderation)
    assert viewer_only.layers == (moderation,) and viewer_only.reply_layers == ()
    both = SafetyGuard.build(phrases=[], moderator=moderation, moderate_replies=True)
    assert both.reply_layers == (moderation,)
    await both.aclose()
