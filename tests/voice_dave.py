"""A DAVE group of two davey sessions, formed on this machine without Discord.

Discord's voice server is the MLS *external sender*: it announces members by sending signed
Add proposals (DAVE opcode 27), one member commits them (28), the others join by the welcome
(30). Here the test plays the voice server: its own P-256 key signs the proposals, written in
MLS's TLS presentation language (RFC 9420, sections 6 and 12.1.1). Everything a member does —
creating the group, committing, welcoming, deriving the media keys, encrypting and decrypting
frames — is davey's own code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import davey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

CHANNEL_ID = 1_234_567_890_123_456_789
_MLS_VERSION_1 = 1
_WIRE_PUBLIC_MESSAGE = 1
_SENDER_EXTERNAL = 2
_CONTENT_PROPOSAL = 2
_PROPOSAL_ADD = 1
_CREDENTIAL_BASIC = 1


def varint(length: int) -> bytes:
    """MLS's variable-size length prefix (RFC 9420, 2.1.2)."""
    if length < 1 << 6:
        return bytes([length])
    if length < 1 << 14:
        return struct.pack(">H", 0x4000 | length)
    return struct.pack(">I", 0x8000_0000 | length)


def opaque(data: bytes) -> bytes:
    return varint(len(data)) + data


class VoiceServer:
    """The external sender of one voice channel's MLS group."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # ExternalSender { SignaturePublicKey signature_key; Credential credential }
        self.external_sender = (
            opaque(public) + struct.pack(">H", _CREDENTIAL_BASIC) + opaque(b"\x00")
        )

    def add_proposals(self, channel_id: int, epoch: int, key_packages: list[bytes]) -> bytes:
        """Opcode 27's payload after the operation byte: MLSMessages with signed Adds."""
        messages = b"".join(self._add(channel_id, epoch, kp) for kp in key_packages)
        return opaque(messages)

    def _add(self, channel_id: int, epoch: int, key_package: bytes) -> bytes:
        content = (
            opaque(struct.pack(">Q", channel_id))  # group_id
            + struct.pack(">Q", epoch)
            + struct.pack(">BI", _SENDER_EXTERNAL, 0)  # the first external sender
            + opaque(b"")  # authenticated_data
            + struct.pack(">B", _CONTENT_PROPOSAL)
            + struct.pack(">H", _PROPOSAL_ADD)
            + key_package
        )
        head = struct.pack(">HH", _MLS_VERSION_1, _WIRE_PUBLIC_MESSAGE)
        # FramedContentTBS of an external sender carries no group context.
        to_sign = opaque(b"MLS 1.0 FramedContentTBS") + opaque(head + content)
        signature = self._key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        return head + content + opaque(signature)  # no membership tag for external senders


@dataclass(frozen=True)
class Group:
    """Members of one channel's DAVE group, all active: the bot and viewers' clients."""

    bot: davey.DaveSession  # lipcast: receives and decrypts
    viewers: dict[int, davey.DaveSession]  # user id -> that viewer's client (encrypts)
    bot_id: int


def form_group(
    viewer_ids: tuple[int, ...] = (2002,), bot_id: int = 1001, channel_id: int = CHANNEL_ID
) -> Group:
    """davey sessions in one MLS group, as after a voice server's opcodes 25-30."""
    server = VoiceServer()
    bot = davey.DaveSession(1, bot_id, channel_id)
    viewers = {user: davey.DaveSession(1, user, channel_id) for user in viewer_ids}
    for session in (bot, *viewers.values()):
        session.set_external_sender(server.external_sender)
    bot.get_serialized_key_package()
    packages = [viewer.get_serialized_key_package() for viewer in viewers.values()]
    proposals = server.add_proposals(channel_id, 0, packages)
    result = bot.process_proposals(davey.ProposalsOperationType.append, proposals, list(viewer_ids))
    assert result is not None and result.welcome is not None
    bot.process_commit(result.commit)
    for viewer in viewers.values():
        viewer.process_welcome(result.welcome)
    assert bot.ready and all(viewer.ready for viewer in viewers.values())
    return Group(bot=bot, viewers=viewers, bot_id=bot_id)
