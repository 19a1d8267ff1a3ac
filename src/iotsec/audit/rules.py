"""The fleet audit's rules. Their ids are a contract: the compliance reports map provisions
of standards to them. Tags follow :mod:`iotsec.scan.rules` (``cwe:N``, ``owasp-iot:IN``,
``etsi:5.x-y``)."""

from __future__ import annotations

from iotsec.findings.model import Rule, Severity

__all__ = ["ALL_RULES"]

CA_EXPIRING = Rule(
    "audit/ca-expiring", "CA certificate expiring", Severity.HIGH,
    "A root or issuing CA certificate expires soon (or has expired): every device "
    "certificate under it stops being trusted at that moment, and a new CA has to be "
    "distributed to every device and broker before then.",
    "plan the CA rotation now: 'iotsec ca rotate' (for a root: '--new-root', cross-signed) "
    "publishes the new CA to brokers and devices beside the old one; let devices re-enrol, "
    "then end the overlap with 'iotsec ca retire ID'",
    ("cwe:298", "owasp-iot:I8", "etsi:5.1-5"))
CA_WEAK_KEY = Rule(
    "audit/ca-weak-key", "CA key weaker than policy", Severity.HIGH,
    "A CA key is weaker than policy (RSA below 3072 bits, an EC curve below P-256) or its "
    "certificate is signed with SHA-1 or MD5: a forged CA signature forges every identity "
    "in the fleet.",
    "create a CA with an EC P-256/P-384 or RSA 3072+ key and SHA-256 signatures, and "
    "re-issue the certificates under it",
    ("cwe:326", "cwe:327", "owasp-iot:I7", "etsi:5.5-4"))
DEVICE_CERT_EXPIRING = Rule(
    "audit/device-cert-expiring", "Device certificate expiring", Severity.MEDIUM,
    "An active device's newest valid certificate expires soon, or all its certificates "
    "have expired: the device will be (or already is) locked out of the broker and API.",
    "renew the certificate from a new CSR: iotsec cert renew SERIAL --csr FILE",
    ("cwe:298", "etsi:5.1-5"))
DEVICE_CERT_OLD = Rule(
    "audit/device-cert-old", "Device certificate overdue for rotation", Severity.LOW,
    "A device certificate in use was issued longer ago than the rotation policy allows: "
    "the longer a key is in use, the longer a stolen one stays useful.",
    "rotate it: iotsec cert renew SERIAL --csr FILE (the old certificate is superseded)",
    ("cwe:324", "etsi:5.5-8"))
DEVICE_WEAK_KEY = Rule(
    "audit/device-weak-key", "Weak device key", Severity.HIGH,
    "A device certificate or a registered device token key is weaker than policy (RSA "
    "below 2048 bits, an EC curve below P-256, an unknown algorithm).",
    "have the device generate an EC P-256 key, issue a certificate for it and revoke the "
    "weak one",
    ("cwe:326", "owasp-iot:I7", "etsi:5.5-4"))
REVOKED_CERT_CONNECTING = Rule(
    "audit/revoked-cert-connecting", "Revoked certificate still in use", Severity.CRITICAL,
    "A certificate was used to connect or authenticate after it was revoked (or a device "
    "whose certificates are all revoked connected): revocation is not being enforced, "
    "e.g. the broker's CRL is stale.",
    "disable the device and bring the broker's CRL up to date: iotsec device disable ID; "
    "iotsec broker mosquitto sync DIR",
    ("cwe:299", "owasp-iot:I1", "etsi:5.1-1"))
REVOKED_CA_ACTIVE_CERTS = Rule(
    "audit/revoked-ca-active-certs", "Device certificates under a retired or revoked CA",
    Severity.HIGH,
    "An issuing CA is no longer active (or was revoked), but unrevoked, unexpired device "
    "certificates it issued remain: they keep authenticating under a CA the operator "
    "meant to retire.",
    "revoke them and re-issue under the active CA: iotsec cert revoke SERIAL --reason "
    "cACompromise (or superseded)",
    ("cwe:299", "etsi:5.1-1"))
SHARED_CERTIFICATE = Rule(
    "audit/shared-certificate", "Identity shared by several devices", Severity.HIGH,
    "The same certificate or public key is registered for several devices, or one "
    "identity was connected from several addresses at the same time: a cloned or leaked "
    "device identity.",
    "revoke the shared identity and give each device its own key: iotsec cert revoke "
    "SERIAL --reason keyCompromise",
    ("cwe:1189", "owasp-iot:I1", "etsi:5.1-1"))
CLIENT_ID_CONFLICT = Rule(
    "audit/client-id-conflict", "Conflicting MQTT client id", Severity.HIGH,
    "A second connection took over a device's session (a collision on its client id), or "
    "a client used a client id it does not own: two parties hold the identity or one is "
    "impersonating the other.",
    "find the second holder; revoke the device's certificates and re-provision it: "
    "iotsec cert revoke --device ID --reason keyCompromise",
    ("cwe:287", "owasp-iot:I1"))
POLICY_PERMISSIVE = Rule(
    "audit/policy-permissive", "Overly permissive policy rule", Severity.MEDIUM,
    "A role allows more than a device needs: wildcards over every topic, another device's "
    "topics, or any client id.",
    "narrow the rule (scope it with ${device.id}); edit the exported policy and apply it: "
    "iotsec policy export > policy.yaml; iotsec policy apply policy.yaml",
    ("cwe:732", "owasp-iot:I3", "etsi:5.6-1"))
POLICY_MISCONFIGURED = Rule(
    "audit/policy-misconfigured", "Misconfigured policy rule", Severity.LOW,
    "A rule never changes a decision (shadowed, or a deny that overlaps no allow), or a "
    "role is held by nobody: usually a typo that leaves the intended restriction unapplied.",
    "fix or remove the rule: iotsec policy export > policy.yaml; iotsec policy apply "
    "policy.yaml",
    ("cwe:1188", "owasp-iot:I3"))
BROKER_ANONYMOUS = Rule(
    "audit/broker-anonymous", "Broker accepts anonymous clients", Severity.CRITICAL,
    "The Mosquitto configuration allows anonymous clients: anyone who reaches the broker "
    "can publish commands and read telemetry.",
    "re-render the broker from iotsec (allow_anonymous false, mutual TLS): iotsec broker "
    "mosquitto render -o DIR",
    ("cwe:306", "owasp-iot:I1", "etsi:5.1-1"))
BROKER_PLAINTEXT = Rule(
    "audit/broker-plaintext-listener", "Broker listens without TLS", Severity.HIGH,
    "A broker listener accepts MQTT without TLS: credentials and messages cross the "
    "network in clear text.",
    "remove the plaintext listener (render without --plain-localhost): iotsec broker "
    "mosquitto render -o DIR",
    ("cwe:319", "owasp-iot:I7", "etsi:5.5-1"))
BROKER_CRL_MISSING = Rule(
    "audit/broker-crl-missing", "Broker without a CRL", Severity.CRITICAL,
    "A TLS listener of the broker has no CRL (or one it cannot read, or none for the "
    "issuing CA): revoked device certificates are accepted.",
    "sync the broker from the store: iotsec broker mosquitto sync DIR",
    ("cwe:299", "etsi:5.1-1"))
BROKER_CRL_STALE = Rule(
    "audit/broker-crl-stale", "Broker CRL stale", Severity.HIGH,
    "The broker's CRL is past or close to its nextUpdate (after which Mosquitto refuses "
    "every device), or older than the CRL in the store (revocations not enforced).",
    "sync the broker (and keep 'iotsec serve' running with IOTSEC_BROKER_DIR so it stays "
    "fresh): iotsec broker mosquitto sync DIR",
    ("cwe:299", "etsi:5.1-1"))
LOGGING_DISABLED = Rule(
    "audit/logging-disabled", "Security events not recorded", Severity.MEDIUM,
    "No security events were recorded in the audit window while devices are active, or "
    "the broker's log is not written or not ingested: attacks go unseen.",
    "ingest the broker log regularly (iotsec broker mosquitto ingest-log DIR, e.g. from "
    "cron) and keep the broker's connection logging on (iotsec broker mosquitto render -o "
    "DIR)",
    ("cwe:778", "owasp-iot:I8", "etsi:5.7-1"))
FIRMWARE_BELOW_COUNTER = Rule(
    "audit/firmware-below-counter", "Firmware below the channel's security counter",
    Severity.HIGH,
    "A device runs firmware whose security counter is below what its channel's current "
    "release carries: it lacks security fixes the fleet has already published.",
    "roll the current release out to it: iotsec ota campaign create ...",
    ("cwe:1104", "owasp-iot:I4", "owasp-iot:I5", "etsi:5.3-1"))
TOKEN_NO_EXPIRY = Rule(
    "audit/token-no-expiry", "Operator API token without expiry or unused", Severity.MEDIUM,
    "An operator API token never expires, or has not been used for a long time: a leaked "
    "or forgotten token stays valid indefinitely.",
    "create one with an expiry, then revoke it: iotsec token create NAME --scope SCOPE "
    "--expires 90d; iotsec token revoke ID",
    ("cwe:613", "owasp-iot:I1", "etsi:5.1-1"))

ALL_RULES: tuple[Rule, ...] = (
    CA_EXPIRING, CA_WEAK_KEY, DEVICE_CERT_EXPIRING, DEVICE_CERT_OLD, DEVICE_WEAK_KEY,
    REVOKED_CERT_CONNECTING, REVOKED_CA_ACTIVE_CERTS, SHARED_CERTIFICATE, CLIENT_ID_CONFLICT,
    POLICY_PERMISSIVE, POLICY_MISCONFIGURED, BROKER_ANONYMOUS, BROKER_PLAINTEXT,
    BROKER_CRL_MISSING, BROKER_CRL_STALE, LOGGING_DISABLED, FIRMWARE_BELOW_COUNTER,
    TOKEN_NO_EXPIRY,
)
