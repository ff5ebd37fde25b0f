"""``lipcast twitch auth``: authorise lipcast with Twitch and store the token for ``lipcast run``.

It checks the application's credentials (TWITCH_CLIENT_ID, TWITCH_CLIENT_SECRET), serves
twitchio's OAuth web adapter on localhost:4343, opens the authorisation page with the scopes the
enabled features need, receives the callback there and stores the token in the user's config
folder with owner-only permissions (never in the checkout, never printed).
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.parse
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bots.twitch.auth import (
    REDIRECT_PORT,
    StoredToken,
    TokenStore,
    default_token_path,
    quiet_twitchio_notice,
    redirect_url,
    scopes_for,
)
from lipcast.wiring import twitch_client_id
from pipeline.errors import ConfigError, LipcastError, MissingDependencyError

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Settings

HELP = "Twitch set-up: `lipcast twitch auth` authorises the bot and stores its token"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    auth = actions.add_parser(
        "auth",
        help="sign in with Twitch and store the token (run it once; again to change scopes)",
        description="Sign in with Twitch in your browser; the token is stored for lipcast run.",
    )
    auth.add_argument(
        "--broadcaster",
        action="store_true",
        help="sign in as the channel's owner (when the bot is a separate account): rewards, "
        "AutoMod",
    )
    auth.add_argument(
        "--port",
        type=int,
        default=REDIRECT_PORT,
        help=f"local port of the redirect URL (default {REDIRECT_PORT}; it must match the "
        "application's OAuth Redirect URL)",
    )
    auth.add_argument(
        "--no-browser", action="store_true", help="print the sign-in address, do not open it"
    )
    auth.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the sign-in"
    )
    auth.add_argument(
        "--tokens", type=Path, default=None, help="token file (default: your user config folder)"
    )


def registration_help(port: int = REDIRECT_PORT) -> str:
    """What a streamer registers once at dev.twitch.tv before ``lipcast twitch auth``."""
    return (
        "Register a Twitch application once:\n"
        "  1. open https://dev.twitch.tv/console/apps and choose 'Register Your Application'\n"
        f"  2. OAuth Redirect URLs: {redirect_url(port)}\n"
        "     Category: Chat Bot; Client Type: Confidential\n"
        "  3. copy the Client ID and a New Secret into the .env file next to bot.toml:\n"
        "       TWITCH_CLIENT_ID=...\n"
        "       TWITCH_CLIENT_SECRET=..."
    )


def wanted_scopes(settings: Settings, *, broadcaster: bool) -> list[str]:
    """The scopes to ask for, from what ``[twitch]`` turns on."""
    twitch = settings.twitch
    channels = twitch.channels
    rewards = any(twitch.triggers_for(channel).rewards for channel in channels) or (
        not channels and bool(twitch.triggers.rewards)
    )
    # The bot chatting as the channel's owner (the usual start) holds every scope itself.
    same_account = not twitch.bot or twitch.bot in channels
    return scopes_for(
        "broadcaster" if broadcaster else "bot",
        rewards=rewards,
        manage_rewards=twitch.manage_rewards,
        automod=twitch.automod_check,
        same_account=same_account,
    )


def run(args: argparse.Namespace, context: Context) -> int:
    settings, secrets = context.settings, context.secrets
    client_id = twitch_client_id(settings)
    secret = secrets.twitch_client_secret
    missing = [
        name
        for name, value in (
            ("TWITCH_CLIENT_ID", client_id),
            ("TWITCH_CLIENT_SECRET", secret.get_secret_value() if secret else ""),
        )
        if not value
    ]
    if missing:
        print(registration_help(args.port))
        raise ConfigError(f"{' and '.join(missing)} not set: see the steps above (README: Twitch)")
    assert secret is not None
    scopes = wanted_scopes(settings, broadcaster=args.broadcaster)
    path = args.tokens or default_token_path()
    role = "broadcaster" if args.broadcaster else "bot"
    entry = asyncio.run(
        authorise(
            client_id=client_id,
            client_secret=secret.get_secret_value(),
            scopes=scopes,
            port=args.port,
            open_browser=not args.no_browser,
            timeout_s=args.timeout,
            role=role,
        )
    )
    store = TokenStore.load(path)
    known = store.tokens.get(entry.user_id)
    if role == "broadcaster" and known is not None and known.role == "bot":
        raise LipcastError(
            f"you signed in as {entry.login}, the bot account: its token was kept. Sign in "
            f"as the channel's owner, or, to chat as {entry.login} itself, run `lipcast "
            "twitch auth` without --broadcaster"
        )
    if role == "bot":  # one bot: a new sign-in replaces the last one's role
        for other in store.tokens.values():
            if other.role == "bot" and other.user_id != entry.user_id:
                other.role = "broadcaster"
    store.put(entry)
    try:
        store.save()
    except OSError as err:
        raise LipcastError(f"{path}: the token cannot be stored ({err.strerror or err})") from err
    print(f"signed in as {entry.login} ({role}); scopes: {' '.join(entry.scopes)}")
    print(f"token stored in {path} (readable only by you)")
    if role == "bot" and settings.twitch.bot and settings.twitch.bot != entry.login.lower():
        print(
            f"note: bot.toml [twitch] bot = {settings.twitch.bot!r}, but you signed in as "
            f"{entry.login}: set bot = {entry.login.lower()!r} or sign in as {settings.twitch.bot}"
        )
    return 0


async def authorise(
    *,
    client_id: str,
    client_secret: str,
    scopes: list[str],
    port: int,
    open_browser: bool,
    timeout_s: float,
    role: str,
) -> StoredToken:
    """Serve twitchio's OAuth adapter on localhost:``port`` and wait for one sign-in."""
    try:
        import twitchio
        from twitchio.web import AiohttpAdapter
    except ImportError:
        raise MissingDependencyError(
            "lipcast twitch auth", package="twitchio", extra="twitch"
        ) from None

    signed_in: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    class AuthClient(twitchio.Client):
        async def event_oauth_authorized(self, payload: Any) -> None:
            if not signed_in.done():
                signed_in.set_result(payload)

    web: AiohttpAdapter[Any] = AiohttpAdapter(host="localhost", port=port)
    with quiet_twitchio_notice():
        client = AuthClient(client_id=client_id, client_secret=client_secret, adapter=web)
    try:
        try:
            await web.run()
            await asyncio.sleep(0)  # let the site bind before the browser calls
        except OSError as err:
            raise LipcastError(
                f"localhost:{port} cannot be served ({err.strerror or err})"
            ) from err
        query = urllib.parse.urlencode({"scopes": " ".join(scopes), "force_verify": "true"})
        start = f"http://localhost:{port}/oauth?{query}"
        print(f"Sign in with Twitch as the {role} account:\n  {start}")
        print(f"(the Twitch application's OAuth Redirect URL must be {redirect_url(port)})")
        print(f"waiting up to {timeout_s / 60:.0f} min for the sign-in; Ctrl-C cancels", flush=True)
        if open_browser:
            webbrowser.open(start)
        try:
            payload = await asyncio.wait_for(signed_in, timeout_s)
        except TimeoutError:
            raise LipcastError(
                f"no sign-in within {timeout_s:.0f} s; run `lipcast twitch auth` again"
            ) from None
    finally:
        await client.close(save_tokens=False)
    granted = payload.scope if isinstance(payload.scope, list) else payload.scope.split()
    if not payload.user_id or not payload.user_login:
        raise LipcastError("Twitch returned a token without a user; sign in again")
    return StoredToken(
        user_id=str(payload.user_id),
        login=str(payload.user_login),
        token=payload.access_token,
        refresh=payload.refresh_token,
        scopes=[str(scope) for scope in granted],
        role=role,
    )
