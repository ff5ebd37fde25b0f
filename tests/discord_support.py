"""Discord for tests: a local HTTP server that plays Discord's REST API, and gateway payloads
shaped as Discord documents them.

discord.py itself is used unchanged: its ``HTTPClient`` talks to :class:`FakeDiscord` over
real sockets once ``discord.http.Route.BASE`` points there (the ``fake_discord`` fixture does
it), so every request, multipart uploads included, is built by discord.py and parsed here.
Gateway events go through discord.py's own parsers: seed a guild with
``state._add_guild_from_data(guild_payload())``, then ``state.parse_message_create(...)`` and
``state.parse_interaction_create(...)``, exactly as the gateway would hand them over.

The server enforces Discord's rules that matter here: 2,000 characters a message and the
upload limit (``upload_limit``, or the interaction's ``attachment_size_limit``), answering 400
and 413 with Discord's error bodies as Discord does; every request is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.utterance import Admission, Control, Utterance

BOT_ID = 900000000000000001
APP_ID = BOT_ID
GUILD_ID = 910000000000000001
CHANNEL_ID = 920000000000000001  # #general
DM_CHANNEL_ID = 920000000000000099
MOD_ROLE_ID = 930000000000000001
ADA_ID = 940000000000000001  # a viewer
MOD_ID = 940000000000000002  # a moderator
OWNER_ID = 940000000000000003
OTHER_BOT_ID = 940000000000000004
TOKEN = "MTIz.fake-discord-bot-token.for-tests-only"
MIB = 1024 * 1024

_snowflakes = itertools.count(950000000000000001)


def snowflake() -> int:
    return next(_snowflakes)


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name.lower(),
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


USERS = {
    ADA_ID: user_payload(ADA_ID, "Ada"),
    MOD_ID: user_payload(MOD_ID, "Mona"),
    OWNER_ID: user_payload(OWNER_ID, "Otto"),
    OTHER_BOT_ID: user_payload(OTHER_BOT_ID, "OtherBot", bot=True),
    BOT_ID: user_payload(BOT_ID, "Lipcast", bot=True),
}


def _member(user_id: int, *, with_user: bool) -> dict[str, Any]:
    member: dict[str, Any] = {
        "roles": [str(MOD_ROLE_ID)] if user_id == MOD_ID else [],
        "joined_at": "2026-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
    }
    if with_user:
        member["user"] = USERS[user_id]
    return member


EVERYONE_PERMISSIONS = 1 << 10 | 1 << 11 | 1 << 16 | 1 << 6  # view, send, history, reactions
MOD_PERMISSIONS = EVERYONE_PERMISSIONS | 1 << 13  # + manage messages


def guild_payload(*, premium_tier: int = 0) -> dict[str, Any]:
    """GUILD_CREATE for a server with #general, a moderator role and four members."""
    role = {
        "color": 0,
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }
    return {
        "id": str(GUILD_ID),
        "name": "Language Club",
        "owner_id": str(OWNER_ID),
        "premium_tier": premium_tier,
        "member_count": 4,
        "large": False,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [
            {
                **role,
                "id": str(GUILD_ID),
                "name": "@everyone",
                "position": 0,
                "permissions": str(EVERYONE_PERMISSIONS),
            },
            {
                **role,
                "id": str(MOD_ROLE_ID),
                "name": "Moderator",
                "position": 1,
                "permissions": str(MOD_PERMISSIONS),
            },
        ],
        "channels": [
            {
                "id": str(CHANNEL_ID),
                "type": 0,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "rate_limit_per_user": 0,
                "topic": None,
                "last_message_id": None,
            },
        ],
        "members": [_member(uid, with_user=True) for uid in (ADA_ID, MOD_ID, OWNER_ID, BOT_ID)],
        "threads": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "voice_states": [],
        "presences": [],
    }


def message_payload(
    content: str,
    *,
    author: int = ADA_ID,
    direct: bool = False,
    mentions: tuple[int, ...] = (),
    replying_to: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """MESSAGE_CREATE as the gateway sends it: in #general, or a DM when ``direct``."""
    payload: dict[str, Any] = {
        "id": str(message_id or snowflake()),
        "channel_id": str(DM_CHANNEL_ID if direct else CHANNEL_ID),
        "author": USERS[author],
        "content": content,
        "timestamp": "2026-12-02T17:00:00.000000+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [
            {**USERS[uid], **({} if direct else {"member": _member(uid, with_user=False)})}
            for uid in mentions
        ],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "components": [],
    }
    if not direct:
        payload["guild_id"] = str(GUILD_ID)
        payload["member"] = _member(author, with_user=False)
    if replying_to is not None:
        payload["type"] = 19
        payload["message_reference"] = {
            "type": 0,
            "message_id": replying_to["id"],
            "channel_id": replying_to["channel_id"],
            **({"guild_id": str(GUILD_ID)} if not direct else {}),
        }
        payload["referenced_message"] = replying_to
    return payload


def interaction_payload(
    name: str,
    options: dict[str, str] | None = None,
    *,
    user: int = ADA_ID,
    direct: bool = False,
    attachment_size_limit: int = 10 * MIB,
    command_id: int = 1,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a chat-input command, in #general or in a DM."""
    interaction_id = snowflake()
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(APP_ID),
        "type": 2,
        "data": {
            "id": str(command_id),
            "name": name,
            "type": 1,
            "options": [
                {"type": 3, "name": key, "value": value} for key, value in (options or {}).items()
            ],
        },
        "token": f"interaction-token-{interaction_id}",
        "version": 1,
        "app_permissions": str(MOD_PERMISSIONS | 1 << 15),
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)} if not direct else {"1": str(user)},
        "context": 1 if direct else 0,
        "attachment_size_limit": attachment_size_limit,
    }
    if direct:
        payload["channel_id"] = str(DM_CHANNEL_ID)
        payload["channel"] = {"id": str(DM_CHANNEL_ID), "type": 1, "recipients": [USERS[user]]}
        payload["user"] = USERS[user]
    else:
        permissions = MOD_PERMISSIONS if user == MOD_ID else EVERYONE_PERMISSIONS
        if user == OWNER_ID:
            permissions = (1 << 41) - 1
        payload["guild_id"] = str(GUILD_ID)
        payload["guild_locale"] = "en-US"
        payload["channel_id"] = str(CHANNEL_ID)
        payload["channel"] = {
            "id": str(CHANNEL_ID),
            "type": 0,
            "name": "general",
            "guild_id": str(GUILD_ID),
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "permissions": str(permissions),
        }
        payload["member"] = {**_member(user, with_user=True), "permissions": str(permissions)}
    return payload


# -- the REST server ------------------------------------------------------------------------


@dataclass(kw_only=True)
class Sent:
    """A message lipcast posted (in a channel, or as an interaction's follow-up)."""

    id: int
    where: str  # "channel:<id>" or "followup:<interaction token>"
    content: str
    reference: int | None  # the message it replies to
    files: list[tuple[str, bytes]]
    ephemeral: bool
    allowed_mentions: dict[str, Any] | None = None  # whom Discord may ping
    edits: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class FakeDiscord:
    """Discord's REST API, as much of it as lipcast uses."""

    upload_limit: int = 10 * MIB  # for channel messages
    application_flags: int = 1 << 18  # GATEWAY_MESSAGE_CONTENT
    valid_token: str = TOKEN
    sent: list[Sent] = field(default_factory=list)
    reactions: list[tuple[int, str]] = field(default_factory=list)
    typing: list[int] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # interaction responses
    deleted_originals: list[str] = field(default_factory=list)
    synced: dict[str, list[str]] = field(default_factory=dict)  # "global" or guild id -> names
    rejected: list[tuple[int, str]] = field(default_factory=list)  # status, what
    requests: list[str] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)  # interaction tokens Discord forgot
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    files: dict[str, bytes] = field(default_factory=dict)  # attachments it serves, by name
    _interaction_limits: dict[str, int] = field(default_factory=dict)

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="audio/ogg")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * MIB)
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get("/attachments/{name}", self._attachment)  # the CDN, for downloads
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._sync)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._sync)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._create_message)
        app.router.add_patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._edit)
        app.router.add_put(
            f"{api}/channels/{{channel}}/messages/{{message}}/reactions/{{emoji}}/@me",
            self._react,
        )
        app.router.add_post(f"{api}/channels/{{channel}}/typing", self._typing)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        app.router.add_patch(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._edit)
        app.router.add_delete(
            f"{api}/webhooks/{{app}}/{{token}}/messages/@original", self._delete_original
        )
        app.middlewares.append(self._record)
        return app

    def allow_interaction(self, payload: dict[str, Any]) -> None:
        """Let follow-ups on this interaction upload up to its ``attachment_size_limit``."""
        self._interaction_limits[payload["token"]] = payload["attachment_size_limit"]

    async def wait_for(self, condition: Callable[[], bool], within_s: float = 20.0) -> None:
        """Until ``condition()`` holds after a request (TimeoutError after ``within_s``)."""
        async with asyncio.timeout(within_s):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Interaction callbacks and follow-ups authenticate by their token in the path.
        # The gateway checks the token in IDENTIFY, not in the HTTP upgrade; the CDN's
        # attachment links are signed URLs, downloaded without the bot's token.
        by_token = request.path.startswith(
            ("/api/v10/webhooks/", "/api/v10/interactions/", "/gateway", "/attachments/")
        )
        if not by_token and request.headers.get("Authorization") != f"Bot {self.valid_token}":
            return _error(401, 0, "401: Unauthorized")
        self.requests.append(f"{request.method} {request.path}")
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            self.changed.set()

    async def _me(self, request: web.Request) -> web.Response:
        return _json({**USERS[BOT_ID], "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APP_ID),
                "name": "Lipcast",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": USERS[OWNER_ID],
                "verify_key": "00" * 32,
                "flags": self.application_flags,
                "team": None,
                "summary": "",
                "bot": USERS[BOT_ID],
            }
        )

    async def _sync(self, request: web.Request) -> web.Response:
        commands = await request.json()
        where = request.match_info.get("guild", "global")
        self.synced[where] = [command["name"] for command in commands]
        return _json(
            [
                {
                    **command,
                    "id": str(snowflake()),
                    "application_id": str(APP_ID),
                    "version": "1",
                    "default_member_permissions": command.get("default_member_permissions"),
                    **({"guild_id": where} if where != "global" else {}),
                }
                for command in commands
            ]
        )

    async def _message_body(
        self, request: web.Request
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = json.loads(str(form["payload_json"]))
            files = []
            for key, value in form.items():
                if key.startswith("files[") and isinstance(value, web.FileField):
                    files.append((value.filename, value.file.read()))
            return body, files
        return await request.json(), []

    async def _store(
        self,
        where: str,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
        channel_id: int,
        limit: int,
    ) -> web.Response:
        content = body.get("content") or ""
        if len(content) > 2000:
            self.rejected.append((400, "content over 2000 characters"))
            return _error(
                400, 50035, "Invalid Form Body: content: Must be 2000 or fewer in length."
            )
        if any(len(data) > limit for _, data in files):
            self.rejected.append((413, "file over the upload limit"))
            return _error(413, 40005, "Request entity too large")
        reference = body.get("message_reference") or {}
        sent = Sent(
            id=snowflake(),
            where=where,
            content=content,
            reference=int(reference["message_id"]) if reference.get("message_id") else None,
            files=files,
            ephemeral=bool((body.get("flags") or 0) & 64),
            allowed_mentions=body.get("allowed_mentions"),
        )
        self.sent.append(sent)
        return _json(self._message_json(sent, channel_id))

    def _message_json(self, sent: Sent, channel_id: int) -> dict[str, Any]:
        return {
            "id": str(sent.id),
            "channel_id": str(channel_id),
            "author": USERS[BOT_ID],
            "content": sent.edits[-1] if sent.edits else sent.content,
            "timestamp": "2026-12-02T17:00:01.000000+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(snowflake()),
                    "filename": name,
                    "size": len(data),
                    "url": f"https://cdn.invalid/{name}",
                    "proxy_url": f"https://cdn.invalid/{name}",
                }
                for name, data in sent.files
            ],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 64 if sent.ephemeral else 0,
            "components": [],
        }

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = int(request.match_info["channel"])
        body, files = await self._message_body(request)
        return await self._store(f"channel:{channel}", body, files, channel, self.upload_limit)

    async def _followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body, files = await self._message_body(request)
        limit = self._interaction_limits.get(token, 10 * MIB)
        return await self._store(f"followup:{token}", body, files, CHANNEL_ID, limit)

    async def _edit(self, request: web.Request) -> web.Response:
        message_id = int(request.match_info["message"])
        body, _ = await self._message_body(request)
        for sent in self.sent:
            if sent.id == message_id:
                content = body.get("content") or ""
                if len(content) > 2000:
                    self.rejected.append((400, "edit over 2000 characters"))
                    return _error(400, 50035, "Invalid Form Body")
                sent.edits.append(content)
                return _json(self._message_json(sent, CHANNEL_ID))
        return _error(404, 10008, "Unknown Message")

    async def _react(self, request: web.Request) -> web.Response:
        self.reactions.append((int(request.match_info["message"]), request.match_info["emoji"]))
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        self.typing.append(int(request.match_info["channel"]))
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.match_info["token"] in self.expired:
            return _error(404, 10062, "Unknown interaction")
        self.callbacks.append({"token": request.match_info["token"], **body})
        flags = (body.get("data") or {}).get("flags") or 0
        return _json(
            {
                "interaction": {
                    "id": request.match_info["id"],
                    "type": 2,
                    "response_message_loading": body["type"] == 5,
                    "response_message_ephemeral": bool(flags & 64),
                },
                "resource": {"type": body["type"]},
            }
        )

    async def _delete_original(self, request: web.Request) -> web.Response:
        self.deleted_originals.append(request.match_info["token"])
        return web.Response(status=204)


def _json(data: Any, *, status: int = 200) -> web.Response:
    # Discord's exact content type: discord.py decodes JSON only when it is exactly this.
    body = json.dumps(data).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)


@dataclass(kw_only=True)
class RecordingListener:
    """A listener that records what the adapter hands it, then passes it on to ``inner`` (the
    real conversation) or, without one, answers with ``admission``."""

    inner: Any = None
    admission: Admission = field(
        default_factory=lambda: Admission(accepted=True, reason="accepted")
    )
    heard: list[Utterance] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def hear(self, utterance: Utterance) -> Admission:
        self.heard.append(utterance)
        self.arrived.set()
        return await self.inner.hear(utterance) if self.inner else self.admission

    async def control(self, command: Control) -> Admission:
        self.controls.append(command)
        self.arrived.set()
        if self.inner:
            return await self.inner.control(command)  # type: ignore[no-any-return]
        return Admission(accepted=False, reason="command", detail=f"did {command.name}")


# -- the gateway ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class FakeGateway:
    """Discord's gateway on a local WebSocket: HELLO, IDENTIFY -> READY and GUILD_CREATE, then
    the events a test dispatches. ``close_code`` closes the socket after IDENTIFY instead (4014:
    a privileged intent the application may not use)."""

    close_code: int | None = None
    identify: dict[str, Any] | None = None
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    guild: dict[str, Any] = field(default_factory=guild_payload)  # its GUILD_CREATE
    # "127.0.0.1:PORT" of a voice server (tests/discord_voice_server.py): the bot's voice state
    # updates (op 4) are answered with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE pointing there
    voice_endpoint: str | None = None
    voice_updates: list[dict[str, Any]] = field(default_factory=list)  # op 4s, as sent
    _socket: web.WebSocketResponse | None = None
    _sequence: int = 0

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self._serve)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._socket is not None, "no client identified yet"
        self._sequence += 1
        await self._socket.send_json({"op": 0, "t": event, "s": self._sequence, "d": data})

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": 45000}, "s": None, "t": None})
        async for message in socket:
            data = json.loads(message.data)
            if data["op"] == 1:  # heartbeat
                await socket.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif data["op"] == 4 and self.voice_endpoint is not None:  # voice state update
                await self._voice_state(data["d"])
            elif data["op"] == 2:  # identify
                self.identify = data["d"]
                if self.close_code is not None:
                    await socket.close(code=self.close_code, message=b"Disallowed intent(s).")
                    break
                self._socket = socket
                await self.dispatch(
                    "READY",
                    {
                        "v": 10,
                        "user": USERS[BOT_ID],
                        "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                        "session_id": "session-1",
                        "resume_gateway_url": str(request.url),
                        "application": {"id": str(APP_ID), "flags": 1 << 18},
                        "private_channels": [],
                        "relationships": [],
                    },
                )
                await self.dispatch("GUILD_CREATE", self.guild)
                self.identified.set()
        return socket

    async def _voice_state(self, update: dict[str, Any]) -> None:
        """The bot joins (or leaves) a voice channel: its voice state, then where to connect."""
        self.voice_updates.append(update)
        channel = update["channel_id"]
        state = {
            "guild_id": str(update["guild_id"]),
            "channel_id": None if channel is None else str(channel),
            "user_id": str(BOT_ID),
            "member": _member(BOT_ID, with_user=True),
            "session_id": "voice-session-1",
            "deaf": False,
            "mute": False,
            "self_deaf": update["self_deaf"],
            "self_mute": update["self_mute"],
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        await self.dispatch("VOICE_STATE_UPDATE", state)
        if channel is not None:
            server = {
                "token": "voice-token-1",
                "guild_id": str(update["guild_id"]),
                "endpoint": self.voice_endpoint,
            }
            await self.dispatch("VOICE_SERVER_UPDATE", server)
