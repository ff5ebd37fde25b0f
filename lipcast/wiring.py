"""Composition: build the configured backends and parts from settings and secrets.

This is the one place that knows which backend class takes which settings; everything else
receives ready objects. Commands and benchmarks build their parts here: the render side (TTS,
renderer, encoder, job handler), the job queue, the overlay server, and the conversation side
(the language model, the safety guard, the chat filter, the viewer memory, the conversation).
Nothing here starts or opens what it builds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipcast.config import Secrets, Settings, user_data_dir
from lipsync.encode import EncodeOptions
from lipsync.renderer import Renderer
from obs_overlay.clip_store import ClipStore
from obs_overlay.events import PageOptions
from obs_overlay.server import OverlayError, OverlayServer, PlaybackCallback
from personas import Persona, list_personas, load_persona
from pipeline.backends import load_backend
from pipeline.conversation.filters import ChatFilter, FilterRules
from pipeline.conversation.memory import ViewerMemory
from pipeline.conversation.priority import PriorityPolicy
from pipeline.conversation.safety import (
    ModerationLayer,
    OpenAIModeration,
    SafetyGuard,
    secrets_from_environment,
)
from pipeline.conversation.turns import ClipSink, Conversation, ConversationOptions
from pipeline.errors import ConfigError, MissingDependencyError
from pipeline.jobs.queue import TRANSCRIBE_JOBS, JobQueue, QueueOptions, open_job_queue
from pipeline.jobs.render import RENDERERS, ClipRenderer, RenderJobHandler
from pipeline.jobs.wire import TranscribeJob, TranscribeResult
from pipeline.routing import Route
from pipeline.services.llm import LLM, LLM_BACKENDS
from pipeline.services.stt import STT, STT_BACKENDS
from pipeline.services.tts import TTS, TTS_BACKENDS

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from bots.base import ChatAdapter
    from bots.discord.features import DiscordFeature
    from bots.discord.voice.feature import VoiceFeature
    from lipsync.atlas import Atlas


def build_tts(settings: Settings, secrets: Secrets) -> TTS:
    """The TTS backend named by ``[tts] backend``, configured from its section."""
    name = settings.tts.backend
    cls = load_backend("TTS", name, TTS_BACKENDS)
    options: dict[str, Any] = getattr(settings.tts, name).model_dump()
    if name == "openai":
        key = secrets.openai_api_key
        options["api_key"] = key.get_secret_value() if key else None
    if name == "silero" and secrets.silero_token is not None:
        options["token"] = secrets.silero_token.get_secret_value()
    tts: TTS = cls(**options)
    return tts


def build_stt(settings: Settings, secrets: Secrets, *, backend: str | None = None) -> STT:
    """The speech-to-text backend named by ``[stt] backend`` (or ``backend``), configured from
    its section."""
    name = backend or settings.stt.backend
    cls = load_backend("STT", name, STT_BACKENDS)
    options: dict[str, Any] = getattr(settings.stt, name.replace("-", "_")).model_dump()
    if name == "queue":
        if settings.queue.backend != "rabbitmq":
            raise ConfigError(
                f'[stt] backend = "queue" sends speech to `lipcast worker --stt` machines '
                f'through RabbitMQ, but [queue] backend = "{settings.queue.backend}". Set '
                '[queue] backend = "rabbitmq", or [stt] backend = "faster-whisper" to '
                "transcribe on this machine"
            )
        del options["backend"]  # what the workers run
        options["queue"] = build_stt_queue(settings, secrets, connection_name="lipcast stt")
    if name == "openai":
        key = secrets.openai_api_key
        options["api_key"] = key.get_secret_value() if key else None
    stt: STT = cls(**options)
    return stt


def voice_live_report() -> Path:
    """Where a running voice feature writes its doctor lines, and ``lipcast doctor`` reads them."""
    return user_data_dir() / "voice-receive.json"


def build_voice_feature(settings: Settings, secrets: Secrets) -> VoiceFeature:
    """The Discord adapter's voice feature (``/join``, ``/leave``, spoken replies) as ``[voice]``
    and ``[stt]`` configure it (not set up: the adapter does that)."""
    import importlib.util

    for module, package in (("faster_whisper", "faster-whisper"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:  # the speech detector's model and runtime
            raise MissingDependencyError("Discord voice", package=package, extra="voice")
    from bots.discord.voice.feature import VoiceFeature, VoiceOptions
    from pipeline.speech.segmenter import SegmenterOptions

    voice = settings.voice
    options = VoiceOptions(
        segmenter=SegmenterOptions(
            threshold=voice.vad_threshold,
            end_silence_ms=voice.end_silence_ms,
            min_speech_ms=voice.min_speech_ms,
            max_utterance_s=voice.max_utterance_s,
        ),
        barge_in=voice.barge_in,
        duck_volume=voice.duck_volume,
        text_channel=int(voice.text_channel) if voice.text_channel else None,
        post_clips=voice.post_clips,
        rejoin_after_failures=voice.rejoin_after_failures,
        language=settings.persona.language,
        auto_join=tuple(int(route.channel) for route in settings.routes if route.join),
        live_report=voice_live_report(),
    )
    return VoiceFeature(stt=build_stt(settings, secrets), options=options)


def build_renderer(settings: Settings) -> Renderer:
    """The lip-sync renderer named by ``[render] renderer``, from :data:`RENDERERS`, configured
    from ``[render]`` and its own ``[render.NAME]`` section."""
    render = settings.render
    cls = load_backend("renderer", render.renderer, RENDERERS)
    options: dict[str, Any] = {"fps": render.fps, "size": render.size}
    if render.renderer == "wav2lip":
        options.update(_wav2lip_options(settings))
    renderer: Renderer = cls(**options)
    return renderer


def _wav2lip_options(settings: Settings) -> dict[str, Any]:
    """``[render.wav2lip]`` as the renderer takes it, checked: the runtime's packages, the
    checkpoint's file."""
    import importlib.util

    from lipsync.wav2lip import CHECKPOINT_HELP

    config = settings.render.wav2lip
    if config.runtime != "torch":  # torch itself is checked by RENDERERS
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    "the wav2lip renderer's ONNX runtime", package=module, extra="wav2lip"
                )
    if config.checkpoint is None or not config.checkpoint.is_file():
        problem = (
            "is not set" if config.checkpoint is None else f"= '{config.checkpoint}': no such file"
        )
        raise ConfigError(f"[render.wav2lip] checkpoint {problem}; {CHECKPOINT_HELP}")
    return config.model_dump()


def encode_options(settings: Settings) -> EncodeOptions:
    render = settings.render
    return EncodeOptions(fps=render.fps, crf=render.crf, preset=render.preset)


def build_clip_renderer(settings: Settings, secrets: Secrets) -> ClipRenderer:
    """TTS, renderer and encoder as configured, ready to turn text into clips."""
    return ClipRenderer(
        tts=build_tts(settings, secrets),
        tts_name=settings.tts.backend,
        renderer=build_renderer(settings),
        encode=encode_options(settings),
    )


def persona_from_settings(
    settings: Settings, name: str | None = None, language: str | None = None
) -> Persona:
    """Load a persona by name (default ``[persona] default``) in a language (default its own)."""
    return load_persona(
        name or settings.persona.default,
        language=language or settings.persona.language,
        search_dirs=list(settings.persona.dirs),
    )


def build_job_handler(
    settings: Settings, secrets: Secrets, *, personas: Iterable[Persona] = ()
) -> RenderJobHandler:
    """The render worker's handler: the configured TTS, renderer and encoder, per job.

    Jobs name personas by folder name. ``personas`` already loaded (``lipcast run`` passes the
    one it speaks with, which may live in any folder) are found by that name first.
    """
    known = {persona.id: persona.folder for persona in personas}

    def load(name: str, language: str | None) -> Persona:
        if name in known:
            return load_persona(str(known[name]), language=language or settings.persona.language)
        return persona_from_settings(settings, name, language)

    return RenderJobHandler(build_clip_renderer(settings, secrets), load)


def job_queue_options(
    settings: Settings, secrets: Secrets, *, connection_name: str, name: str | None = None
) -> QueueOptions:
    """Queue options from ``[queue]``, with the broker URL from LIPCAST_AMQP_URL when set."""
    queue = settings.queue
    return QueueOptions(
        url=queue.broker_url(secrets),
        name=name or queue.name,
        max_length=queue.max_length,
        max_priority=queue.max_priority,
        max_attempts=queue.max_attempts,
        result_timeout_s=queue.result_timeout_s,
        dead_letter_max_length=queue.dead_letter_max_length,
        reconnect_interval_s=queue.reconnect_interval_s,
        connect_timeout_s=queue.connect_timeout_s,
        connection_name=connection_name,
    )


def stt_queue_name(settings: Settings) -> str:
    """The work queue transcribe jobs travel on: ``<[queue] name>.stt``."""
    return f"{settings.queue.name}.stt"


def build_stt_queue(
    settings: Settings, secrets: Secrets, *, connection_name: str, name: str | None = None
) -> JobQueue[TranscribeJob, TranscribeResult]:
    """The job queue for transcribe jobs (``[queue] backend``), not yet started."""
    options = job_queue_options(
        settings, secrets, connection_name=connection_name, name=name or stt_queue_name(settings)
    )
    return open_job_queue(settings.queue.backend, options, TRANSCRIBE_JOBS)


def build_job_queue(
    settings: Settings, secrets: Secrets, *, connection_name: str = "lipcast"
) -> JobQueue:
    """The job queue ``[queue] backend`` names, not yet started."""
    options = job_queue_options(settings, secrets, connection_name=connection_name)
    return open_job_queue(settings.queue.backend, options)


def persona_atlas(settings: Settings, persona: Persona) -> Atlas | None:
    """The persona's layer atlas for the overlay page to draw, when ``[render] renderer`` is
    the sprite (None for a video renderer). CPU work: call it from a thread."""
    if settings.render.renderer != "sprite":
        return None
    from lipsync.atlas import export_atlas
    from lipsync.sprite import SpriteRenderer
    from pipeline.jobs.render import avatar_for

    renderer = SpriteRenderer(fps=settings.render.fps, size=settings.render.size)
    return export_atlas(renderer, avatar_for(persona))


def build_overlay_server(
    settings: Settings,
    secrets: Secrets,
    *,
    idle_image: Path | None = None,
    on_playback: PlaybackCallback | None = None,
    host: str | None = None,
    port: int | None = None,
    persona: Persona | None = None,
) -> OverlayServer:
    """The overlay server as ``[overlay]`` configures it (not started).

    ``idle_image`` is used when bot.toml names none (``lipcast run`` passes the persona's
    avatar); ``host`` and ``port`` override bot.toml. With ``persona`` and the sprite renderer
    the page draws the persona itself (its atlas is made when the server starts). A reply
    must begin within ``[chat] deadline_s`` of being announced, or it is not shown.
    """
    overlay = settings.overlay
    token = secrets.overlay_token.get_secret_value() if secrets.overlay_token else None
    store = ClipStore(
        max_clips=overlay.store_max_clips,
        max_bytes=overlay.store_max_mb * 1024 * 1024,
        max_age_s=overlay.store_max_age_s,
    )
    options = PageOptions(captions=overlay.captions, banner=overlay.banner, hold_ms=overlay.hold_ms)
    try:
        return OverlayServer(
            host=host or overlay.host,
            port=port or overlay.port,
            control_token=token,
            store=store,
            idle_image=overlay.idle_image or idle_image,
            idle_video=overlay.idle_video,
            options=options,
            on_playback=on_playback,
            make_atlas=None if persona is None else partial(persona_atlas, settings, persona),
            start_deadline_s=settings.chat.deadline_s,
        )
    except OverlayError as err:
        raise ConfigError(f"{err} (check overlay.idle_image and overlay.idle_video)") from err


# -- the conversation side -------------------------------------------------------------------


def build_llm(settings: Settings, secrets: Secrets) -> LLM | None:
    """The model ``[llm] backend`` names, or None for read-aloud mode."""
    config = settings.llm
    if config.backend == "none":
        return None
    cls = load_backend("LLM", config.backend, LLM_BACKENDS)
    key = secrets.openai_api_key.get_secret_value() if secrets.openai_api_key else None
    llm: LLM = cls(
        base_url=config.base_url,
        model=config.model,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        timeout_s=config.timeout_s,
        retries=config.retries,
        api_key=key,
    )
    return llm


def build_safety(
    settings: Settings,
    secrets: Secrets,
    persona: Persona,
    *,
    platform: str | None = None,
    channel: str | None = None,
    reply_layers: Sequence[ModerationLayer] = (),
) -> SafetyGuard:
    """The built-in list, the blocked phrases and allowed words of ``[safety]``, the persona
    and the channel (``[[safety.channels]]`` matching ``platform`` and ``channel``), every
    secret and private detail, and the optional moderation layer. ``reply_layers`` check each
    sentence too (the Twitch adapter's ``automod_check()``)."""
    config = settings.safety
    spec = persona.spec.safety
    moderator = None
    if config.moderation:
        key = secrets.openai_api_key.get_secret_value() if secrets.openai_api_key else None
        moderator = OpenAIModeration(
            base_url=config.moderation_base_url,
            api_key=key,
            model=config.moderation_model,
            timeout_s=config.moderation_timeout_s,
        )
    here = [
        section
        for section in config.channels
        if section.platform == platform and section.channel == channel
    ]
    return SafetyGuard.build(
        phrases=[
            *spec.blocked_phrases,
            *config.blocked_phrases,
            *(phrase for section in here for phrase in section.blocked_phrases),
        ],
        default_lists=config.default_lists if spec.default_lists is None else spec.default_lists,
        unblocked=[
            *config.unblocked,
            *spec.unblocked,
            *(entry for section in here for entry in section.unblocked),
        ],
        allowed_words=[
            *config.allowed_words,
            *spec.allowed_words,
            *(word for section in here for word in section.allowed_words),
        ],
        private=config.private,
        secrets=[*secrets.values(), *secrets_from_environment()],
        moderator=moderator,
        moderate_replies=config.moderate_replies,
        fail_closed=config.moderation_fail_closed,
        reply_layers=reply_layers,
    )


def filter_rules(settings: Settings) -> FilterRules:
    """What the chat filter lets through, from ``[chat]``."""
    chat = settings.chat
    return FilterRules(
        max_chars=chat.max_chars,
        too_long=chat.too_long,
        user_cooldown_s=chat.user_cooldown_s,
        global_per_minute=chat.global_per_minute,
        duplicate_window_s=chat.duplicate_window_s,
        blocked_users=tuple(chat.blocked_users),
        blocked_words=tuple(chat.blocked_words),
        moderators_exempt=chat.moderators_exempt,
    )


def conversation_options(settings: Settings, **overrides: Any) -> ConversationOptions:
    """How turns run, from ``[chat]``, ``[llm]`` and ``[memory]``; ``overrides`` win."""
    chat = settings.chat
    values: dict[str, Any] = {
        "deadline_s": chat.deadline_s,
        "max_pending": chat.max_pending,
        "read_aloud_names": chat.read_aloud_names,
        "sentence_min_chars": chat.sentence_min_chars,
        "sentence_soft_max_chars": chat.sentence_soft_max_chars,
        "sentence_hard_max_chars": chat.sentence_hard_max_chars,
        "first_sentence_soft_max_chars": chat.first_sentence_soft_max_chars,
        "fallback_line": settings.llm.fallback_line or None,
        "remember": settings.memory.enabled,
        "priority": PriorityPolicy(**settings.priority.model_dump()),
    }
    values.update(overrides)
    return ConversationOptions(**values)


def build_viewer_memory(settings: Settings) -> ViewerMemory | None:
    """The viewer memory ``[memory]`` describes (not yet opened), or None when it is off."""
    config = settings.memory
    if not config.enabled:
        return None
    return ViewerMemory(
        config.path, budget_chars=config.budget_chars, max_viewers=config.max_viewers
    )


def build_conversation(
    settings: Settings,
    secrets: Secrets,
    *,
    persona: Persona,
    queue: JobQueue,
    sinks: Sequence[ClipSink],
    llm: LLM | None,
    memory: ViewerMemory | None,
    platform: str | None = None,
    channel: str | None = None,
    reply_layers: Sequence[ModerationLayer] = (),
    **options: Any,
) -> Conversation:
    """The conversation pipeline as bot.toml configures it for the place it answers
    (``platform`` and ``channel``: their ``[[safety.channels]]``; ``reply_layers``: more
    checks on each sentence); ``options`` override ``[chat]``."""
    return Conversation(
        persona=persona,
        queue=queue,
        chat_filter=ChatFilter(filter_rules(settings)),
        safety=build_safety(
            settings,
            secrets,
            persona,
            platform=platform,
            channel=channel,
            reply_layers=reply_layers,
        ),
        sinks=sinks,
        llm=llm,
        memory=memory,
        options=conversation_options(settings, **options),
    )


# -- the platform side ----------------------------------------------------------------------


def routes_from_settings(settings: Settings, *, persona: str | None = None) -> list[Route]:
    """``[[routes]]`` as the router takes them; routes naming no persona get ``persona`` (the
    ``-p`` flag) or ``[persona] default``."""
    fallback = persona or settings.persona.default
    return [
        Route(
            platform=route.platform,
            channel=route.channel,
            guild=route.guild,
            direct=route.direct,
            voice=route.voice,
            persona=route.persona or fallback,
            language=route.language or (settings.persona.language if not route.persona else None),
            stage=route.stage,
            per=route.per,
        )
        for route in settings.routes
    ]


def build_console_adapter(settings: Settings, secrets: Secrets) -> ChatAdapter:
    """The terminal chat ``[console]`` describes."""
    del secrets
    from bots.console import ConsoleAdapter

    return ConsoleAdapter(user=settings.console.user)


def build_discord_adapter(
    settings: Settings, secrets: Secrets, *, features: Sequence[DiscordFeature] = ()
) -> ChatAdapter:
    """The Discord adapter as ``[discord]`` configures it, with DISCORD_TOKEN (not connected).

    ``features`` (voice) plug into its client. Raises :class:`AdapterUnavailable` when the
    token is missing or discord.py is not installed, naming the fix.
    """
    from bots.base import AdapterUnavailable

    token = secrets.discord_token.get_secret_value() if secrets.discord_token else ""
    if not token.strip():
        raise AdapterUnavailable(
            "Discord is enabled but DISCORD_TOKEN is not set: put the bot's token in .env "
            '(README: "Discord"), or set [discord] enabled = false'
        )
    from bots.discord.adapter import MIB, DiscordAdapter, DiscordOptions
    from bots.discord.commands import PersonaChoice

    config = settings.discord
    choices = tuple(
        PersonaChoice(
            id=persona.id,
            label=f"{persona.name} ({persona.id})",
            languages=tuple(persona.spec.languages or [persona.spec.language]),
        )
        for persona in list_personas(list(settings.persona.dirs))
    )
    options = DiscordOptions(
        guilds=tuple(int(guild) for guild in config.guilds),
        sync_commands=config.sync_commands,
        mentions=config.mentions,
        replies=config.replies,
        direct_messages=config.direct_messages,
        clips=config.clips,
        max_clip_bytes=int(config.max_clip_mb * MIB),
        clip_crf=settings.render.crf,
        clip_preset=settings.render.preset,
        personas=choices,
    )
    transcribe = None
    if config.voice and not features:
        try:
            voice = build_voice_feature(settings, secrets)
        except MissingDependencyError as err:
            log.warning(
                "Discord runs text only, without voice channels and voice messages: %s", err
            )
        else:
            features, transcribe = (voice,), voice.transcribe_message
    return DiscordAdapter(token=token, options=options, features=features, transcribe=transcribe)


def twitch_client_id(settings: Settings, env_file: Path | None = Path(".env")) -> str:
    """The Twitch application's client id (not a secret): TWITCH_CLIENT_ID from the
    environment, then ``.env``, then ``[twitch] client_id``; "" when none is set."""
    import os

    from dotenv import dotenv_values

    value = os.environ.get("TWITCH_CLIENT_ID")
    if not value and env_file is not None and env_file.is_file():
        value = dotenv_values(env_file).get("TWITCH_CLIENT_ID")
    return (value or settings.twitch.client_id).strip()


def build_twitch_adapter(
    settings: Settings, secrets: Secrets, *, token_path: Path | None = None
) -> ChatAdapter:
    """The Twitch adapter ``[twitch]`` describes (not started).

    Raises :class:`AdapterUnavailable` naming exactly what is missing: twitchio (the pip line),
    TWITCH_CLIENT_ID, TWITCH_CLIENT_SECRET, or the token ``lipcast twitch auth`` stores.
    """
    from bots import ADAPTERS
    from bots.base import AdapterUnavailable

    spec = ADAPTERS["twitch"]
    if spec.missing() is not None:
        raise AdapterUnavailable(
            str(MissingDependencyError("the Twitch adapter", package="twitchio", extra="twitch"))
        )
    client_id = twitch_client_id(settings)
    if not client_id:
        raise AdapterUnavailable(
            "Twitch: TWITCH_CLIENT_ID is not set: put your application's client id in .env "
            "or in bot.toml [twitch] client_id (README: Twitch)"
        )
    secret = secrets.twitch_client_secret
    if secret is None or not secret.get_secret_value():
        raise AdapterUnavailable(
            "Twitch: TWITCH_CLIENT_SECRET is not set: put your application's client secret "
            "in .env (README: Twitch)"
        )
    from bots.twitch.adapter import TwitchAdapter
    from bots.twitch.auth import TokenStore

    try:
        tokens = TokenStore.load(token_path)
    except ConfigError as err:
        raise AdapterUnavailable(str(err)) from err
    return TwitchAdapter(
        settings=settings.twitch,
        client_id=client_id,
        client_secret=secret.get_secret_value(),
        tokens=tokens,
    )


AdapterBuilder = Callable[["Settings", "Secrets"], "ChatAdapter"]

# How each adapter in bots.ADAPTERS is built from its bot.toml section and the secrets.
ADAPTER_BUILDERS: dict[str, AdapterBuilder] = {
    "console": build_console_adapter,
    "discord": build_discord_adapter,
    "twitch": build_twitch_adapter,
}


def enabled_adapters(settings: Settings) -> list[str]:
    """The adapters whose bot.toml section says ``enabled = true``, in table order."""
    from bots import ADAPTERS

    return [name for name in ADAPTERS if getattr(settings, name).enabled]


def build_adapter(name: str, settings: Settings, secrets: Secrets) -> ChatAdapter:
    """The adapter ``name`` as its section configures it. Raises
    :class:`~pipeline.errors.MissingDependencyError` with the ``pip install`` line when its
    package is missing, and ``bots.base.AdapterUnavailable`` when it cannot start as
    configured (a missing token: the message names the variable)."""
    from bots import ADAPTERS

    spec = ADAPTERS.get(name)
    builder = ADAPTER_BUILDERS.get(name)
    if spec is None or builder is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"unknown chat adapter {name!r}: expected one of {known}")
    if spec.missing() is not None:
        raise MissingDependencyError(f"the {name} adapter", package=spec.package, extra=spec.extra)
    return builder(settings, secrets)
