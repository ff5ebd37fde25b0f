"""A discord.py ``VoiceClient`` that lets lipcast's receiver listen.

discord.py 2.7 sends voice under DAVE but does not receive. This subclass adds what the
receiver needs and nothing else: the voice gateway's SPEAKING (op 5) and CLIENT_DISCONNECT
(op 13) events, through the hook discord.py's ``VoiceConnectionState`` accepts, and every UDP
packet, through its socket listener. The connection's secret key and DAVE session are read
fresh for each packet (:meth:`ListeningVoiceClient.keys`): both change on every re-join.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.voice_state import VoiceConnectionState

from bots.discord.voice.receive import ConnectionKeys, VoiceReceiver

log = logging.getLogger(__name__)

OP_SPEAKING = 5
OP_CLIENT_DISCONNECT = 13


class ListeningVoiceClient(discord.VoiceClient):
    """A voice client whose packets and speaker events go to a :class:`VoiceReceiver`."""

    receiver: VoiceReceiver | None = None  # set by attach(); read by the hook
    on_speaker_left: Any = None  # Callable[[int], None]: a user's CLIENT_DISCONNECT

    def create_connection_state(self) -> VoiceConnectionState:
        return VoiceConnectionState(self, hook=self._voice_gateway_hook)

    def attach(self, receiver: VoiceReceiver) -> None:
        """Start feeding ``receiver`` (call once connected)."""
        self.receiver = receiver
        self._connection.add_socket_listener(receiver.feed)

    def detach(self) -> None:
        """Stop feeding the receiver."""
        if self.receiver is not None:
            self._connection.remove_socket_listener(self.receiver.feed)
            self.receiver = None

    def keys(self) -> ConnectionKeys:
        """The connection's secret key, mode and DAVE session as they are now."""
        connection = self._connection
        secret = connection.secret_key
        mode = connection.mode
        return ConnectionKeys(
            secret_key=bytes(secret) if isinstance(secret, list) else None,
            mode=mode if isinstance(mode, str) else None,
            dave=connection.dave_session,
        )

    async def _voice_gateway_hook(self, ws: Any, message: dict[str, Any]) -> None:
        await speaker_event(self, message)


async def speaker_event(client: ListeningVoiceClient, message: dict[str, Any]) -> None:
    """Apply one voice-gateway message: SPEAKING maps an SSRC, CLIENT_DISCONNECT drops it."""
    receiver = client.receiver
    if receiver is None or not isinstance(message, dict):
        return
    op, data = message.get("op"), message.get("d")
    if not isinstance(data, dict):
        return
    try:
        if op == OP_SPEAKING and "user_id" in data and "ssrc" in data:
            receiver.map_ssrc(int(data["ssrc"]), int(data["user_id"]))
        elif op == OP_CLIENT_DISCONNECT and "user_id" in data:
            user = int(data["user_id"])
            receiver.forget_user(user)
            if client.on_speaker_left is not None:
                client.on_speaker_left(user)
    except (TypeError, ValueError):
        log.warning("voice gateway op %s with unexpected data ignored", op)
