"""Probe builders and parsers: well-formed packets out, hostile bytes in without a crash."""

from __future__ import annotations

import contextlib
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotsec.errors import ScanToolError
from iotsec.netprobe.identify import classify_banner
from iotsec.scan import nmap, probes, tlsraw
from iotsec.scan.targets import PortSpec, parse_target, plan
from tests.services import require_tool

# --------------------------------------------------------------------------- MQTT


def test_mqtt_connect_and_connack() -> None:
    packet = probes.mqtt_connect("c1", username="u", password="p")
    kind, flags, body = probes.iter_mqtt_packets(packet)[0]
    assert (kind, flags) == (1, 0)
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4 and body[7] == 0xC2
    assert probes.parse_connack(b"\x20\x02\x00\x00") == 0
    assert probes.parse_connack(b"\x20\x02\x00\x05") == 5
    assert probes.parse_connack(b"\x20\x02\x00") is None  # truncated
    assert probes.parse_connack(b"\x30\x02\x00\x00") is None  # PUBLISH
    assert probes.parse_connack(b"\x20\x02\x02\x00") is None  # reserved flag set


def test_suback_after_a_retained_message() -> None:
    publish = b"\x30\x07\x00\x03a/b" + b"xy"
    suback = b"\x90\x03\x1d\x5a\x00"
    assert probes.parse_suback(publish + suback, 0x1D5A) == (0,)
    assert probes.parse_suback(b"\x90\x03\x1d\x5a\x80", 0x1D5A) == (0x80,)
    assert probes.parse_suback(suback, 1) is None


def test_long_remaining_length() -> None:
    packet = probes.mqtt_connect("x" * 300)
    assert packet[1] & 0x80  # two-byte remaining length
    assert probes.iter_mqtt_packets(packet)[0][0] == 1


@given(st.binary(max_size=64))
def test_mqtt_parsers_never_raise(data: bytes) -> None:
    probes.parse_connack(data)
    probes.parse_suback(data, 7)
    for _kind, _flags, body in probes.iter_mqtt_packets(data):
        assert len(body) <= len(data)


# --------------------------------------------------------------------------- HTTP, RTSP


def test_http_parsing_and_login_detection() -> None:
    r = probes.parse_http_response(b"HTTP/1.1 401 Unauthorized\r\n"
                                   b'WWW-Authenticate: Basic realm="cam"\r\n\r\n')
    assert r is not None and r.status == 401
    assert probes.auth_challenge(r) == ("basic", "cam")
    form = probes.parse_http_response(b"HTTP/1.0 200 OK\r\n\r\n<form><INPUT TYPE=password>")
    assert form is not None and probes.has_login_form(form)
    plain = probes.parse_http_response(b"HTTP/1.0 200 OK\r\n\r\n<input type=text>")
    assert plain is not None and not probes.has_login_form(plain)
    rtsp = probes.parse_http_response(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
    assert rtsp is not None and rtsp.protocol == "RTSP"
    assert probes.parse_http_response(b"SSH-2.0-x\r\n") is None


@given(st.binary(max_size=200))
def test_http_parser_never_raises(data: bytes) -> None:
    response = probes.parse_http_response(b"HTTP/1.1 200 OK\r\n" + data)
    assert response is not None
    probes.parse_http_response(data)
    probes.auth_challenge(response)


# --------------------------------------------------------------------------- others


def test_modbus() -> None:
    request = probes.modbus_read_request(0x1234)
    assert request == bytes.fromhex("123400000006010300000001")
    assert probes.parse_modbus_response(bytes.fromhex("12340000000501030200 2a"
                                                      .replace(" ", "")), 0x1234) == (3, None)
    assert probes.parse_modbus_response(bytes.fromhex("123400000003018302"), 0x1234) == (3, 2)
    assert probes.parse_modbus_response(bytes.fromhex("123400000003018302"), 0x9999) is None


def test_telnet_negotiation_is_refused() -> None:
    data = bytes([255, 251, 1, 255, 253, 31, 255, 250, 24, 1, 255, 240]) + b"login: "
    text, replies, commands = probes.telnet_negotiate(data)
    assert text == b"login: "
    assert replies == bytes([255, 254, 1, 255, 252, 31])
    assert commands == 3


@given(st.binary(max_size=64))
def test_telnet_and_modbus_parsers_never_raise(data: bytes) -> None:
    text, _replies, _n = probes.telnet_negotiate(data)
    assert len(text) <= len(data)
    probes.parse_modbus_response(data, 1)
    classify_banner(data)


def test_coap_request_and_response() -> None:
    request = probes.coap_get(0xBEEF, b"\x01\x02")
    message = probes.parse_coap(request)
    assert message is not None and message.code == "0.01" and message.token == b"\x01\x02"
    reply = bytes([0x62, 0x45, 0xBE, 0xEF, 1, 2, 0xC1, 40, 0xFF]) + b"</a>"
    parsed = probes.parse_coap(reply)
    assert parsed is not None and parsed.code == "2.05" and parsed.payload == b"</a>"
    assert probes.parse_coap(bytes([0x62, 0x45, 0xBE, 0xEF, 1, 2, 0xDF])) is None


@given(st.binary(max_size=64))
def test_coap_parser_never_raises(data: bytes) -> None:
    probes.parse_coap(data)


def test_banner_classification() -> None:
    assert classify_banner(b"SSH-2.0-dropbear\r\n")[0] == "ssh"
    assert classify_banner(b"220 FTP ready\r\n")[0] == "ftp"
    assert classify_banner(b"220 mail ESMTP Postfix\r\n")[0] == "smtp"
    assert classify_banner(bytes([255, 253, 24]))[0] == "telnet"
    assert classify_banner(b"\r\nrouter login: ")[0] == "telnet"
    assert classify_banner(b"RFB 003.008\n")[0] == "vnc"
    assert classify_banner(b"hello\n")[0] == "unknown"


# --------------------------------------------------------------------------- TLS


def test_client_hello_offers_what_it_says() -> None:
    hello = tlsraw.client_hello(0x0301, (0x0005, 0x000A), "cam.example")
    assert hello[0] == 22 and hello[1:3] == b"\x03\x01"
    body = hello[9:]
    assert body[:2] == b"\x03\x01"
    suites_len = struct.unpack(">H", body[35:37])[0]
    suites = [struct.unpack(">H", body[37 + i:39 + i])[0] for i in range(0, suites_len, 2)]
    assert suites == [0x0005, 0x000A, 0x00FF]
    assert b"cam.example" in hello
    sslv3 = tlsraw.client_hello(0x0300, (0x0005,))
    assert sslv3[1:3] == b"\x03\x00" and b"cam" not in sslv3


def _server_flight(version: int, suite: int, certificate: bytes, dh_prime: bytes) -> bytes:
    hello = struct.pack(">H", version) + bytes(32) + b"\x00" + struct.pack(">H", suite) + b"\x00"
    cert_list = len(certificate).to_bytes(3, "big") + certificate
    certs = len(cert_list).to_bytes(3, "big") + cert_list
    kex = struct.pack(">H", len(dh_prime)) + dh_prime + b"\x00\x01\x02\x00\x01\x05"
    messages = b""
    for kind, body in ((2, hello), (11, certs), (12, kex), (14, b"")):
        messages += bytes([kind]) + len(body).to_bytes(3, "big") + body
    # Split across two records, as servers do.
    return (struct.pack(">BHH", 22, version, 50) + messages[:50]
            + struct.pack(">BHH", 22, version, len(messages) - 50) + messages[50:])


def test_server_flight_parsing() -> None:
    prime = b"\xff" * 128  # 1024 bits
    flight = tlsraw.parse_server_flight(_server_flight(0x0301, 0x0033, b"CERT", prime))
    assert flight.done and flight.accepted
    assert flight.version_name == "TLSv1" and flight.suite_name == "DHE-RSA-AES128-SHA"
    assert flight.certificates == [b"CERT"] and flight.dh_bits == 1024
    alert = tlsraw.parse_server_flight(bytes([21, 3, 3, 0, 2, 2, 40]))
    assert alert.alert == 40 and not alert.accepted
    assert tlsraw.parse_server_flight(b"HTTP/1.1 400 Bad").garbage


@given(st.binary(max_size=300))
def test_server_flight_parser_never_raises(data: bytes) -> None:
    tlsraw.parse_server_flight(data)
    tlsraw.parse_server_flight(bytes([22, 3, 3]) + data)
    assert isinstance(probes.looks_like_tls(data), bool)


# --------------------------------------------------------------------------- nmap XML

SAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<nmaprun scanner="nmap" version="7.93">
<host><status state="up"/><address addr="127.0.0.1" addrtype="ipv4"/>
<ports><port protocol="tcp" portid="1883"><state state="open"/><service name="mqtt"/></port>
<port protocol="tcp" portid="22"><state state="closed"/></port>
<port protocol="tcp" portid="x"><state state="open"/></port></ports></host>
</nmaprun>"""


def test_nmap_xml() -> None:
    parsed = nmap.parse_nmap_xml(SAMPLE)
    assert parsed.version == "7.93"
    assert parsed.open == {("127.0.0.1", 1883)}
    assert parsed.names == {("127.0.0.1", 1883): "mqtt"}
    cmp = nmap.compare([("127.0.0.1", 1883), ("127.0.0.1", 8883)], parsed, ["nmap"])
    assert cmp["agreed"] == 1 and cmp["only_iotsec"] == ["127.0.0.1:8883"]


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><nmaprun>&a;</nmaprun>',
    b"<nmaprun><host>", b"<other/>", b"\x00\x01",
])
def test_nmap_xml_refusals(data: bytes) -> None:
    with pytest.raises(ScanToolError):
        nmap.parse_nmap_xml(data)


@given(st.binary(max_size=200))
def test_nmap_parser_accepts_or_refuses_cleanly(data: bytes) -> None:
    with contextlib.suppress(ScanToolError):
        nmap.parse_nmap_xml(b"<nmaprun>" + data + b"</nmaprun>")


def test_nmap_command_and_real_output() -> None:
    binary = require_tool("nmap")
    p = plan([parse_target("127.0.0.1")], PortSpec.parse("1,2"))
    command = nmap.nmap_command(binary, p)
    assert command[1:4] == ["-sT", "-Pn", "-n"] and command[-1] == "127.0.0.1/32"
    out = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
    assert nmap.parse_nmap_xml(out).version
