"""An EST client (RFC 7030, with RFC 8951's clarifications) for devices.

::

    from iotsec.device import EstClient

    est = EstClient("https://iotsec.example:8444", ca_file="ca.pem")
    chain = est.cacerts()
    cert = est.simpleenroll(csr_der, basic=("es_...", secret))
    cert = est.simplereenroll(csr_der, "cert.pem", "key.pem")

- Only the standard library's ``http.client`` and ``ssl``: TLS 1.2 or newer, the server's
  certificate checked against the CA file the device was given and against the host name
  of the URL; nothing else is trusted.
- The client authenticates with a bootstrap secret over HTTP Basic (RFC 7030 3.2.3: the
  username is the secret's id) or with a certificate in the TLS handshake (a claim
  certificate for ``simpleenroll``, the device's current one for ``simplereenroll``).
  Secrets are sent only over TLS and never appear in an error message.
- Answers are bounded (:data:`MAX_EST_RESPONSE`) and parsed with :mod:`iotsec.pki.est`;
  the certificate returned is the one whose public key is the CSR's.
- Statuses become iotsec errors: 202 raises :class:`~iotsec.errors.EnrolmentPending`
  (with the server's ``Retry-After``), 401 :class:`~iotsec.errors.EnrolmentAuthError`, 403
  :class:`~iotsec.errors.EnrolmentForbiddenError`, 429
  :class:`~iotsec.errors.ThrottledError`, other refusals
  :class:`~iotsec.errors.InvalidInputError` or :class:`~iotsec.errors.EstError`.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import http.client
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from iotsec import __version__
from iotsec.errors import (
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    EnrolmentPending,
    EstError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    ThrottledError,
)
from iotsec.pki.est import (
    CONTENT_CSRATTRS,
    CONTENT_PKCS7,
    CONTENT_PKCS8,
    CONTENT_PKCS10,
    MAX_EST_BODY,
    decode_base64_body,
    encode_base64_body,
    read_certs_only,
)

__all__ = ["DEFAULT_RETRY_AFTER", "MAX_EST_RESPONSE", "MAX_RETRY_AFTER", "WELL_KNOWN",
           "ClientCert", "EstClient", "ServerKey", "parse_label", "parse_retry_after"]

#: The largest answer read from an EST server (a certificate chain, CSR attributes, a
#: server-generated key with its certificate): base64 bodies are decoded up to the same
#: bound as a request's.
MAX_EST_RESPONSE: Final = MAX_EST_BODY
WELL_KNOWN: Final = "/.well-known/est"
#: ``Retry-After`` is honoured up to a day; a missing or garbled one means a minute.
MAX_RETRY_AFTER: Final = 86_400
DEFAULT_RETRY_AFTER: Final = 60
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTENT_MULTIPART = "multipart/mixed"
_MAX_SERVER_TEXT = 200

#: A certificate file and its key file, presented in the TLS handshake.
ClientCert = tuple[str | Path, str | Path]


@dataclass(frozen=True, slots=True)
class ServerKey:
    """What ``serverkeygen`` returns: the key the server made (PKCS#8 DER, unencrypted:
    write it somewhere private at once) and its certificate."""

    key_pkcs8_der: bytes
    certificate: x509.Certificate

    def key_pem(self) -> bytes:
        key = serialization.load_der_private_key(self.key_pkcs8_der, password=None)
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    retry_after: str | None
    body: bytes


def parse_label(label: str) -> str:
    """An EST label (``/.well-known/est/<label>/``): letters, digits, ``.``, ``_``, ``-``."""
    if not _LABEL.fullmatch(label):
        raise InvalidInputError(f"{label[:70]!r} is not an EST label",
                                hint="a label is 1 to 64 letters, digits, '.', '_' or '-', "
                                "starting with a letter or digit")
    return label


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> int:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date),
    between 1 and :data:`MAX_RETRY_AFTER`; :data:`DEFAULT_RETRY_AFTER` if it is missing or
    garbled."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 10:
        seconds = int(text)
    else:
        try:
            moment = parsedate_to_datetime(text[:64])
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int((moment - (now or datetime.now(UTC))).total_seconds())
    return min(max(seconds, 1), MAX_RETRY_AFTER)


def _server_text(body: bytes) -> str:
    """The first line of a refusal's text, printable and short (it goes into a message)."""
    line = body[:_MAX_SERVER_TEXT * 2].decode("utf-8", "replace").strip().split("\n", 1)[0]
    line = "".join(c if c.isprintable() else "?" for c in line)[:_MAX_SERVER_TEXT]
    return f": {line}" if line else ""


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _certificate_for(certs: list[x509.Certificate], key: PublicKeyTypes,
                     what: str) -> x509.Certificate:
    wanted = _spki(key)
    for cert in certs:
        if _spki(cert.public_key()) == wanted:
            return cert
    raise EstError(f"the EST server's {what} answer holds no certificate for the key sent")


def _csr_key(csr_der: bytes) -> PublicKeyTypes:
    if len(csr_der) > MAX_EST_BODY:
        raise InvalidInputError(f"the CSR is larger than {MAX_EST_BODY} bytes")
    try:
        return x509.load_der_x509_csr(csr_der).public_key()
    except ValueError:
        raise InvalidInputError("the CSR is not a DER PKCS#10 request") from None


class EstClient:
    """A client of one EST server (and one label, if given). Every call opens its own
    connection, so one client may be used from several threads."""

    def __init__(self, base_url: str, *, ca_file: str | Path, label: str | None = None,
                 timeout: float = 30.0) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidInputError(f"{base_url[:80]!r} is not an https:// URL",
                                    hint="give the EST server as https://HOST:PORT")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise InvalidInputError("the EST server URL must not carry credentials, a query "
                                    "or a fragment", hint="give it as https://HOST:PORT")
        if parts.path.rstrip("/") not in ("", WELL_KNOWN):
            raise InvalidInputError(f"the EST server URL's path must be empty or {WELL_KNOWN}",
                                    hint="give it as https://HOST:PORT")
        try:
            self.port = parts.port or 443
        except ValueError:
            raise InvalidInputError(f"{base_url[:80]!r} has an invalid port") from None
        if not 0.1 <= timeout <= 600:
            raise InvalidInputError("the timeout must be between 0.1 and 600 seconds")
        self.host = parts.hostname
        self.label = parse_label(label) if label is not None else None
        self.ca_file = Path(ca_file)
        self.timeout = timeout
        self._context(None)  # an unreadable CA file is refused now, not at the first call

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{self._path('')}".rstrip("/")

    def __repr__(self) -> str:
        return f"EstClient({self.url!r})"

    def _path(self, op: str) -> str:
        return f"{WELL_KNOWN}/{self.label}/{op}" if self.label else f"{WELL_KNOWN}/{op}"

    def _context(self, client_cert: ClientCert | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise InvalidInputError(f"cannot read the CA file {self.ca_file}: "
                                    f"{exc.strerror or exc}",
                                    hint="give the iotsec CA chain ('iotsec ca chain')"
                                    ) from None
        if client_cert is not None:
            cert, key = client_cert
            try:
                ctx.load_cert_chain(str(cert), str(key))
            except (ssl.SSLError, OSError) as exc:
                raise InvalidInputError(f"cannot load the certificate {cert} with its key "
                                        f"{key}: {exc.strerror or exc}",
                                        hint="give a PEM certificate and the PEM key that "
                                        "matches it") from None
        return ctx

    # --- one exchange ---------------------------------------------------------------------

    def _exchange(self, method: str, op: str, *, body: bytes | None = None,
                  content_type: str | None = None, basic: tuple[str, str] | None = None,
                  client_cert: ClientCert | None = None) -> _Answer:
        headers = {"User-Agent": f"iotsec-device/{__version__}", "Connection": "close",
                   "Accept": "*/*"}
        if body is not None and content_type is not None:
            headers["Content-Type"] = content_type
            headers["Content-Transfer-Encoding"] = "base64"
        if basic is not None:
            headers["Authorization"] = "Basic " + _basic_credentials(*basic)
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self._context(client_cert))
        where = f"the EST server at {self.host}:{self.port}"
        try:
            conn.request(method, self._path(op), body=body, headers=headers)
            response = conn.getresponse()
            data = _read_bounded(response)
            return _Answer(response.status, response.getheader("Content-Type") or "",
                           response.getheader("Retry-After"), data)
        except ssl.SSLCertVerificationError as exc:
            raise EstError(f"{where} is not trusted: {exc.verify_message}",
                           hint="give the CA chain that issued the server's certificate, and "
                           "a URL with a host name the certificate names") from None
        except ssl.SSLError as exc:
            raise EstError(f"TLS with {where} failed: {exc.reason or exc}",
                           hint="the server refused the connection or the certificate "
                           "presented") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EstError(f"cannot talk to {where}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def _call(self, method: str, op: str, *, expect: str, body: bytes | None = None,
              content_type: str | None = None, basic: tuple[str, str] | None = None,
              client_cert: ClientCert | None = None) -> _Answer:
        """A 200 answer of type ``expect`` (or a 204); any other status raises the iotsec
        error it means."""
        answer = self._exchange(method, op, body=body, content_type=content_type,
                                basic=basic, client_cert=client_cert)
        if answer.status == 204:
            return answer
        if answer.status == 200:
            media = answer.content_type.split(";", 1)[0].strip().lower()
            if media != expect:
                raise EstError(f"the EST server answered {op} with {media or 'no type'}, "
                               f"not {expect}")
            return answer
        raise _refusal(op, answer)

    # --- operations -----------------------------------------------------------------------

    def cacerts(self, *, client_cert: ClientCert | None = None) -> list[x509.Certificate]:
        """The CA certificates the server issues under (``GET cacerts``). With
        ``client_cert``, the request also shows that the server accepts that certificate
        and key in the TLS handshake."""
        answer = self._call("GET", "cacerts", expect=CONTENT_PKCS7, client_cert=client_cert)
        return self._certs(answer.body, "cacerts")

    def csrattrs(self) -> bytes:
        """What the server wants a CSR to contain (``GET csrattrs``): DER CsrAttrs, empty
        when it has no wish."""
        data = self._call("GET", "csrattrs", expect=CONTENT_CSRATTRS).body
        try:
            return decode_base64_body(data) if data.strip() else b""
        except IotsecError as exc:
            raise EstError(f"the EST server's csrattrs answer does not decode: {exc}"
                           ) from None

    def simpleenroll(self, csr_der: bytes, *, basic: tuple[str, str] | None = None,
                     client_cert: ClientCert | None = None) -> x509.Certificate:
        """Enrol (``POST simpleenroll``) with a bootstrap secret (``basic=(id, secret)``)
        or a claim certificate (``client_cert=(cert_file, key_file)``); the certificate
        issued for the CSR's key. 202 raises :class:`~iotsec.errors.EnrolmentPending`."""
        if (basic is None) == (client_cert is None):
            raise InvalidInputError("enrol with either a bootstrap secret or a claim "
                                    "certificate")
        return self._enrol("simpleenroll", csr_der, basic=basic, client_cert=client_cert)

    def simplereenroll(self, csr_der: bytes, cert_file: str | Path,
                       key_file: str | Path) -> x509.Certificate:
        """Renew (``POST simplereenroll``) over mutual TLS with the device's current
        certificate and key; the new certificate for the CSR's (new) key."""
        return self._enrol("simplereenroll", csr_der, client_cert=(cert_file, key_file))

    def serverkeygen(self, csr_der: bytes, *, basic: tuple[str, str] | None = None,
                     client_cert: ClientCert | None = None) -> ServerKey:
        """For a device that cannot make a key (``POST serverkeygen``): the server makes it
        and returns it with its certificate. The CSR proves who asks; its key is not
        used."""
        if (basic is None) == (client_cert is None):
            raise InvalidInputError("ask with either a bootstrap secret or a certificate")
        _csr_key(csr_der)
        answer = self._call("POST", "serverkeygen", expect=_CONTENT_MULTIPART,
                            body=encode_base64_body(csr_der), content_type=CONTENT_PKCS10,
                            basic=basic, client_cert=client_cert)
        return self._server_key(answer)

    # --- answers --------------------------------------------------------------------------

    def _enrol(self, op: str, csr_der: bytes, *, basic: tuple[str, str] | None = None,
               client_cert: ClientCert | None = None) -> x509.Certificate:
        key = _csr_key(csr_der)
        answer = self._call("POST", op, expect=CONTENT_PKCS7,
                            body=encode_base64_body(csr_der), content_type=CONTENT_PKCS10,
                            basic=basic, client_cert=client_cert)
        return _certificate_for(self._certs(answer.body, op), key, op)

    @staticmethod
    def _certs(body: bytes, op: str) -> list[x509.Certificate]:
        try:
            certs = read_certs_only(decode_base64_body(body))
        except IotsecError as exc:
            raise EstError(f"the EST server's {op} answer is not a certs-only PKCS#7: "
                           f"{exc}") from None
        if not certs:
            raise EstError(f"the EST server's {op} answer holds no certificate")
        return certs

    def _server_key(self, answer: _Answer) -> ServerKey:
        # The MIME parser needs the answer's Content-Type (it names the boundary) in front
        # of the body; a header value cannot hold a line break, so it adds no other header.
        head = f"Content-Type: {answer.content_type}\r\n\r\n".encode("latin-1", "replace")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head + answer.body)
        key_der: bytes | None = None
        certs: list[x509.Certificate] = []
        for part in message.iter_parts() if isinstance(message, EmailMessage) else ():
            if not isinstance(part, EmailMessage):
                continue
            media = part.get_content_type()
            raw = part.get_payload(decode=False)
            payload = raw.encode("ascii", "replace") if isinstance(raw, str) else b""
            if media == CONTENT_PKCS8:
                try:
                    key_der = decode_base64_body(payload)
                except IotsecError:
                    raise EstError("the server-generated key does not decode") from None
            elif media == CONTENT_PKCS7:
                certs = self._certs(payload, "serverkeygen")
        if key_der is None or not certs:
            raise EstError("the EST server's serverkeygen answer lacks the key or the "
                           "certificate")
        try:
            key = serialization.load_der_private_key(key_der, password=None)
        except (ValueError, TypeError):
            raise EstError("the server-generated key is not a PKCS#8 key") from None
        return ServerKey(key_der, _certificate_for(certs, key.public_key(), "serverkeygen"))


def _basic_credentials(secret_id: str, secret: str) -> str:
    if not secret_id or ":" in secret_id or not secret:
        raise InvalidInputError("an enrolment secret needs an id (without ':') and a secret")
    if any(not c.isprintable() for c in secret_id + secret):
        raise InvalidInputError("the enrolment secret id or secret holds control characters")
    return base64.b64encode(f"{secret_id}:{secret}".encode()).decode("ascii")


def _read_bounded(response: http.client.HTTPResponse) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_EST_RESPONSE:
        raise EstError(f"the EST server's answer is larger than {MAX_EST_RESPONSE} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        piece = response.read(min(64 * 1024, MAX_EST_RESPONSE + 1 - total))
        if not piece:
            return b"".join(chunks)
        chunks.append(piece)
        total += len(piece)
        if total > MAX_EST_RESPONSE:
            raise EstError(f"the EST server's answer is larger than {MAX_EST_RESPONSE} bytes")


def _refusal(op: str, answer: _Answer) -> IotsecError:
    status, says = answer.status, _server_text(answer.body)
    if status == 202:
        wait = parse_retry_after(answer.retry_after)
        return EnrolmentPending(f"the enrolment awaits an operator's approval; ask again in "
                                f"{wait} s", retry_after=wait)
    if status == 401:
        return EnrolmentAuthError(f"the EST server did not accept the credential{says}")
    if status == 403:
        return EnrolmentForbiddenError(f"the EST server refused {op}{says}")
    if status == 429:
        return ThrottledError(f"the EST server throttles this client{says}",
                              retry_after=parse_retry_after(answer.retry_after))
    if status == 404:
        return NotFoundError(f"the EST server has no {op} here{says}",
                             hint="check the URL and the label")
    if status in (400, 411, 413, 415, 422):
        return InvalidInputError(f"the EST server refused the {op} request ({status}){says}")
    retry = parse_retry_after(answer.retry_after) if answer.retry_after is not None else None
    return EstError(f"the EST server answered {op} with {status}{says}", retry_after=retry)
