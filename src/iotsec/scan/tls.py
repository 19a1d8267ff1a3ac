"""TLS audit of one endpoint: what it accepts (observed) and what that means (judged).

:func:`observe` talks to the server: one full handshake through Python's ssl module (the
negotiated version and cipher, the certificate chain, TLS 1.3 included), then hand-built
ClientHellos (``iotsec.scan.tlsraw``) that ask, one question each, whether the server
accepts SSLv3, TLS 1.0, TLS 1.1, weak cipher suites, static RSA key exchange, and which
Diffie-Hellman group or curve it uses. Probes run one after another (many embedded TLS
servers serve one connection at a time) under a per-probe timeout and an overall budget;
a server that stalls is given up on after its first timeout.

:func:`assess` is pure: the observation, ``now`` and a :class:`TrustStore` in, findings
out. Trust is judged without regard to time (expiry is its own finding) and against the
fleet's own CA as well as the system's roots, so a healthy private-CA endpoint is not
called "untrusted".
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from iotsec.findings.model import Finding, Location
from iotsec.scan import rules

__all__ = ["TlsObservation", "TrustStore", "assess"]

EXPIRY_WARNING = timedelta(days=30)
MIN_RSA_BITS = 2048
MIN_DH_BITS = 2048
MIN_EC_BITS = 224
MAX_CHAIN = 10


@dataclass
class TlsObservation:
    host: str
    port: int
    server_name: str | None = None
    #: Set when not even one handshake completed (then nothing else is known).
    error: str | None = None
    version: str | None = None
    cipher: str | None = None
    chain: list[bytes] = field(default_factory=list)
    accepted_old: list[str] = field(default_factory=list)
    weak_suites: list[str] = field(default_factory=list)
    rsa_kex: list[str] = field(default_factory=list)
    dh_bits: int | None = None
    curve: str | None = None
    curve_bits: int | None = None
    notes: list[str] = field(default_factory=list)
    probes: int = 0


# --------------------------------------------------------------------------- trust

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _dsa_quiet(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``function`` without cryptography's deprecation warning for DSA keys.

    A scanner meets DSA certificates on old devices and reports them as weak keys; the
    library's warning (raised when such a key is loaded, measured or used to verify) is
    about cryptography's own future, not a finding, and must not reach the user."""

    @functools.wraps(function)
    def quiet(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*DSA",
                                    category=CryptographyDeprecationWarning)
            return function(*args, **kwargs)

    return quiet


@_dsa_quiet
def _key(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """What makes two certificates the same CA: subject and public key."""
    return (cert.subject.public_bytes(),
            cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


@dataclass(frozen=True)
class TrustStore:
    """Trust anchors: the fleet's CA chain (``fleet``), the system roots and any extra CA
    certificates the operator names. A certificate is trusted when a chain of valid
    signatures leads from it to an anchor."""

    anchors: tuple[x509.Certificate, ...] = ()

    @classmethod
    def of(cls, *, fleet: Iterable[x509.Certificate] = (),
           others: Iterable[x509.Certificate] = ()) -> TrustStore:
        return cls(anchors=tuple(fleet) + tuple(others))

    def _index(self) -> dict[bytes, list[x509.Certificate]]:
        index: dict[bytes, list[x509.Certificate]] = {}
        for cert in self.anchors:
            index.setdefault(cert.subject.public_bytes(), []).append(cert)
        return index

    def anchor_for(self, chain: Sequence[x509.Certificate]) -> x509.Certificate | None:
        """The anchor that ``chain[0]`` leads to (using ``chain[1:]`` as intermediates),
        or ``None``. Names, signatures and CA flags are checked; validity dates are not."""
        if not chain:
            return None
        anchors = self._index()
        keys = {_key(c): c for c in self.anchors}
        presented: dict[bytes, list[x509.Certificate]] = {}
        for cert in chain[1:]:
            presented.setdefault(cert.subject.public_bytes(), []).append(cert)
        current = chain[0]
        for _depth in range(MAX_CHAIN):
            hit = keys.get(_key(current))
            if hit is not None:
                return hit
            issuer_name = current.issuer.public_bytes()
            nxt: x509.Certificate | None = None
            for candidate in anchors.get(issuer_name, []) + presented.get(issuer_name, []):
                if candidate is current or not _is_ca(candidate):
                    continue
                if _issued_by(current, candidate):
                    nxt = candidate
                    break
            if nxt is None:
                return None
            current = nxt
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        # X.509 v1 roots (still found in old system bundles) carry no extensions.
        return cert.version is x509.Version.v1
    except ValueError:
        return False


@_dsa_quiet
def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; unreadable entries are skipped."""
    try:
        with warnings.catch_warnings():
            # System bundles hold a few old roots cryptography warns about (negative
            # serial numbers); they are still roots.
            warnings.simplefilter("ignore")
            return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        out: list[x509.Certificate] = []
        for block in data.split(b"-----END CERTIFICATE-----"):
            start = block.find(b"-----BEGIN CERTIFICATE-----")
            if start >= 0:
                with contextlib.suppress(ValueError):
                    out.append(x509.load_pem_x509_certificate(
                        block[start:] + b"-----END CERTIFICATE-----\n"))
        return out


# --------------------------------------------------------------------------- judging


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@_dsa_quiet
def _key_weakness(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA {key.key_size} bits"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"EC {key.curve.name} ({key.curve.key_size} bits)"
    return None


@_dsa_quiet
def _key_text(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA"
        return f"{kind} {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.replace("PublicKey", "").lstrip("_")


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def _weak_signature(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        return algorithm.name
    return None


def _names(cert: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    except (x509.ExtensionNotFound, ValueError):
        dns, ips = [], []
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return dns, ips, cns


def _dns_match(pattern: str, name: str) -> bool:
    """RFC 6125 section 6.4: case-insensitive; a wildcard only as the whole left-most
    label, matching exactly one label, never in a public-suffix-like two-label pattern."""
    p = pattern.lower().rstrip(".")
    n = name.lower().rstrip(".")
    if p == n:
        return True
    if not p.startswith("*."):
        return False
    rest = p[2:]
    if rest.count(".") < 1 or "*" in rest:
        return False
    head, sep, tail = n.partition(".")
    return bool(sep and head and tail == rest)


def hostname_matches(cert: x509.Certificate, expected: str) -> bool:
    """Whether ``cert`` is valid for ``expected`` (a host name or an IP address): the
    subjectAltName decides; without one, a host name may match the subject CN."""
    dns, ips, cns = _names(cert)
    try:
        ip = ipaddress.ip_address(expected)
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(i) == ip for i in ips)
    if dns:
        return any(_dns_match(d, expected) for d in dns)
    if ips:
        return False
    return any(_dns_match(cn, expected) for cn in cns)


def assess(obs: TlsObservation, *, now: datetime, trust: TrustStore,
           location: Location) -> list[Finding]:
    """Findings for one observed TLS endpoint."""
    out: list[Finding] = []
    if obs.accepted_old:
        out.append(rules.TLS_OLD_PROTOCOL.at(
            location, f"accepts {', '.join(obs.accepted_old)} (below TLS 1.2)",
            evidence={"accepted": obs.accepted_old, "negotiated": obs.version}))
    if obs.weak_suites:
        out.append(rules.TLS_WEAK_CIPHER.at(
            location, f"accepts weak cipher suites: {', '.join(obs.weak_suites)}",
            evidence={"suites": obs.weak_suites}))
    kex: dict[str, object] = {}
    problems = []
    if obs.rsa_kex:
        kex["static_rsa_suites"] = obs.rsa_kex
        problems.append("static RSA key exchange (no forward secrecy)")
    if obs.dh_bits is not None and obs.dh_bits < MIN_DH_BITS:
        kex["dh_bits"] = obs.dh_bits
        problems.append(f"a {obs.dh_bits}-bit Diffie-Hellman group")
    if obs.curve_bits is not None and obs.curve_bits < MIN_EC_BITS:
        kex["curve"] = obs.curve
        problems.append(f"the {obs.curve_bits}-bit curve {obs.curve}")
    if problems:
        out.append(rules.TLS_WEAK_KEY_EXCHANGE.at(
            location, "accepts " + " and ".join(problems), evidence=kex))
    out.extend(_assess_chain(obs, now=now, trust=trust, location=location))
    return out


def _assess_chain(obs: TlsObservation, *, now: datetime, trust: TrustStore,
                  location: Location) -> list[Finding]:
    chain: list[x509.Certificate] = []
    for der in obs.chain:
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError:
            break
    if not chain:
        return []
    out: list[Finding] = []
    leaf = chain[0]
    subject = _subject(leaf)
    not_after = leaf.not_valid_after_utc
    not_before = leaf.not_valid_before_utc
    dates = {"subject": subject, "not_before": not_before.isoformat(),
             "not_after": not_after.isoformat()}
    if not_after <= now:
        out.append(rules.TLS_CERT_EXPIRED.at(
            location, f"certificate {subject} expired on {not_after:%Y-%m-%d}",
            evidence=dates))
    elif not_after - now <= EXPIRY_WARNING:
        days = (not_after - now).days
        out.append(rules.TLS_CERT_EXPIRING.at(
            location, f"certificate {subject} expires in {days} days "
            f"({not_after:%Y-%m-%d})", evidence=dates))
    if not_before > now:
        out.append(rules.TLS_CERT_NOT_YET_VALID.at(
            location, f"certificate {subject} is not valid before {not_before:%Y-%m-%d}",
            evidence=dates))
    anchor = trust.anchor_for(chain)
    if anchor is None:
        if _self_signed(leaf):
            out.append(rules.TLS_SELF_SIGNED.at(
                location, f"self-signed certificate {subject}",
                evidence={"subject": subject, "sha256": leaf.fingerprint(
                    hashes.SHA256()).hex()}))
        else:
            issuer = leaf.issuer.rfc4514_string()
            out.append(rules.TLS_UNTRUSTED_CA.at(
                location, f"certificate {subject} is issued by {issuer}, which is neither "
                "the fleet's CA nor a trusted root",
                evidence={"subject": subject, "issuer": issuer,
                          "chain": [_subject(c) for c in chain]}))
    expected = obs.server_name or obs.host
    if not hostname_matches(leaf, expected):
        dns, ips, cns = _names(leaf)
        out.append(rules.TLS_HOSTNAME_MISMATCH.at(
            location, f"certificate {subject} is not valid for {expected}",
            evidence={"expected": expected, "san_dns": dns, "san_ip": ips,
                      "common_name": cns}))
    weak = [(c, w) for c in chain if (w := _key_weakness(c)) is not None]
    if weak:
        out.append(rules.TLS_WEAK_KEY.at(
            location, "weak key: " + "; ".join(f"{_subject(c)}: {w}" for c, w in weak),
            evidence={"certificates": [f"{_subject(c)}: {w}" for c, w in weak],
                      "leaf_key": _key_text(leaf)}))
    signed = [(c, h) for c in chain if not _self_signed(c)
              and (h := _weak_signature(c)) is not None]
    if signed:
        out.append(rules.TLS_WEAK_SIGNATURE.at(
            location, "signed with a broken hash: "
            + "; ".join(f"{_subject(c)}: {h}" for c, h in signed),
            evidence={"certificates": [f"{_subject(c)}: {h}" for c, h in signed]}))
    return out
