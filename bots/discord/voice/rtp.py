"""Discord voice packets: the RTP header, the transport cipher, header extension and padding.

Discord sends each 20 ms Opus frame as one RTP packet (payload type 0x78) sealed with
``aead_xchacha20_poly1305_rtpsize``: the 12-byte header, the CSRCs and the 4-byte extension
preamble (0xBEDE + length in words) are the associated data and stay in the clear; the rest —
the extension body, the Opus (or DAVE) frame and any RTP padding — is the ciphertext, and the
packet ends with a 4-byte big-endian counter that is the nonce (padded with 20 zero bytes).

These functions are pure; :mod:`bots.discord.voice.receive` uses them per packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
OPUS_PAYLOAD_TYPE = 0x78
TRANSPORT_MODE = "aead_xchacha20_poly1305_rtpsize"
_HEADER = struct.Struct(">BBHII")  # flags, marker+type, sequence, timestamp, ssrc
_NONCE_BYTES = 4
_TAG_BYTES = 16


class PacketError(ValueError):
    """A packet that cannot be a Discord voice packet, or fails its authentication."""


@dataclass(frozen=True, kw_only=True)
class RtpHeader:
    """The clear part of a voice packet."""

    padding: bool
    extension: bool
    csrc_count: int
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    aad_length: int  # header + CSRCs + the extension preamble: the cipher's associated data
    extension_words: int  # the extension body's length in 32-bit words (0 without one)


def parse_header(packet: bytes) -> RtpHeader:
    """The header of an RTP packet; :class:`PacketError` if it is not one."""
    if len(packet) < _HEADER.size:
        raise PacketError(f"{len(packet)} bytes is too short for RTP")
    flags, kind, sequence, timestamp, ssrc = _HEADER.unpack_from(packet)
    if flags >> 6 != RTP_VERSION:
        raise PacketError(f"RTP version {flags >> 6}, expected 2")
    csrc_count = flags & 0x0F
    aad_length = _HEADER.size + 4 * csrc_count
    extension = bool(flags & 0x10)
    words = 0
    if extension:
        if len(packet) < aad_length + 4:
            raise PacketError("the header extension is cut off")
        (words,) = struct.unpack_from(">H", packet, aad_length + 2)
        aad_length += 4
    if len(packet) < aad_length + _TAG_BYTES + _NONCE_BYTES:
        raise PacketError("no room for a sealed payload")
    return RtpHeader(
        padding=bool(flags & 0x20),
        extension=extension,
        csrc_count=csrc_count,
        payload_type=kind & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        aad_length=aad_length,
        extension_words=words,
    )


class TransportCipher:
    """``aead_xchacha20_poly1305_rtpsize`` with one session's secret key."""

    def __init__(self, secret_key: bytes) -> None:
        import nacl.secret

        if len(secret_key) != 32:
            raise ValueError(f"a voice secret key has 32 bytes, not {len(secret_key)}")
        self.secret_key = bytes(secret_key)
        self._box = nacl.secret.Aead(self.secret_key)

    def open(self, packet: bytes, header: RtpHeader) -> bytes:
        """The media frame of ``packet``: decrypted, without extension body and padding."""
        import nacl.exceptions

        aad = packet[: header.aad_length]
        sealed = packet[header.aad_length : -_NONCE_BYTES]
        nonce = packet[-_NONCE_BYTES:] + bytes(24 - _NONCE_BYTES)
        try:
            plain = self._box.decrypt(sealed, aad, nonce)
        except nacl.exceptions.CryptoError as err:
            raise PacketError("the packet fails authentication (corrupt, or another key)") from err
        start = 4 * header.extension_words
        end = len(plain)
        if header.padding:
            if not plain:
                raise PacketError("padding flag set on an empty payload")
            count = plain[-1]
            if count == 0 or count > end - start:
                raise PacketError(f"padding of {count} bytes does not fit the payload")
            end -= count
        if start > end:
            raise PacketError("the header extension is longer than the payload")
        return bytes(plain[start:end])
