"""Discord's voice server on 127.0.0.1, for joining a voice channel with discord.py unchanged.

discord.py connects to a voice channel as it does to Discord: the main gateway's VOICE_STATE
and VOICE_SERVER updates (:class:`tests.discord_support.FakeGateway` sends them when
``voice_endpoint`` is set), then ``wss://ENDPOINT/?v=8`` with TLS (a certificate made here and
trusted through the client's connector), the voice gateway's HELLO, IDENTIFY -> READY, UDP IP
discovery, SELECT_PROTOCOL -> SESSION_DESCRIPTION with a secret key and DAVE protocol 1, then
DAVE's MLS opcodes as the voice server plays them: the external sender (25), an Add proposal
for a viewer's client (27), the bot's commit and welcome (28), the commit announced (29). The
viewer's client is a davey session of the test's, welcomed into the same group, so the frames it
encrypts are the ones the bot's own DAVE session must decrypt.

Written from Discord's voice documentation (opcodes, payloads, the 74-byte discovery packet)
and the DAVE protocol; the MLS signing is :mod:`tests.voice_dave`'s.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import davey
from aiohttp import WSMsgType, web

from tests.voice_dave import VoiceServer

MODE = "aead_xchacha20_poly1305_rtpsize"
BOT_SSRC = 1001


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, valid for a day: (certificate, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "voice.crt", folder / "voice.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Discovery(asyncio.DatagramProtocol):
    """The voice server's UDP side: answers IP discovery with the address it saw, and keeps
    the packets the bot sends."""

    def __init__(self, server: FakeVoiceServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == 74 and struct.unpack_from(">H", data, 0)[0] == 1:  # a request
            ssrc = struct.unpack_from(">I", data, 4)[0]
            answer = struct.pack(">HHI", 2, 70, ssrc) + addr[0].encode().ljust(64, b"\0")
            answer += struct.pack(">H", addr[1])
            assert self.transport is not None
            self.transport.sendto(answer, addr)
            self.server.client_address = addr
            self.server.discovered.set()
        elif addr == self.server.client_address:  # the bot speaking
            self.server.received.append(data)


@dataclass(kw_only=True)
class FakeVoiceServer:
    """One voice channel's server: the voice gateway (TLS WebSocket) and its UDP socket."""

    channel_id: int
    viewer_id: int  # the viewer in the call when the bot joins (more join by join_call)
    secret_key: bytes = field(default_factory=lambda: os.urandom(32))
    endpoint: str = ""  # "127.0.0.1:PORT", once started
    client_address: tuple[str, int] | None = None  # the bot's UDP socket, once discovered
    discovered: asyncio.Event = field(default_factory=asyncio.Event)
    dave_ready: asyncio.Event = field(default_factory=asyncio.Event)
    identify: dict[str, Any] | None = None
    received: list[bytes] = field(default_factory=list)  # the bot's voice packets, as sent
    viewers: dict[int, davey.DaveSession] = field(default_factory=dict)  # in the group
    transitions: list[int] = field(default_factory=list)  # executed (opcode 22), in order
    transition_done: asyncio.Event = field(default_factory=asyncio.Event)
    _joining: davey.DaveSession | None = None  # the client proposed, until welcomed
    _epoch: int = 0  # the group's epoch, as the proposals must name it
    _socket: web.WebSocketResponse | None = None
    _udp: _Discovery | None = None
    _runner: web.AppRunner | None = None
    _sequence: int = 0
    _mls: VoiceServer = field(default_factory=VoiceServer)

    async def start(self, folder: Path) -> ssl.SSLContext:
        """Listen on 127.0.0.1; returns the TLS context a client must trust (the certificate)."""
        cert, key = self_signed(folder)
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _Discovery(self), local_addr=("127.0.0.1", 0)
        )
        self._udp = protocol
        return ssl.create_default_context(cafile=str(cert))

    @property
    def udp_port(self) -> int:
        assert self._udp is not None and self._udp.transport is not None
        port: int = self._udp.transport.get_extra_info("sockname")[1]
        return port

    async def close(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def viewer(self) -> davey.DaveSession | None:
        """The first viewer's client (``viewer_id``), once in the group."""
        return self.viewers.get(self.viewer_id)

    # -- what the test does --------------------------------------------------------------

    async def join_call(self, user_id: int) -> None:
        """Another viewer joins the call: proposed to the group (opcode 27); the bot commits,
        and the change takes effect by a transition (29 with its id, 23 from the bot, 22)."""
        self.transition_done.clear()
        await self._propose(user_id)

    async def speaking(self, user_id: int, ssrc: int) -> None:
        """SPEAKING (op 5): ``user_id`` talks on ``ssrc``."""
        await self._json(5, {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1})

    def send_media(self, packets: list[bytes]) -> None:
        """Relay a viewer's packets to the bot's socket, as the voice server does."""
        assert self._udp is not None and self._udp.transport is not None
        assert self.client_address is not None, "the bot has not discovered its address"
        for packet in packets:
            self._udp.transport.sendto(packet, self.client_address)

    # -- the voice gateway ---------------------------------------------------------------

    async def _json(self, op: int, data: dict[str, Any]) -> None:
        assert self._socket is not None
        self._sequence += 1
        await self._socket.send_json({"op": op, "d": data, "seq": self._sequence})

    async def _binary(self, op: int, payload: bytes) -> None:
        assert self._socket is not None
        self._sequence += 1
        await self._socket.send_bytes(struct.pack(">HB", self._sequence, op) + payload)

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_json({"op": 8, "d": {"heartbeat_interval": 41_250}})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await self._text(json.loads(message.data))
            elif message.type == WSMsgType.BINARY:
                await self._mls_message(message.data)
        return socket

    async def _text(self, message: dict[str, Any]) -> None:
        op, data = message["op"], message["d"]
        if op == 0:  # IDENTIFY
            self.identify = data
            ready = {"ssrc": BOT_SSRC, "ip": "127.0.0.1", "port": self.udp_port, "modes": [MODE]}
            await self._json(2, ready)
        elif op == 1:  # SELECT_PROTOCOL
            assert data["data"]["mode"] == MODE
            description = {
                "mode": MODE,
                "secret_key": list(self.secret_key),
                "dave_protocol_version": davey.DAVE_PROTOCOL_VERSION,
            }
            await self._json(4, description)
        elif op == 3:  # HEARTBEAT
            await self._json(6, {"t": data["t"]})
        elif op == 23:  # DAVE_TRANSITION_READY: every member is ready; execute it
            transition = int(data["transition_id"])
            await self._json(22, {"transition_id": transition})
            self.transitions.append(transition)
            self.transition_done.set()

    async def _mls_message(self, data: bytes) -> None:
        op, payload = data[0], data[1:]
        if op == 26:  # MLS_KEY_PACKAGE: the bot's; the first viewer is already in the call
            await self._binary(25, self._mls.external_sender)
            await self._propose(self.viewer_id)
        elif op == 28:  # MLS_COMMIT_WELCOME: the commit, then the welcome for the new client
            commit = self._welcome(payload)
            for member in self.viewers.values():  # the clients already in the group
                member.process_commit(commit)
            assert self._joining is not None
            self.viewers[self._joining.user_id] = self._joining
            self._joining = None
            self._epoch += 1
            # The first group takes effect at once (transition 0); later changes by a
            # transition the bot must say it is ready for.
            transition = 0 if self._epoch == 1 else self._epoch
            await self._binary(29, struct.pack(">H", transition) + commit)
            self.dave_ready.set()

    async def _propose(self, user_id: int) -> None:
        client = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, user_id, self.channel_id)
        client.set_external_sender(self._mls.external_sender)
        package = client.get_serialized_key_package()
        self._joining = client
        proposals = self._mls.add_proposals(self.channel_id, self._epoch, [package])
        # Every member gets the proposals; the bot's commit is the one announced (its clients
        # drop their own).
        for member in self.viewers.values():
            member.process_proposals(davey.ProposalsOperationType.append, proposals)
        await self._binary(27, b"\x00" + proposals)  # operation 0: append

    def _welcome(self, commit_welcome: bytes) -> bytes:
        """Split opcode 28's commit (an MLSMessage) and welcome (a Welcome, which begins with
        its cipher suite, 2 for DAVE's P-256); welcome the joining client; return the commit."""
        assert self._joining is not None
        start = 1
        while (start := commit_welcome.find(b"\x00\x02", start)) > 0:
            try:
                self._joining.process_welcome(commit_welcome[start:])
            except Exception:  # noqa: BLE001 - not where the welcome starts: look further
                start += 1
                continue
            return commit_welcome[:start]
        raise AssertionError("opcode 28 carried no welcome the joining client could read")
