"""Twitch credentials: the scopes lipcast asks for and the token file it keeps them in.

``lipcast twitch auth`` receives a user token through twitchio's OAuth web adapter and stores it
here; the adapter reads it back at start-up. The file lives in the user's config folder
(``platformdirs``), never in the checkout, and only its owner may read it (0600). Its repr, and
every message about it, shows logins and scopes, never a token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

REDIRECT_HOST = "localhost"
REDIRECT_PORT = 4343
REDIRECT_PATH = "/oauth/callback"
TOKEN_FILE_NAME = "twitch-tokens.json"

# What the bot account needs to read and write chat through EventSub.
BOT_SCOPES: tuple[str, ...] = ("user:read:chat", "user:write:chat", "user:bot")
# What the channel's owner grants when the bot is a separate account.
CHANNEL_BOT_SCOPE = "channel:bot"
REDEMPTION_READ_SCOPE = "channel:read:redemptions"
REDEMPTION_MANAGE_SCOPE = "channel:manage:redemptions"  # fulfil and refund
AUTOMOD_SCOPE = "moderation:read"  # Check AutoMod Status, with the broadcaster's token


def redirect_url(port: int = REDIRECT_PORT) -> str:
    """The OAuth redirect URL to register with the Twitch application."""
    return f"http://{REDIRECT_HOST}:{port}{REDIRECT_PATH}"


def broadcaster_scopes(*, rewards: bool, manage_rewards: bool, automod: bool) -> list[str]:
    """What the channel owner's token needs beyond chat, for the features that are on."""
    scopes = [CHANNEL_BOT_SCOPE]
    if rewards:
        scopes.append(REDEMPTION_MANAGE_SCOPE if manage_rewards else REDEMPTION_READ_SCOPE)
    if automod:
        scopes.append(AUTOMOD_SCOPE)
    return scopes


def scopes_for(
    role: str, *, rewards: bool, manage_rewards: bool, automod: bool, same_account: bool
) -> list[str]:
    """The scopes ``lipcast twitch auth`` asks for: ``role`` "bot" or "broadcaster";
    ``same_account`` when the bot chats as the channel's owner (then one token holds all)."""
    extra = broadcaster_scopes(rewards=rewards, manage_rewards=manage_rewards, automod=automod)
    if role == "broadcaster":
        return extra
    return [*BOT_SCOPES, *(extra if same_account else [])]


def default_token_path() -> Path:
    """Where the tokens live: ``LIPCAST_TWITCH_TOKENS`` if set, else the user config folder."""
    override = os.environ.get("LIPCAST_TWITCH_TOKENS")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("lipcast")) / TOKEN_FILE_NAME


@dataclass(kw_only=True)
class StoredToken:
    """One authorised Twitch account."""

    user_id: str
    login: str
    token: str = field(repr=False)
    refresh: str = field(repr=False)
    scopes: list[str] = field(default_factory=list)
    role: str = "bot"  # "bot" or "broadcaster": which `lipcast twitch auth` stored it

    def missing(self, needed: Iterable[str]) -> list[str]:
        """The scopes in ``needed`` this token was not granted."""
        return [scope for scope in needed if scope not in self.scopes]


@dataclass(kw_only=True)
class TokenStore:
    """The token file: accounts by user id. Load, change, save; nothing is cached elsewhere."""

    path: Path
    tokens: dict[str, StoredToken] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> TokenStore:
        """The stored tokens (none when the file does not exist yet)."""
        path = path or default_token_path()
        store = cls(path=path)
        if not path.exists():
            return store
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for user_id, entry in raw.get("tokens", {}).items():
                store.tokens[str(user_id)] = StoredToken(
                    user_id=str(user_id),
                    login=str(entry["login"]),
                    token=str(entry["token"]),
                    refresh=str(entry["refresh"]),
                    scopes=[str(scope) for scope in entry.get("scopes", [])],
                    role=str(entry.get("role", "bot")),
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                f"{path}: the Twitch token file cannot be read ({type(err).__name__}); delete it "
                "and run `lipcast twitch auth` again"
            ) from err
        return store

    def save(self) -> None:
        """Write the file with owner-only permissions (created 0600, never world-readable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "tokens": {
                user_id: {
                    "login": entry.login,
                    "token": entry.token,
                    "refresh": entry.refresh,
                    "scopes": entry.scopes,
                    "role": entry.role,
                }
                for user_id, entry in self.tokens.items()
            }
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
            temporary.chmod(0o600)
            temporary.replace(self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def put(self, entry: StoredToken) -> None:
        self.tokens[entry.user_id] = entry

    def by_login(self, login: str) -> StoredToken | None:
        login = login.lower()
        return next((t for t in self.tokens.values() if t.login.lower() == login), None)

    def bot(self, login: str = "") -> StoredToken | None:
        """The bot's token: the account named ``login``, else the last one stored as the bot."""
        if login:
            return self.by_login(login)
        bots = [t for t in self.tokens.values() if t.role == "bot"]
        return bots[-1] if bots else None

    def values(self) -> list[str]:
        """Every token and refresh token, for log redaction only."""
        return [value for t in self.tokens.values() for value in (t.token, t.refresh) if value]


@contextlib.contextmanager
def quiet_twitchio_notice() -> Iterator[None]:
    """Hide the notice twitchio logs on every client it builds without Starlette installed:
    lipcast uses twitchio's aiohttp adapter, so the notice only confuses."""
    logger = logging.getLogger("twitchio.client")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
