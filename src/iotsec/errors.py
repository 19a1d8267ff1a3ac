"""The one error hierarchy of iotsec.

Every error says what was wrong (``str(err)``) and what to do about it (``err.hint``).
The CLI prints both on one line and exits 1; the API answers RFC 9457 problem+json
with ``err.status``. Foreign exceptions are translated at the boundary with
``raise ... from exc`` and never leak secrets: messages name objects, not key material.
"""

from __future__ import annotations


class IotsecError(Exception):
    """Base of every error iotsec raises on purpose."""

    #: HTTP status used by the API for this family of errors.
    status: int = 400
    #: Short, stable machine-readable code (the last part of the problem type URI).
    code: str = "error"
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


# --- input -----------------------------------------------------------------------------


class InvalidInputError(IotsecError):
    """Input that cannot be parsed or does not meet a stated rule."""

    status = 422
    code = "invalid-input"


class MalformedInputError(InvalidInputError):
    """Bytes that are not what they claim to be (garbage PEM/DER, truncated data)."""

    status = 400
    code = "malformed-input"


class InputTooLargeError(InvalidInputError):
    """Input over a parser's stated size limit; rejected before it is read whole."""

    status = 413
    code = "input-too-large"


# --- objects ---------------------------------------------------------------------------


class NotFoundError(IotsecError):
    status = 404
    code = "not-found"


class ConflictError(IotsecError):
    """The request contradicts the current state (already exists, already revoked)."""

    status = 409
    code = "conflict"


# --- domains ---------------------------------------------------------------------------


class ConfigError(IotsecError):
    status = 500
    code = "config"


class HomeNotInitialisedError(ConfigError):
    code = "not-initialised"
    default_hint = "run 'iotsec init' first (or set IOTSEC_HOME to an initialised home)"


class StoreError(IotsecError):
    status = 503
    code = "store"


class KeyCustodyError(IotsecError):
    status = 500
    code = "key-custody"


class PkiError(IotsecError):
    status = 422
    code = "pki"


class CsrError(PkiError):
    """A certificate signing request that is malformed, forged or too weak."""

    code = "bad-csr"


class WeakKeyError(CsrError):
    code = "weak-key"


class RegistryError(IotsecError):
    status = 422
    code = "registry"


class InvalidDeviceIdError(RegistryError, InvalidInputError):
    code = "invalid-device-id"
    default_hint = (
        "a device id starts with a letter or digit and has at most 128 characters "
        "from A-Z a-z 0-9 . _ : -"
    )


class DeviceStateError(RegistryError, ConflictError):
    status = 409
    code = "device-state"


class AuthError(IotsecError):
    status = 401
    code = "unauthorized"
    default_hint = "send 'Authorization: Bearer <admin token>' (printed once by 'iotsec init')"


class ForbiddenError(IotsecError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class PolicyError(InvalidInputError):
    """A role, rule or policy document that is not valid."""

    code = "invalid-policy"


class ThrottledError(AuthError):
    """Too many failures from one source; try again later."""

    status = 429
    code = "throttled"
    default_hint = "wait before trying again"

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


# --- device tokens ---------------------------------------------------------------------


class TokenError(AuthError):
    """A device token (JWT) that is not accepted. Each subclass names one reason; messages
    never contain the token, a secret or key material."""

    code = "invalid-device-token"
    default_hint = "the device must sign a fresh token with its registered key"


class TokenMalformedError(TokenError):
    """Not a compact JWS JWT: wrong shape, bad base64url or JSON, or over the size limit."""

    code = "device-token-malformed"
    default_hint = "send a compact JWT: three base64url parts separated by '.'"


class TokenAlgorithmError(TokenError):
    """``alg`` is missing, ``none``, or not the algorithm bound to the device's key."""

    code = "device-token-algorithm"
    default_hint = "sign with the algorithm of the registered key (ES256, EdDSA or HS256)"


class TokenUnknownKeyError(TokenError):
    """No key of the device has the token's ``kid`` (or the token names no ``kid``)."""

    code = "device-token-unknown-key"
    default_hint = "put the kid of a key registered for the device in the token header"


class TokenKeyRevokedError(TokenError):
    """The token names a key (or certificate) that has been revoked."""

    code = "device-token-key-revoked"
    default_hint = "register a new key for the device and sign with it"


class TokenKeyExpiredError(TokenError):
    """The token names a key that is no longer valid: an expired certificate, or a legacy
    secret whose rotation grace period is over."""

    code = "device-token-key-expired"
    default_hint = "sign with the device's current key or secret"


class TokenSignatureError(TokenError):
    """The signature does not verify with the key the token names."""

    code = "device-token-signature"
    default_hint = "sign the token with the private key (or secret) registered for the device"


class TokenExpiredError(TokenError):
    code = "device-token-expired"
    default_hint = "have the device sign a new token (and check its clock)"


class TokenNotYetValidError(TokenError):
    """``iat`` or ``nbf`` lies in the future beyond the allowed clock skew."""

    code = "device-token-not-yet-valid"
    default_hint = "check the device's clock"


class TokenAudienceError(TokenError):
    code = "device-token-audience"
    default_hint = "set 'aud' to this deployment's name (the IOTSEC_DEPLOYMENT setting)"


class TokenClaimsError(TokenError):
    """A required claim is missing or invalid (iss, sub, jti, iat, exp), ``iss`` differs
    from ``sub``, or the lifetime is longer than allowed."""

    code = "device-token-claims"
    default_hint = ("set iss and sub to the device id, a unique jti, iat, and an exp within "
                    "the maximum lifetime")


class TokenReplayError(TokenError):
    """The token's ``jti`` has been seen before within its lifetime."""

    code = "device-token-replayed"
    default_hint = "sign a new token with a fresh jti for every use"


class TokenDeviceError(TokenError):
    """The device named by the token may not authenticate (disabled or retired)."""

    code = "device-token-device-state"
    default_hint = "check the device's state with 'iotsec device show'"


# --- firmware --------------------------------------------------------------------------


class FirmwareError(IotsecError):
    """A firmware image (MCUboot format) or a firmware signing key that is not accepted.
    Each subclass names one reason; a verifier raises exactly one of them."""

    status = 422
    code = "firmware"


class ImageReadError(FirmwareError):
    """The image could not be read (an I/O error from the file or stream)."""

    code = "firmware-read"
    default_hint = "check that the image file is readable"


class ImageTruncatedError(FirmwareError):
    """The input ended before the sizes its header declares."""

    code = "firmware-truncated"
    default_hint = "the image is incomplete; download or copy it again"


class ImageMagicError(FirmwareError):
    """The first four bytes are not the MCUboot image magic."""

    code = "firmware-bad-magic"
    default_hint = "this is not a signed MCUboot image; sign it with 'iotsec firmware sign'"


class ImageHeaderError(FirmwareError):
    """A header field is out of range (header size, flags, sizes over a stated limit)."""

    code = "firmware-bad-header"
    default_hint = "the image header is corrupt or was not written by an MCUboot signing tool"


class ImageTooLargeError(ImageHeaderError):
    """The sizes in the header exceed the limit given by the caller (e.g. the slot size)."""

    status = 413
    code = "firmware-too-large"
    default_hint = "the image does not fit the slot it is meant for"


class UnsupportedImageError(FirmwareError):
    """A valid MCUboot feature that iotsec does not verify (encrypted or compressed
    images, SHA-384/512 hashes, pure signatures)."""

    code = "firmware-unsupported"
    default_hint = ("iotsec verifies unencrypted, uncompressed images with a SHA-256 hash and an "
                    "ECDSA P-256, Ed25519 or RSA-2048/3072 signature")


class TlvAreaError(FirmwareError):
    """A TLV area that is malformed: wrong info magic, a size that disagrees with the header,
    a TLV whose length runs past the end of its area, or a known TLV of the wrong length."""

    code = "firmware-bad-tlv"
    default_hint = "the image's TLV area is corrupt; sign the image again"


class DuplicateTlvError(TlvAreaError):
    code = "firmware-duplicate-tlv"
    default_hint = "each of these TLVs may appear once; the image was tampered with or mis-built"


class UnknownTlvError(TlvAreaError):
    """A TLV type that is not allowed where it appears (an unknown protected TLV, or a
    TLV in the unprotected area that only the protected area may carry)."""

    code = "firmware-unknown-tlv"
    default_hint = ("only known TLVs are accepted; allow a vendor TLV explicitly if the image is "
                    "meant to carry it")


class ImageHashError(FirmwareError):
    """The SHA-256 over header, body and protected TLVs differs from the hash TLV."""

    code = "firmware-hash-mismatch"
    default_hint = "the image was changed after it was signed; do not install it"


class MissingHashError(ImageHashError):
    code = "firmware-hash-missing"
    default_hint = "the image carries no SHA-256 hash TLV; sign it with 'iotsec firmware sign'"


class NoTrustedKeyError(FirmwareError):
    """Verification was asked for without any public key: a hash alone proves nothing."""

    status = 400
    code = "firmware-no-key"
    default_hint = "give the public key(s) the image must be signed with (--key PUB.pem)"


class UntrustedKeyError(FirmwareError):
    """The image is signed, but its key hash names none of the trusted keys."""

    code = "firmware-untrusted-key"
    default_hint = "the image was signed with another key; check which key the fleet trusts"


class ImageSignatureError(FirmwareError):
    """A signature made with a trusted key does not verify (or does not fit the key)."""

    code = "firmware-bad-signature"
    default_hint = "the image or its signature was tampered with; do not install it"


class MissingSignatureError(FirmwareError):
    code = "firmware-unsigned"
    default_hint = "sign the image with 'iotsec firmware sign --key KEY'"


class SecurityCounterError(FirmwareError):
    """The image's security counter is below the minimum (anti-rollback), or the image has
    none although a minimum is required."""

    code = "firmware-security-counter"
    default_hint = ("the image is older than what the device must run; publish an image with a "
                    "higher --security-counter")


class VersionDowngradeError(FirmwareError):
    code = "firmware-downgrade"
    default_hint = "install an image whose version is at least the one required"


class FirmwareKeyError(FirmwareError):
    """A firmware signing or verification key that cannot be used (wrong type or size,
    cannot be decrypted, a private key where a public one is expected)."""

    status = 400
    code = "firmware-key"
    default_hint = ("firmware keys are ECDSA P-256, Ed25519 or RSA-2048/3072 PEM files; private "
                    "keys are encrypted PKCS#8")


class ImageLayoutError(FirmwareError):
    """The image cannot be built as asked (input header not blank without --pad-header,
    image and trailer larger than the slot, sizes over the format's limits)."""

    status = 400
    code = "firmware-layout"
    default_hint = "check --header-size, --pad-header and --slot-size"


# --- network segmentation --------------------------------------------------------------


class NetsegError(IotsecError):
    """Network segmentation: a zone policy, a flow or a firewall ruleset that is refused."""

    status = 422
    code = "netseg"


class NetsegPolicyError(NetsegError, InvalidInputError):
    """A zone policy file that is not valid. ``problems`` holds every problem found as
    ``(line, message)`` pairs (line ``None`` when it has none); the message is the first."""

    code = "invalid-netseg-policy"
    default_hint = "run 'iotsec netseg validate FILE' to see every problem with its line"

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: tuple[tuple[int | None, str], ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or ((None, message),)


class NftError(NetsegError):
    """The nft tool is missing, not permitted, or refused a ruleset."""

    status = 500
    code = "nft"
    default_hint = "install the nftables package and run as root (nft needs CAP_NET_ADMIN)"


# --- data protection (end-to-end payloads, encryption at rest) -------------------------


class ProtectError(IotsecError):
    """A protected payload, an encrypted file or an encrypted record that is refused.
    Messages name what failed and where, never plaintext or key material."""

    status = 422
    code = "protect"


class CborError(ProtectError, MalformedInputError):
    """Bytes that are not strict, well-formed CBOR within the parser's limits."""

    status = 400
    code = "malformed-cbor"


class PayloadError(ProtectError):
    code = "payload"


class PayloadMalformedError(PayloadError, MalformedInputError):
    """Not a COSE_Encrypt0/COSE_Sign1 message iotsec accepts (shape, headers, sizes)."""

    status = 400
    code = "payload-malformed"
    default_hint = "send a tagged COSE_Encrypt0 or COSE_Sign1 made by an iotsec-compatible sender"


class PayloadKeyError(PayloadError):
    """A key of the wrong type for the operation, keys on different curves, or an invalid
    pairing parameter (identity, salt)."""

    code = "payload-key"
    default_hint = ("use X25519 or P-256 keys for encryption and P-256 or Ed25519 keys for "
                    "signing, the same curve on both sides")


class PayloadUnknownKeyError(PayloadError):
    """The message names a key id (kid) the receiver does not hold."""

    code = "payload-unknown-key"
    default_hint = ("check that both sides derived the pair key from the same keys, identities, "
                    "algorithm and salt, and that the key has not been retired")


class PayloadAlgorithmError(PayloadError):
    """The message's algorithm is unsupported or differs from the one bound to its key."""

    code = "payload-algorithm"
    default_hint = "seal with the algorithm the pair key was established for"


class PayloadAuthenticationError(PayloadError):
    """The authentication tag or signature does not verify: altered, sealed for another
    recipient or with another key, or bound to other external data."""

    code = "payload-authentication"
    default_hint = "the message was altered or not sealed for this recipient; discard it"


class PayloadReplayError(PayloadError):
    """The sender's sequence number was already accepted."""

    code = "payload-replayed"
    default_hint = "senders must use a new, increasing sequence number for every message"


class PayloadTooOldError(PayloadError):
    """The sequence number is below the receiver's acceptance window."""

    code = "payload-too-old"
    default_hint = "the message arrived too late (or is a replay); the sender should resend it"


class DataProtectionError(ProtectError):
    code = "data-protection"


class StreamFormatError(DataProtectionError, MalformedInputError):
    """Not an iotsec encrypted stream: wrong magic or version, invalid lengths, or data after
    the final chunk."""

    status = 400
    code = "stream-format"
    default_hint = "give a file written by 'iotsec data encrypt'"


class StreamHeaderError(DataProtectionError):
    """The stream header does not authenticate: altered, or written under another
    key-encryption key with the same id, or with other associated data."""

    code = "stream-header"
    default_hint = "the file was altered; restore it from a trusted copy"


class StreamChunkError(DataProtectionError):
    """A chunk does not authenticate: altered, reordered, cut short or taken from another file."""

    code = "stream-chunk"
    default_hint = "the file was altered; restore it from a trusted copy"


class StreamTruncatedError(DataProtectionError):
    """The stream ends before its final chunk."""

    code = "stream-truncated"
    default_hint = "the file is incomplete; copy it again from its source"


class RecordFormatError(DataProtectionError, MalformedInputError):
    status = 400
    code = "record-format"
    default_hint = "the stored value is not an iotsec encrypted record"


class RecordAuthenticationError(DataProtectionError):
    """An encrypted record does not open for this table, record id and field: altered, moved
    to another record, or sealed under another key-encryption key."""

    code = "record-authentication"
    default_hint = "the stored value was altered or copied from another record"


class UnknownKekError(DataProtectionError, KeyCustodyError):
    """Data names a key-encryption key that is not in custody."""

    status = 500
    code = "unknown-kek"
    default_hint = "restore the key-encryption key from backup (or use the home it was made in)"


class KekUnlockError(KeyCustodyError):
    """A key-encryption key file cannot be unwrapped: wrong passphrase, or the file was
    altered."""

    code = "kek-unlock"
    default_hint = "check IOTSEC_CA_PASSPHRASE (or the ca-passphrase file in the home)"


class DataKeyUnwrapError(KeyCustodyError):
    """A wrapped data key does not unwrap under the key-encryption key it names."""

    code = "data-key-unwrap"
    default_hint = "the wrapped key was altered or belongs to another key-encryption key"


# --- security scanning -----------------------------------------------------------------


class ScanError(IotsecError):
    """A scan that could not run as asked (the CLI exits 2 for these: nothing was judged)."""

    status = 422
    code = "scan"


class ScanTargetError(ScanError, InvalidInputError):
    """A target, CIDR range, port list or scope file that cannot be parsed or is too large."""

    code = "scan-target"
    default_hint = ("give addresses (192.0.2.10), CIDR ranges (192.0.2.0/24), host names, "
                    "and ports as 1-65535 lists such as 22,80,8000-8100,U:5683")


class ScanScopeError(ScanError):
    """A target outside the authorised scope, or a very large range without confirmation."""

    status = 403
    code = "scan-scope"
    default_hint = "add the range to the scope file (--scope) if you are authorised to scan it"


class ScanResolveError(ScanError):
    """A host name that does not resolve (or not within the time allowed)."""

    code = "scan-resolve"
    default_hint = "check the name, or give the address instead"


class ScanToolError(ScanError):
    """An optional external tool (nmap) that is missing, failed or gave unreadable output."""

    status = 500
    code = "scan-tool"
    default_hint = "install nmap (Debian package 'nmap') or leave out --with-nmap"


# --- secure OTA distribution (TUF repository, rollout campaigns) -----------------------


class OtaError(IotsecError):
    """Over-the-air updates: TUF metadata, the update repository, campaigns and device
    reports. Each subclass names one reason."""

    status = 422
    code = "ota"


class OtaRepositoryError(OtaError):
    """The update repository is missing, not initialised, or cannot be used as asked."""

    status = 409
    code = "ota-repository"
    default_hint = "create it with 'iotsec ota repo init' (see 'iotsec ota repo status')"


class TufMetadataError(OtaError):
    """TUF metadata that is not acceptable: unparseable, the wrong role, over its size limit,
    or inconsistent with the repository."""

    code = "tuf-metadata"
    default_hint = "give metadata produced by 'iotsec ota' for this repository"


class TufThresholdError(TufMetadataError):
    """Metadata signed by fewer trusted keys than its role's threshold (or by keys the
    role does not trust)."""

    code = "tuf-threshold"
    default_hint = ("sign it with more of the role's keys ('iotsec ota metadata sign FILE "
                    "--key KEY') until the threshold is met")


class TufExpiredError(TufMetadataError):
    """Metadata whose expiry date has passed (a frozen or stale repository)."""

    code = "tuf-expired"
    default_hint = ("re-sign it with a later expiry; online roles are refreshed by 'iotsec ota "
                    "repo refresh'")


class TufRollbackError(TufMetadataError):
    """Metadata whose version is not newer than the one already trusted (replayed or rolled
    back), or not the version the snapshot names (mix-and-match)."""

    code = "tuf-rollback"
    default_hint = "metadata versions only move forward; stage and sign a new version"


class OtaDownloadError(OtaError):
    """Metadata or an image could not be downloaded from the update server."""

    status = 502
    code = "ota-download"
    default_hint = "check the update server URL and the device's network, then retry"


class OtaEndlessDataError(OtaDownloadError):
    """The server sent more bytes than the metadata allows (an endless-data attack)."""

    code = "ota-endless-data"
    default_hint = "the update server is misbehaving or compromised; the download was cut off"


class OtaTargetError(OtaError):
    """A downloaded image whose length or hash differs from the signed targets metadata
    (arbitrary software), or a target the metadata does not list."""

    code = "ota-target"
    default_hint = "do not install it; the update server is misbehaving or compromised"


class HardwareMismatchError(OtaError):
    """A release that is not built for the device's hardware (or product)."""

    code = "ota-hardware"
    default_hint = "publish the image for this hardware with --hardware, or pick another release"


class ReleaseDowngradeError(OtaError, ConflictError):
    """Publishing an image older (version or security counter) than the channel serves."""

    status = 409
    code = "ota-release-downgrade"
    default_hint = "publish a newer image, or pass --force to serve an older one on purpose"


class CampaignError(OtaError):
    """A rollout campaign that cannot be created or changed as asked."""

    code = "ota-campaign"


class CampaignStateError(CampaignError, ConflictError):
    """The campaign's state does not allow this (e.g. resuming an aborted campaign)."""

    status = 409
    code = "ota-campaign-state"
    default_hint = "check the campaign with 'iotsec ota campaign status ID'"


class OtaReportError(OtaError):
    """A device report that does not fit the device's update (unknown campaign, a status
    out of order, a report after the update ended)."""

    status = 409
    code = "ota-report"
    default_hint = "report downloading, installing, then installed, failed or rolled_back"


class DeviceRollbackError(OtaError, ConflictError):
    """A device reports running a version below what its recorded security counter allows
    (the server-side anti-rollback record)."""

    status = 409
    code = "ota-device-rollback"
    default_hint = ("the device runs older firmware than it already confirmed; investigate it "
                    "before trusting its reports")


# --- broker (Mosquitto) and the device MQTT client -------------------------------------


class BrokerError(IotsecError):
    """Driving the MQTT broker failed: rendering, validating, reloading or confirming it."""

    status = 502
    code = "broker"


class BrokerConfigError(BrokerError, InvalidInputError):
    """A broker setting that cannot be rendered (address, port, directory, names)."""

    status = 422
    code = "broker-config"
    default_hint = "check the options given to 'iotsec broker mosquitto render'"


class BrokerValidationError(BrokerError):
    """A new broker configuration, ACL or CRL was refused before anything was swapped in;
    the broker keeps running with the previous generation."""

    status = 422
    code = "broker-validation"
    default_hint = "nothing was changed on the broker; fix the cause and run the sync again"


class BrokerCrlError(BrokerValidationError):
    """The CRL for the broker is unreadable, not signed by the CA, older than the one the
    broker has, or too close to (or past) its nextUpdate."""

    code = "broker-crl"
    default_hint = ("nothing was changed on the broker; check the CA with 'iotsec crl' and run "
                    "the sync again")


class BrokerProcessError(BrokerError):
    """The process given is not a running Mosquitto broker, or cannot be signalled."""

    status = 503
    code = "broker-process"
    default_hint = "give the broker's --pid or --pidfile (and run as its user or root)"


class BrokerReloadError(BrokerError):
    """The broker did not confirm the new generation after a reload (not serving, or not
    enforcing its CRL or ACL); iotsec rolled back to the previous generation."""

    status = 503
    code = "broker-reload"
    default_hint = "read the broker's log (DIR/run/mosquitto.log) and run the sync again"


class MqttError(IotsecError):
    """The device MQTT client could not do what was asked."""

    status = 502
    code = "mqtt"


class MqttConnectError(MqttError):
    """The broker refused the connection (TLS handshake or CONNACK), or is unreachable."""

    code = "mqtt-connect"
    default_hint = ("check the host name and port, that the certificate is current and not "
                    "revoked, and that the device is enabled")


class MqttNotAuthorizedError(MqttError):
    """The broker refused a publish or a subscription (MQTT 5 reason code 0x87 and kin)."""

    status = 403
    code = "mqtt-not-authorized"
    default_hint = "the device's roles do not allow this topic; see 'iotsec authz check'"

    def __init__(self, message: str, *, reason_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason_code = reason_code


class MqttTimeoutError(MqttError):
    """The broker did not answer in time."""

    status = 504
    code = "mqtt-timeout"
    default_hint = "check that the broker is reachable and not overloaded"


# --- key custody: PKCS#11 tokens, key-encryption key rotation ----------------------------


class Pkcs11Error(KeyCustodyError):
    """A PKCS#11 token refused or failed an operation. Messages name the module, the token
    and the key label, never the PIN."""

    code = "pkcs11"
    default_hint = "check the token with 'iotsec keys list' and the PKCS#11 module's logs"


class Pkcs11ModuleError(Pkcs11Error):
    """The PKCS#11 module (shared library) is not configured, missing, or not loadable."""

    code = "pkcs11-module"
    default_hint = ("install the module (for SoftHSM2: the Debian package softhsm2) and set "
                    "IOTSEC_PKCS11_MODULE to its path")


class Pkcs11TokenNotFoundError(Pkcs11Error):
    """No token with the configured label is present."""

    code = "pkcs11-token-not-found"
    default_hint = ("list the tokens (for SoftHSM2: 'softhsm2-util --show-slots') and set "
                    "IOTSEC_PKCS11_TOKEN to the token's label")


class Pkcs11PinError(Pkcs11Error):
    """The token refused the user PIN (wrong, invalid, or the token is locked)."""

    code = "pkcs11-pin"
    default_hint = "check IOTSEC_PKCS11_PIN; repeated failures lock the token"


class Pkcs11KeyNotFoundError(Pkcs11Error):
    """No key with the label in the token."""

    status = 404
    code = "pkcs11-key-not-found"
    default_hint = "list the token's keys with 'iotsec keys list'"


class KeyTypeMismatchError(KeyCustodyError):
    """A key of the wrong type for the operation (an AES key asked to sign, a signing key
    asked to wrap data keys, an unsupported curve)."""

    status = 422
    code = "key-type-mismatch"
    default_hint = "use a signing key (ECDSA/RSA) to sign and an AES-256 key to wrap data keys"


class RetiredKekError(UnknownKekError):
    """Data names a key-encryption key that was retired by a rotation."""

    code = "retired-kek"
    default_hint = ("re-wrap the data under the active key: reinstate the old key with "
                    "'iotsec keys reinstate ID', then run 'iotsec keys rotate kek' again")


class KekRotationError(KeyCustodyError, ConflictError):
    """A key-encryption key rotation cannot proceed (another one is running, or records
    still depend on a key that was to be retired)."""

    status = 409
    code = "kek-rotation"
    default_hint = "run 'iotsec keys report', then 'iotsec keys rotate kek' again to resume"
