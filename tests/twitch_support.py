"""Twitch for tests: EventSub payloads as Twitch documents them, and a local server that plays
Twitch's id, Helix and EventSub-websocket endpoints on 127.0.0.1.

twitchio builds its URLs from ``twitchio.http.Route.BASE`` / ``Route.ID_BASE`` and its websocket
URL from ``twitchio.eventsub.websockets.WSS``; :func:`point_twitchio_at` sets them to the fake,
so the adapter runs on twitchio's own HTTP client, websocket client and parsers, end to end.

The payload builders include every key Twitch documents for ``channel.chat.message`` and
``channel.channel_points_custom_reward_redemption.add``, nullable ones as ``null``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

CLIENT_ID = "fakeclientid0123456789abcdefgh"
CLIENT_SECRET = "fake-client-secret-0123456789"
APP_TOKEN = "app-token-0123456789abcdefghijk"
BOT_ID, BOT_LOGIN = "2914196", "persona_bot"
CHANNEL_ID, CHANNEL_LOGIN = "1971641", "streamer"
BOT_SCOPES = ["user:read:chat", "user:write:chat", "user:bot"]

_ids = itertools.count(1)


def badge(set_id: str, badge_id: str = "1", info: str = "") -> dict[str, str]:
    return {"set_id": set_id, "id": badge_id, "info": info}


def text_fragment(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}


def emote_fragment(name: str, emote_id: str = "304456832") -> dict[str, Any]:
    emote = {"id": emote_id, "emote_set_id": "0", "owner_id": "0", "format": ["static"]}
    return {"type": "emote", "text": name, "cheermote": None, "emote": emote, "mention": None}


def cheermote_fragment(bits: int, prefix: str = "Cheer") -> dict[str, Any]:
    cheermote = {"prefix": prefix.lower(), "bits": bits, "tier": 100 if bits >= 100 else 1}
    return {
        "type": "cheermote",
        "text": f"{prefix}{bits}",
        "cheermote": cheermote,
        "emote": None,
        "mention": None,
    }


def mention_fragment(user_id: str = BOT_ID, login: str = BOT_LOGIN) -> dict[str, Any]:
    mention = {"user_id": user_id, "user_login": login, "user_name": login}
    return {
        "type": "mention",
        "text": f"@{login}",
        "cheermote": None,
        "emote": None,
        "mention": mention,
    }


def chat_message_event(
    text: str | None = None,
    *,
    fragments: list[dict[str, Any]] | None = None,
    user_id: str = "4145994",
    login: str = "viewer32",
    name: str | None = None,
    badges: list[dict[str, str]] | None = None,
    bits: int | None = None,
    reply_to: tuple[str, str, str] | None = None,  # (parent message id, user id, login)
    reward_id: str | None = None,
    message_type: str = "text",
    source: tuple[str, str] | None = None,  # shared chat: (broadcaster id, login)
    message_id: str | None = None,
    channel: tuple[str, str] = (CHANNEL_ID, CHANNEL_LOGIN),
) -> dict[str, Any]:
    """The ``event`` of a ``channel.chat.message`` notification, every documented key set."""
    if fragments is None:
        fragments = [text_fragment(text or "")]
    if text is None:
        text = "".join(fragment["text"] for fragment in fragments)
    reply = None
    if reply_to is not None:
        parent_id, parent_user, parent_login = reply_to
        reply = {
            "parent_message_id": parent_id,
            "parent_message_body": "an earlier message",
            "parent_user_id": parent_user,
            "parent_user_name": parent_login,
            "parent_user_login": parent_login,
            "thread_message_id": parent_id,
            "thread_user_id": parent_user,
            "thread_user_name": parent_login,
            "thread_user_login": parent_login,
        }
    return {
        "broadcaster_user_id": channel[0],
        "broadcaster_user_login": channel[1],
        "broadcaster_user_name": channel[1].capitalize(),
        "chatter_user_id": user_id,
        "chatter_user_login": login,
        "chatter_user_name": name or login,
        "message_id": message_id or str(uuid.uuid4()),
        "message": {"text": text, "fragments": fragments},
        "color": "#00FF7F",
        "badges": badges or [],
        "message_type": message_type,
        "cheer": {"bits": bits} if bits is not None else None,
        "reply": reply,
        "channel_points_custom_reward_id": reward_id,
        "channel_points_animation_id": None,
        "source_broadcaster_user_id": source[0] if source else None,
        "source_broadcaster_user_login": source[1] if source else None,
        "source_broadcaster_user_name": source[1] if source else None,
        "source_message_id": str(uuid.uuid4()) if source else None,
        "source_badges": [] if source else None,
        "is_source_only": False if source else None,
    }


def redemption_event(
    title: str,
    user_input: str,
    *,
    user_id: str = "9001",
    login: str = "cooler_user",
    reward_id: str = "92af127c-7326-4483-a52b-b0da0be61c01",
    channel: tuple[str, str] = (CHANNEL_ID, CHANNEL_LOGIN),
) -> dict[str, Any]:
    """The ``event`` of a ``channel.channel_points_custom_reward_redemption.add``."""
    return {
        "id": str(uuid.uuid4()),
        "broadcaster_user_id": channel[0],
        "broadcaster_user_login": channel[1],
        "broadcaster_user_name": channel[1].capitalize(),
        "user_id": user_id,
        "user_login": login,
        "user_name": login.capitalize(),
        "user_input": user_input,
        "status": "unfulfilled",
        "reward": {"id": reward_id, "title": title, "cost": 100, "prompt": "Ask the persona"},
        "redeemed_at": "2026-12-02T17:16:03.17106713Z",
    }


SUBSCRIPTION_VERSIONS = {
    "channel.chat.message": "1",
    "channel.channel_points_custom_reward_redemption.add": "1",
}


def notification(
    event_type: str, event: dict[str, Any], condition: dict[str, str] | None = None
) -> dict[str, Any]:
    """A websocket ``notification`` message around ``event``, as Twitch sends it."""
    version = SUBSCRIPTION_VERSIONS.get(event_type, "1")
    return {
        "metadata": {
            "message_id": str(uuid.uuid4()),
            "message_type": "notification",
            "message_timestamp": "2026-12-02T18:11:47.492253549Z",
            "subscription_type": event_type,
            "subscription_version": version,
        },
        "payload": {
            "subscription": {
                "id": str(uuid.uuid4()),
                "status": "enabled",
                "type": event_type,
                "version": version,
                "cost": 0,
                "condition": condition or {"broadcaster_user_id": event["broadcaster_user_id"]},
                "transport": {
                    "method": "websocket",
                    "session_id": "AgoQHR3s6Mb4T8GFB1l3DlPfiRIGY2VsbC1h",
                },
                "created_at": "2026-12-02T18:11:47.492253549Z",
            },
            "event": event,
        },
    }


def parse(event_type: str, event: dict[str, Any]) -> Any:
    """The event as twitchio's own parser builds it (no HTTP client: nothing is sent)."""
    from twitchio.models.eventsub_ import create_event_instance

    return create_event_instance(event_type, notification(event_type, event), http=None)


# -- the fake Twitch ------------------------------------------------------------------------


@dataclass(kw_only=True)
class Account:
    user_id: str
    login: str
    token: str
    refresh: str
    scopes: list[str]
    expires_in: int = 14_000


@dataclass
class FakeTwitch:
    """id.twitch.tv, api.twitch.tv/helix and the EventSub websocket, on 127.0.0.1."""

    accounts: dict[str, Account] = field(default_factory=dict)  # by token
    users: dict[str, str] = field(
        default_factory=lambda: {
            CHANNEL_LOGIN: CHANNEL_ID,
            BOT_LOGIN: BOT_ID,
            "viewer32": "4145994",
        }
    )
    automod_blocked: tuple[str, ...] = ("blorp",)
    automod_status: int = 200  # answer Check AutoMod Status with this (429: rate limited)
    refused_refresh: bool = False
    chat_posts: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    redemption_updates: list[dict[str, Any]] = field(default_factory=list)
    automod_checks: list[str] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    code_accounts: dict[str, Account] = field(default_factory=dict)  # OAuth code -> account
    base_url: str = ""
    _sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)  # by session
    _runner: web.AppRunner | None = None
    posted: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request

    def add_account(self, account: Account) -> Account:
        self.accounts[account.token] = account
        self.users.setdefault(account.login, account.user_id)
        return account

    async def start(self) -> str:
        app = web.Application(middlewares=[self._note_change])
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_get("/helix/users", self._users)
        app.router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        app.router.add_post("/helix/chat/messages", self._chat)
        app.router.add_patch("/helix/channel_points/custom_rewards/redemptions", self._redemption)
        app.router.add_post("/helix/moderation/enforcements/status", self._automod)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        for socket in list(self._sockets.values()):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- pushing events ------------------------------------------------------------------

    async def notify(self, event_type: str, event: dict[str, Any]) -> None:
        """Send ``event`` on each websocket whose session subscribed to ``event_type``."""
        message = json.dumps(notification(event_type, event))
        sessions = {
            sub["transport"]["session_id"]
            for sub in self.subscriptions
            if sub["type"] == event_type
        }
        for session in sessions:
            socket = self._sockets.get(session)
            if socket is not None and not socket.closed:
                await socket.send_str(message)

    async def revoke(self, event_type: str = "channel.chat.message") -> None:
        sub = notification(event_type, chat_message_event("x"))["payload"]["subscription"]
        sub["status"] = "authorization_revoked"
        message = {
            "metadata": {
                "message_id": str(uuid.uuid4()),
                "message_type": "revocation",
                "message_timestamp": "2026-12-02T18:11:47Z",
                "subscription_type": event_type,
                "subscription_version": "1",
            },
            "payload": {"subscription": sub},
        }
        for socket in list(self._sockets.values()):
            await socket.send_str(json.dumps(message))

    async def wait_until(self, done: Callable[[], bool], within_s: float = 10.0) -> None:
        """Wait until ``done()`` holds, checking after each request the fake answers."""
        async with asyncio.timeout(within_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def wait_posts(self, count: int, within_s: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(within_s):
            while len(self.chat_posts) < count:
                self.posted.clear()
                await self.posted.wait()
        return self.chat_posts

    # -- handlers --------------------------------------------------------------------------

    @web.middleware
    async def _note_change(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self.changed.set()

    def _bearer(self, request: web.Request) -> Account | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").removeprefix("OAuth ")
        return self.accounts.get(token)

    async def _token(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_secret") != CLIENT_SECRET or query.get("client_id") != CLIENT_ID:
            return web.json_response(
                {"status": 403, "message": "invalid client secret"}, status=403
            )
        grant = query.get("grant_type")
        if grant == "client_credentials":
            return web.json_response(
                {"access_token": APP_TOKEN, "expires_in": 5_000_000, "token_type": "bearer"}
            )
        if grant == "authorization_code":
            account = self.code_accounts.get(query.get("code", ""))
            if account is None:
                return web.json_response(
                    {"status": 400, "message": "Invalid authorization code"}, status=400
                )
            self.add_account(account)
            return web.json_response(
                {
                    "access_token": account.token,
                    "refresh_token": account.refresh,
                    "expires_in": account.expires_in,
                    "scope": account.scopes,
                    "token_type": "bearer",
                }
            )
        if grant == "refresh_token":
            refresh = query.get("refresh_token", "")
            old = next((a for a in self.accounts.values() if a.refresh == refresh), None)
            if old is None or self.refused_refresh:
                return web.json_response(
                    {"status": 400, "message": "Invalid refresh token"}, status=400
                )
            new = Account(
                user_id=old.user_id,
                login=old.login,
                token=f"{old.token}-r{next(_ids)}",
                refresh=old.refresh,
                scopes=old.scopes,
            )
            self.add_account(new)
            return web.json_response(
                {
                    "access_token": new.token,
                    "refresh_token": new.refresh,
                    "expires_in": new.expires_in,
                    "scope": new.scopes,
                    "token_type": "bearer",
                }
            )
        return web.json_response({"status": 400, "message": "unsupported grant"}, status=400)

    async def _validate(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("OAuth ").removeprefix("Bearer ")
        if token == APP_TOKEN:
            return web.json_response(
                {"client_id": CLIENT_ID, "scopes": [], "expires_in": 5_000_000}
            )
        account = self.accounts.get(token)
        if account is None or account.expires_in <= 0:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        return web.json_response(
            {
                "client_id": CLIENT_ID,
                "login": account.login,
                "scopes": account.scopes,
                "user_id": account.user_id,
                "expires_in": account.expires_in,
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        self.authorize_requests.append(dict(request.query))
        return web.Response(text="the Twitch sign-in page")

    async def _users(self, request: web.Request) -> web.Response:
        logins = request.query.getall("login", [])
        ids = request.query.getall("id", [])
        found = [
            (login, user_id)
            for login, user_id in self.users.items()
            if login in logins or user_id in ids
        ]
        return web.json_response(
            {
                "data": [
                    {
                        "id": user_id,
                        "login": login,
                        "display_name": login.capitalize(),
                        "type": "",
                        "broadcaster_type": "",
                        "description": "",
                        "profile_image_url": "https://example.invalid/p.png",
                        "offline_image_url": "",
                        "view_count": 0,
                        "created_at": "2016-12-14T20:32:28Z",
                    }
                    for login, user_id in found
                ]
            }
        )

    async def _subscribe(self, request: web.Request) -> web.Response:
        account = self._bearer(request)
        if account is None:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        body = await request.json()
        body["token_user"] = account.user_id
        self.subscriptions.append(body)
        self.subscribed.set()
        sub = {
            "id": str(uuid.uuid4()),
            "status": "enabled",
            "type": body["type"],
            "version": body["version"],
            "condition": body["condition"],
            "created_at": "2026-12-02T18:11:47Z",
            "transport": body["transport"],
            "cost": 0,
        }
        return web.json_response(
            {
                "data": [sub],
                "total": len(self.subscriptions),
                "total_cost": 0,
                "max_total_cost": 10,
            },
            status=202,
        )

    async def _chat(self, request: web.Request) -> web.Response:
        account = self._bearer(request)
        if account is None:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        body = await request.json()
        body["token_user"] = account.user_id
        self.chat_posts.append(body)
        self.posted.set()
        return web.json_response(
            {"data": [{"message_id": str(uuid.uuid4()), "is_sent": True, "drop_reason": None}]}
        )

    async def _redemption(self, request: web.Request) -> web.Response:
        account = self._bearer(request)
        body = await request.json()
        update = {**request.query, **body, "token_user": account.user_id if account else ""}
        self.redemption_updates.append(update)
        return web.json_response(
            {
                "data": [
                    {
                        "broadcaster_id": request.query["broadcaster_id"],
                        "broadcaster_login": CHANNEL_LOGIN,
                        "broadcaster_name": CHANNEL_LOGIN,
                        "id": request.query["id"],
                        "user_id": "9001",
                        "user_login": "cooler_user",
                        "user_name": "Cooler_User",
                        "user_input": "",
                        "status": body["status"],
                        "redeemed_at": "2026-12-02T17:16:03Z",
                        "reward": {
                            "id": request.query["reward_id"],
                            "title": "t",
                            "prompt": "",
                            "cost": 100,
                        },
                    }
                ]
            }
        )

    async def _automod(self, request: web.Request) -> web.Response:
        account = self._bearer(request)
        if account is None or "moderation:read" not in account.scopes:
            return web.json_response(
                {"status": 401, "message": "Missing scope: moderation:read"}, status=401
            )
        if self.automod_status != 200:
            return web.json_response(
                {"status": self.automod_status, "message": "Too Many Requests"},
                status=self.automod_status,
            )
        body = await request.json()
        results = []
        for message in body["data"]:
            self.automod_checks.append(message["msg_text"])
            blocked = any(word in message["msg_text"].lower() for word in self.automod_blocked)
            results.append({"msg_id": message["msg_id"], "is_permitted": not blocked})
        return web.json_response({"data": results})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        session = f"session-{next(_ids)}"
        self._sockets[session] = socket
        welcome = {
            "metadata": {
                "message_id": str(uuid.uuid4()),
                "message_type": "session_welcome",
                "message_timestamp": "2026-12-02T18:11:47Z",
            },
            "payload": {
                "session": {
                    "id": session,
                    "status": "connected",
                    "connected_at": "2026-12-02T18:11:47Z",
                    "keepalive_timeout_seconds": 30,
                    "reconnect_url": None,
                    "recovery_url": None,
                }
            },
        }
        await socket.send_str(json.dumps(welcome))
        async for message in socket:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        del self._sockets[session]
        return socket


def point_twitchio_at(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """Make twitchio talk to the fake at ``base_url`` instead of Twitch."""
    import twitchio.eventsub.websockets
    import twitchio.http

    monkeypatch.setattr(twitchio.http.Route, "BASE", f"{base_url}/helix/")
    monkeypatch.setattr(twitchio.http.Route, "ID_BASE", f"{base_url}/")
    monkeypatch.setattr(twitchio.eventsub.websockets, "WSS", base_url.replace("http", "ws") + "/ws")
