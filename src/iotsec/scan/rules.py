"""The scanner's rules: what each finding means and how to fix it.

Tags map a rule to weakness catalogues and to the standards the compliance reports use:
``cwe:N``; ``owasp-iot:I1``..``I10`` (OWASP IoT Top 10, 2018); ``etsi:5.x-y`` (ETSI EN 303
645 provisions).
"""

from __future__ import annotations

from iotsec.findings.model import Rule, Severity

__all__ = ["ALL_RULES"]

_TLS_FIX_VERSIONS = ("configure the server for TLS 1.2 and 1.3 only (OpenSSL: "
                     "MinProtocol = TLSv1.2; Mosquitto: tls_version tlsv1.2)")

PLAINTEXT_TELNET = Rule(
    "plaintext/telnet", "Telnet service", Severity.HIGH,
    "Telnet carries logins and the whole session in clear text, and on IoT devices it is "
    "the first door botnets try.",
    "disable Telnet on the device and use SSH with keys (or no remote shell at all)",
    ("cwe:319", "owasp-iot:I2", "owasp-iot:I9", "etsi:5.5-1", "etsi:5.6-1"))
PLAINTEXT_FTP = Rule(
    "plaintext/ftp", "FTP service", Severity.HIGH,
    "FTP sends user names, passwords and files in clear text.",
    "turn FTP off; move file transfer to SFTP, or to HTTPS with per-device credentials",
    ("cwe:319", "owasp-iot:I2", "owasp-iot:I7", "etsi:5.5-1", "etsi:5.6-1"))
PLAINTEXT_HTTP_LOGIN = Rule(
    "plaintext/http-login", "Login over plain HTTP", Severity.HIGH,
    "The service asks for a password (HTTP authentication or a login form) over plain "
    "HTTP, so the password crosses the network in clear text.",
    "serve the interface over HTTPS only and redirect or close port 80",
    ("cwe:319", "cwe:523", "owasp-iot:I3", "owasp-iot:I7", "etsi:5.5-1"))
PLAINTEXT_MQTT = Rule(
    "plaintext/mqtt", "MQTT without TLS", Severity.HIGH,
    "The broker accepts MQTT without TLS: device credentials, commands and telemetry cross "
    "the network in clear text and can be altered on the way.",
    "serve MQTT over TLS (port 8883) with client certificates, and remove the plain "
    "listener (Mosquitto: drop the 'listener 1883' block)",
    ("cwe:319", "owasp-iot:I7", "etsi:5.5-1", "etsi:5.5-2"))
PLAINTEXT_MODBUS = Rule(
    "plaintext/modbus", "Modbus/TCP exposed", Severity.HIGH,
    "Modbus/TCP has neither authentication nor encryption: anyone who reaches the port "
    "can read and write the device's registers and coils.",
    "keep Modbus/TCP on an isolated control network behind a firewall, or use Modbus/TCP "
    "Security (TLS, port 802)",
    ("cwe:306", "cwe:319", "owasp-iot:I3", "etsi:5.6-1"))
PLAINTEXT_COAP = Rule(
    "plaintext/coap", "CoAP without DTLS", Severity.MEDIUM,
    "The device answers CoAP requests without DTLS: resources are readable (and often "
    "writable) by anyone on the network, in clear text.",
    "use CoAP over DTLS (coaps, port 5684) or OSCORE, and close the plain CoAP port",
    ("cwe:306", "cwe:319", "owasp-iot:I3", "etsi:5.5-1"))

DTLS_NO_CLIENT_CERT = Rule(
    "dtls/no-client-certificate", "CoAP over DTLS without a client certificate",
    Severity.MEDIUM,
    "The DTLS server completes a handshake with a client that presents no certificate: "
    "any host on the network can open a session and send CoAP requests.",
    "require client certificates issued by the fleet's CA (iotsec gateway coap does), or "
    "protect every request end to end with OSCORE",
    ("cwe:306", "owasp-iot:I3", "etsi:5.5-1"))

MQTT_ANONYMOUS = Rule(
    "mqtt/anonymous", "MQTT broker accepts anonymous clients", Severity.CRITICAL,
    "The broker accepted a CONNECT without a user name, password or client certificate: "
    "anyone who reaches it can publish commands and read telemetry.",
    "require authentication (Mosquitto: allow_anonymous false, with password_file or "
    "require_certificate true)",
    ("cwe:306", "owasp-iot:I1", "owasp-iot:I3", "etsi:5.1-1", "etsi:5.5-4"))
MQTT_WILDCARD = Rule(
    "mqtt/wildcard-subscribe", "MQTT broker grants a '#' subscription", Severity.HIGH,
    "The broker granted a subscription to '#', every topic, to a client that holds no "
    "special right: it receives every message of every device.",
    "restrict subscriptions with an ACL (Mosquitto: acl_file with per-client patterns such "
    "as 'pattern read devices/%c/#'; iotsec: 'iotsec policy apply')",
    ("cwe:284", "owasp-iot:I3", "etsi:5.5-4"))

CREDENTIALS_DEFAULT = Rule(
    "credentials/default", "Default or weak credentials", Severity.CRITICAL,
    "The service accepted a user name and password from the well-known default and botnet "
    "lists: the first thing an attacker (or Mirai) tries.",
    "set a unique, strong password per device (or disable password login), and check the "
    "provisioning process so no device ships with a shared default",
    ("cwe:1392", "cwe:521", "owasp-iot:I1", "etsi:5.1-1", "etsi:5.1-2"))
CREDENTIALS_ANY = Rule(
    "credentials/accepts-any", "Service accepts any credentials", Severity.CRITICAL,
    "The service accepted a random user name and password it cannot know (the control "
    "attempt): authentication is not enforced at all.",
    "enable authentication on the service, then check that wrong credentials are refused",
    ("cwe:287", "cwe:306", "owasp-iot:I1", "etsi:5.1-1"))
CREDENTIALS_ANY_PASSWORD = Rule(
    "credentials/any-password", "Service accepts any password for a user", Severity.CRITICAL,
    "The service accepted a known user name with a random password: the password of that "
    "user is not checked.",
    "set a password for that account (or lock it) and check that wrong passwords are "
    "refused",
    ("cwe:287", "owasp-iot:I1", "etsi:5.1-1"))

TLS_OLD_PROTOCOL = Rule(
    "tls/old-protocol", "Protocol versions below TLS 1.2 accepted", Severity.HIGH,
    "SSLv3, TLS 1.0 and TLS 1.1 are deprecated (RFC 8996) and open to downgrade and "
    "padding-oracle attacks.",
    _TLS_FIX_VERSIONS, ("cwe:327", "cwe:757", "owasp-iot:I7", "etsi:5.5-1"))
TLS_WEAK_CIPHER = Rule(
    "tls/weak-cipher", "Weak cipher suites accepted", Severity.HIGH,
    "The server negotiates cipher suites without encryption or authentication, or with "
    "broken ciphers (export grade, DES, 3DES, RC4, IDEA, MD5).",
    "allow only AEAD suites with ECDHE (OpenSSL: 'ECDHE+AESGCM:ECDHE+CHACHA20')",
    ("cwe:327", "owasp-iot:I7", "etsi:5.5-1"))
TLS_WEAK_KEY_EXCHANGE = Rule(
    "tls/weak-key-exchange", "Weak key exchange accepted", Severity.MEDIUM,
    "The server accepts static RSA key exchange (no forward secrecy: its key decrypts "
    "recorded traffic), a Diffie-Hellman group under 2048 bits, or a curve under 224 bits.",
    "use ECDHE (X25519, P-256) key exchange only, or DHE with groups of 2048 bits or more",
    ("cwe:326", "cwe:327", "owasp-iot:I7", "etsi:5.5-1"))
TLS_CERT_EXPIRED = Rule(
    "tls/cert-expired", "Certificate expired", Severity.HIGH,
    "The server's certificate is past its notAfter date: clients that check fail, and "
    "clients that do not check can be fooled by any certificate.",
    "renew the certificate (iotsec: 'iotsec cert renew SERIAL') and automate renewal",
    ("cwe:298", "owasp-iot:I7", "etsi:5.5-1"))
TLS_CERT_EXPIRING = Rule(
    "tls/cert-expiring", "Certificate expires within 30 days", Severity.MEDIUM,
    "The server's certificate expires within 30 days.",
    "renew the certificate now (iotsec: 'iotsec cert renew SERIAL')",
    ("cwe:298", "etsi:5.5-1"))
TLS_CERT_NOT_YET_VALID = Rule(
    "tls/cert-not-yet-valid", "Certificate not yet valid", Severity.MEDIUM,
    "The server's certificate is not valid before a date in the future: a wrong clock on "
    "the issuer or the device.",
    "check the clocks of the CA and the device (NTP), then reissue the certificate",
    ("cwe:298",))
TLS_SELF_SIGNED = Rule(
    "tls/self-signed", "Self-signed certificate", Severity.HIGH,
    "The server presents a self-signed certificate that is not a known trust anchor: "
    "clients cannot tell it from an attacker's.",
    "issue the server certificate from the fleet's CA ('iotsec' issues server "
    "certificates), or add this certificate to the trusted CAs if it is one on purpose",
    ("cwe:295", "owasp-iot:I7", "etsi:5.5-1"))
TLS_UNTRUSTED_CA = Rule(
    "tls/untrusted-ca", "Certificate from an unknown CA", Severity.HIGH,
    "The server's certificate chain leads neither to the fleet's CA nor to a trusted root.",
    "issue the certificate from the fleet's CA or a trusted CA, and send the whole chain "
    "(intermediates included)",
    ("cwe:295", "owasp-iot:I7", "etsi:5.5-1"))
TLS_HOSTNAME_MISMATCH = Rule(
    "tls/hostname-mismatch", "Certificate does not match the host", Severity.MEDIUM,
    "The certificate names neither the host name nor the address the service was reached "
    "by: clients that check refuse it, clients that do not accept any certificate.",
    "reissue the certificate with the service's DNS names and addresses in its "
    "subjectAltName",
    ("cwe:297", "owasp-iot:I7"))
TLS_WEAK_KEY = Rule(
    "tls/weak-key", "Weak certificate key", Severity.HIGH,
    "A certificate in the chain has an RSA key under 2048 bits, a DSA key, or an elliptic "
    "curve key under 224 bits.",
    "generate a new key (ECDSA P-256 or RSA 3072) and reissue the certificate",
    ("cwe:326", "owasp-iot:I7", "etsi:5.5-1"))
TLS_WEAK_SIGNATURE = Rule(
    "tls/weak-signature", "Certificate signed with MD5 or SHA-1", Severity.MEDIUM,
    "A certificate in the chain is signed with a broken hash function: its signature can "
    "be forged with a chosen-prefix collision.",
    "reissue the certificate with a SHA-256 (or stronger) signature",
    ("cwe:328", "owasp-iot:I7"))

ALL_RULES: tuple[Rule, ...] = (
    PLAINTEXT_TELNET, PLAINTEXT_FTP, PLAINTEXT_HTTP_LOGIN, PLAINTEXT_MQTT, PLAINTEXT_MODBUS,
    PLAINTEXT_COAP, DTLS_NO_CLIENT_CERT, MQTT_ANONYMOUS, MQTT_WILDCARD, CREDENTIALS_DEFAULT,
    CREDENTIALS_ANY, CREDENTIALS_ANY_PASSWORD, TLS_OLD_PROTOCOL, TLS_WEAK_CIPHER,
    TLS_WEAK_KEY_EXCHANGE, TLS_CERT_EXPIRED, TLS_CERT_EXPIRING, TLS_CERT_NOT_YET_VALID,
    TLS_SELF_SIGNED, TLS_UNTRUSTED_CA, TLS_HOSTNAME_MISMATCH, TLS_WEAK_KEY, TLS_WEAK_SIGNATURE,
)
