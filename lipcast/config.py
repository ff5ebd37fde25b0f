"""bot.toml: loading, validation and the secrets that never live in it.

Every section is a strict model: an unknown key is an error (a typo must not pass silently),
and a bad value yields one message naming the file, the key, the value and the expected form.
Secrets (API keys, tokens, broker passwords) come only from the environment or a ``.env``
file; bot.toml refuses them.
"""

from __future__ import annotations

import os
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


class RenderSettings(_Section):
    renderer: Literal["sprite"] = "sprite"
    fps: int = Field(default=25, ge=10, le=60)
    size: int = Field(default=512, ge=128, le=1080)  # output width and height in pixels
    crf: int = Field(default=23, ge=0, le=51)  # H.264 quality: lower is better and larger
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"


class OutputSettings(_Section):
    dir: Path = Path("clips")  # where `lipcast run` writes finished clips


class LimitsSettings(_Section):
    max_text_chars: int = Field(default=2000, ge=10, le=20000)  # longest text `say` renders


class Settings(_Section):
    persona: PersonaSettings = PersonaSettings()
    tts: TTSSettings = TTSSettings()
    render: RenderSettings = RenderSettings()
    output: OutputSettings = OutputSettings()
    limits: LimitsSettings = LimitsSettings()

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


def _find_secret_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    hits = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            hits.extend(_find_secret_keys(value, path + "."))
        elif any(word in key.lower().replace("-", "_") for word in _SECRET_LOOKING_KEYS):
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
