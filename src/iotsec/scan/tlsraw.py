"""Hand-built TLS ClientHellos and a parser for the server's first flight (RFC 5246).

The local OpenSSL cannot offer what a TLS audit must look for: SSLv3, export, DES, 3DES
and RC4 suites are compiled out of current builds. A ClientHello is only bytes, though,
and the server's answer up to ServerHelloDone travels in clear text in TLS 1.2 and below:
the version and cipher suite it picked, its certificate chain and its key-exchange
parameters (the size of a DHE group, the ECDHE curve). That is all the audit needs, and no
key is ever computed. Pure functions: bytes in, values out.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

__all__ = [
    "ALL_SUITES", "DHE_SUITES", "RSA_KEX_SUITES", "SUITE_NAMES", "VERSION_NAMES", "WEAK_SUITES",
    "ServerFlight", "client_hello", "parse_server_flight"
]

VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
                 0x0304: "TLSv1.3"}

#: Suites no one should accept: no encryption, no authentication, export grade, 56- and
#: 64-bit block ciphers (DES, 3DES, IDEA: SWEET32), RC4, MD5 record MACs.
WEAK_SUITES: dict[int, str] = {
    0x0001: "NULL-MD5", 0x0002: "NULL-SHA", 0x003B: "NULL-SHA256",
    0xC006: "ECDHE-ECDSA-NULL-SHA", 0xC010: "ECDHE-RSA-NULL-SHA", 0xC015: "AECDH-NULL-SHA",
    0x0003: "EXP-RC4-MD5", 0x0006: "EXP-RC2-CBC-MD5", 0x0008: "EXP-DES-CBC-SHA",
    0x0011: "EXP-EDH-DSS-DES-CBC-SHA", 0x0014: "EXP-EDH-RSA-DES-CBC-SHA",
    0x0017: "EXP-ADH-RC4-MD5", 0x0019: "EXP-ADH-DES-CBC-SHA",
    0x0004: "RC4-MD5", 0x0005: "RC4-SHA", 0xC007: "ECDHE-ECDSA-RC4-SHA",
    0xC011: "ECDHE-RSA-RC4-SHA", 0x0018: "ADH-RC4-MD5",
    0x0009: "DES-CBC-SHA", 0x0012: "EDH-DSS-DES-CBC-SHA", 0x0015: "EDH-RSA-DES-CBC-SHA",
    0x001A: "ADH-DES-CBC-SHA",
    0x000A: "DES-CBC3-SHA", 0x0013: "EDH-DSS-DES-CBC3-SHA", 0x0016: "EDH-RSA-DES-CBC3-SHA",
    0xC008: "ECDHE-ECDSA-DES-CBC3-SHA", 0xC012: "ECDHE-RSA-DES-CBC3-SHA",
    0x001B: "ADH-DES-CBC3-SHA", 0x0007: "IDEA-CBC-SHA",
    0x0034: "ADH-AES128-SHA", 0x003A: "ADH-AES256-SHA", 0x006C: "ADH-AES128-SHA256",
    0x006D: "ADH-AES256-SHA256", 0x00A6: "ADH-AES128-GCM-SHA256",
    0x00A7: "ADH-AES256-GCM-SHA384", 0xC018: "AECDH-AES128-SHA", 0xC019: "AECDH-AES256-SHA",
    0x0046: "ADH-CAMELLIA128-SHA", 0x0089: "ADH-CAMELLIA256-SHA",
}

#: Static RSA key exchange: no forward secrecy (the server key decrypts recorded traffic).
RSA_KEX_SUITES: dict[int, str] = {
    0x002F: "AES128-SHA", 0x0035: "AES256-SHA", 0x003C: "AES128-SHA256",
    0x003D: "AES256-SHA256", 0x009C: "AES128-GCM-SHA256", 0x009D: "AES256-GCM-SHA384",
    0x0041: "CAMELLIA128-SHA", 0x0084: "CAMELLIA256-SHA", 0x0096: "SEED-SHA",
    0xC09C: "AES128-CCM", 0xC09D: "AES256-CCM", 0xC0A0: "AES128-CCM8", 0xC0A1: "AES256-CCM8",
    0x00BA: "CAMELLIA128-SHA256", 0x00C0: "CAMELLIA256-SHA256",
}

#: Finite-field Diffie-Hellman suites (strong ciphers): used to read the server's group.
DHE_SUITES: dict[int, str] = {
    0x0033: "DHE-RSA-AES128-SHA", 0x0039: "DHE-RSA-AES256-SHA",
    0x0067: "DHE-RSA-AES128-SHA256", 0x006B: "DHE-RSA-AES256-SHA256",
    0x009E: "DHE-RSA-AES128-GCM-SHA256", 0x009F: "DHE-RSA-AES256-GCM-SHA384",
    0xCCAA: "DHE-RSA-CHACHA20-POLY1305", 0x0032: "DHE-DSS-AES128-SHA",
    0x0038: "DHE-DSS-AES256-SHA", 0x00A2: "DHE-DSS-AES128-GCM-SHA256",
    0x00A3: "DHE-DSS-AES256-GCM-SHA384", 0xC09E: "DHE-RSA-AES128-CCM",
    0xC09F: "DHE-RSA-AES256-CCM",
}

ECDHE_SUITES: dict[int, str] = {
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
    0xC009: "ECDHE-ECDSA-AES128-SHA", 0xC00A: "ECDHE-ECDSA-AES256-SHA",
    0xC013: "ECDHE-RSA-AES128-SHA", 0xC014: "ECDHE-RSA-AES256-SHA",
    0xC023: "ECDHE-ECDSA-AES128-SHA256", 0xC024: "ECDHE-ECDSA-AES256-SHA384",
    0xC027: "ECDHE-RSA-AES128-SHA256", 0xC028: "ECDHE-RSA-AES256-SHA384",
    0xC0AC: "ECDHE-ECDSA-AES128-CCM", 0xC0AD: "ECDHE-ECDSA-AES256-CCM",
    0xC0AE: "ECDHE-ECDSA-AES128-CCM8", 0xC0AF: "ECDHE-ECDSA-AES256-CCM8",
}

SUITE_NAMES: dict[int, str] = {**ECDHE_SUITES, **DHE_SUITES, **RSA_KEX_SUITES, **WEAK_SUITES}
#: Everything above, strongest first: a server that speaks any of them will answer.
ALL_SUITES: tuple[int, ...] = (*ECDHE_SUITES, *DHE_SUITES, *RSA_KEX_SUITES, *WEAK_SUITES)

_ECDHE_LIKE = {s for s, n in SUITE_NAMES.items() if n.startswith(("ECDHE", "AECDH"))}
_DHE_LIKE = {s for s, n in SUITE_NAMES.items()
             if n.startswith(("DHE", "EDH", "ADH", "EXP-EDH", "EXP-ADH"))}

#: Named curves (RFC 8422, RFC 7919) and their strength in bits.
CURVE_BITS = {
    1: ("sect163k1", 163), 2: ("sect163r1", 163), 3: ("sect163r2", 163),
    15: ("secp160k1", 160), 16: ("secp160r1", 160), 17: ("secp160r2", 160),
    18: ("secp192k1", 192), 19: ("secp192r1", 192), 20: ("secp224k1", 224),
    21: ("secp224r1", 224), 22: ("secp256k1", 256), 23: ("secp256r1", 256),
    24: ("secp384r1", 384), 25: ("secp521r1", 521), 26: ("brainpoolP256r1", 256),
    27: ("brainpoolP384r1", 384), 28: ("brainpoolP512r1", 512), 29: ("x25519", 253),
    30: ("x448", 448),
}

# Groups offered: the modern ones and, so that a server limited to them still answers and
# can be flagged, the small ones.
_GROUPS = (29, 23, 24, 25, 30, 26, 27, 28, 22, 21, 20, 19, 18, 17, 16, 15)
_SIG_ALGS = (0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806, 0x0401,
             0x0501, 0x0601, 0x0303, 0x0301, 0x0302, 0x0402, 0x0203, 0x0201, 0x0202)

MAX_FLIGHT = 128 * 1024


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def client_hello(version: int, suites: tuple[int, ...], server_name: str | None = None,
                 random: bytes | None = None) -> bytes:
    """A ClientHello record offering ``suites`` at ``version`` (0x0300 SSLv3 ... 0x0303
    TLS 1.2). SSLv3 hellos carry no extensions, as SSLv3 servers expect."""
    rnd = random if random is not None else os.urandom(32)
    body = struct.pack(">H", version) + rnd + b"\x00"
    cs = b"".join(struct.pack(">H", s) for s in suites)
    # TLS_EMPTY_RENEGOTIATION_INFO_SCSV signals secure renegotiation support.
    cs += b"\x00\xff"
    body += struct.pack(">H", len(cs)) + cs + b"\x01\x00"
    if version >= 0x0301:
        exts = b""
        if server_name:
            host = server_name.encode("ascii", "ignore")
            entry = b"\x00" + struct.pack(">H", len(host)) + host
            exts += _ext(0, struct.pack(">H", len(entry)) + entry)
        groups = b"".join(struct.pack(">H", g) for g in _GROUPS)
        exts += _ext(10, struct.pack(">H", len(groups)) + groups)
        exts += _ext(11, b"\x01\x00")
        if version >= 0x0303:
            algs = b"".join(struct.pack(">H", a) for a in _SIG_ALGS)
            exts += _ext(13, struct.pack(">H", len(algs)) + algs)
        exts += _ext(0xFF01, b"\x00")
        body += struct.pack(">H", len(exts)) + exts
    handshake = b"\x01" + struct.pack(">I", len(body))[1:] + body
    # The record layer version stays at TLS 1.0 for TLS hellos, as clients do in practice.
    record_version = 0x0300 if version == 0x0300 else 0x0301
    return struct.pack(">BHH", 22, record_version, len(handshake)) + handshake


@dataclass
class ServerFlight:
    """What a server sent in answer to a ClientHello, up to ServerHelloDone."""

    version: int | None = None
    suite: int | None = None
    certificates: list[bytes] = field(default_factory=list)
    #: Size in bits of the DHE prime, or of the ECDHE curve, when the server sent one.
    dh_bits: int | None = None
    curve: str | None = None
    curve_bits: int | None = None
    alert: int | None = None
    done: bool = False
    #: The bytes are not TLS, or not well-formed.
    garbage: bool = False

    @property
    def version_name(self) -> str | None:
        return VERSION_NAMES.get(self.version) if self.version is not None else None

    @property
    def suite_name(self) -> str | None:
        if self.suite is None:
            return None
        return SUITE_NAMES.get(self.suite, f"0x{self.suite:04X}")

    @property
    def accepted(self) -> bool:
        return self.version is not None and self.suite is not None


def _parse_server_hello(body: bytes, flight: ServerFlight) -> None:
    if len(body) < 38:
        flight.garbage = True
        return
    flight.version = struct.unpack(">H", body[:2])[0]
    sid_len = body[34]
    at = 35 + sid_len
    if len(body) < at + 3:
        flight.garbage = True
        return
    flight.suite = struct.unpack(">H", body[at:at + 2])[0]


def _parse_certificates(body: bytes, flight: ServerFlight) -> None:
    if len(body) < 3:
        return
    total = int.from_bytes(body[:3], "big")
    at, end = 3, min(3 + total, len(body))
    while at + 3 <= end and len(flight.certificates) < 10:
        size = int.from_bytes(body[at:at + 3], "big")
        at += 3
        if at + size > end:
            return
        flight.certificates.append(body[at:at + size])
        at += size


def _parse_key_exchange(body: bytes, flight: ServerFlight) -> None:
    suite = flight.suite
    if suite in _ECDHE_LIKE and len(body) >= 3 and body[0] == 3:
        curve = struct.unpack(">H", body[1:3])[0]
        name, bits = CURVE_BITS.get(curve, (f"curve-{curve}", 0))
        flight.curve, flight.curve_bits = name, bits
    elif suite in _DHE_LIKE and len(body) >= 2:
        p_len = struct.unpack(">H", body[:2])[0]
        if 2 + p_len <= len(body) and p_len:
            prime = body[2:2 + p_len]
            flight.dh_bits = int.from_bytes(prime, "big").bit_length()


def parse_server_flight(data: bytes) -> ServerFlight:
    """Parse records until ServerHelloDone, an alert or the end of ``data``."""
    flight = ServerFlight()
    handshake = bytearray()
    at = 0
    data = data[:MAX_FLIGHT]
    while at + 5 <= len(data):
        kind, _version, length = struct.unpack(">BHH", data[at:at + 5])
        if kind not in (20, 21, 22, 23) or length > 18432:
            flight.garbage = True
            return flight
        payload = data[at + 5:at + 5 + length]
        at += 5 + length
        if kind == 21:
            if len(payload) >= 2:
                flight.alert = payload[1]
            return flight
        if kind != 22:
            continue
        handshake += payload
        while len(handshake) >= 4:
            msg_type = handshake[0]
            size = int.from_bytes(handshake[1:4], "big")
            if len(handshake) < 4 + size:
                break
            body = bytes(handshake[4:4 + size])
            del handshake[:4 + size]
            if msg_type == 2:
                _parse_server_hello(body, flight)
            elif msg_type == 11:
                _parse_certificates(body, flight)
            elif msg_type == 12:
                _parse_key_exchange(body, flight)
            elif msg_type == 14:
                flight.done = True
                return flight
    return flight


def flight_complete(data: bytes) -> bool:
    """Whether ``data`` already holds an answer worth parsing (ServerHelloDone or an alert),
    so that the reader can stop waiting."""
    flight = parse_server_flight(data)
    return flight.done or flight.alert is not None or flight.garbage
