"""Table definitions. Times are integer Unix seconds (UTC): identical on SQLite and
PostgreSQL, cheap to index, and free of time-zone ambiguity."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

__all__ = [
    "alert_deliveries", "alerts", "api_tokens", "authorities", "ca_requests", "cert_profiles",
    "certificates", "claim_cas", "claim_uses", "coap_oscore_contexts", "compliance_attestations",
    "console_sessions", "console_summaries",
    "crls", "delta_crls", "detect_cursors", "detect_lease", "detect_rules", "detect_state",
    "device_groups", "device_keys", "device_profiles", "device_roles",
    "device_secrets", "devices", "encrypted_files", "enrolment_secrets", "event_checkpoints",
    "events", "group_profiles", "group_roles", "groups", "incidents", "metadata",
    "ota_campaign_devices", "ota_campaigns", "ota_device_firmware", "ota_releases",
    "partition_crls", "pending_enrolments", "policy_version", "provisioning_templates",
    "quarantines", "role_rules", "roles", "token_jtis"
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

authorities = Table(
    "authorities",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("role", String(16), nullable=False),  # root | issuing
    Column("parent_id", Integer, ForeignKey("authorities.id"), nullable=True),
    Column("key_label", String(64), nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("subject", Text, nullable=False),
    Column("cert_der", LargeBinary, nullable=False),
    Column("not_after", BigInteger, nullable=False),
    # Kept equal to ``state == 'active'`` (readers of older releases look at it).
    Column("active", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # active (issues) | retiring (trusted, no longer issues) | retired (out of the trust
    # bundle; its CRL is served until it expires). Expired is derived from not_after.
    Column("state", String(16), nullable=False, server_default="active"),
    Column("state_changed_at", BigInteger, nullable=True),
    # The key is not in the home's key store (an offline root): nothing is signed with it.
    Column("key_offline", Boolean, nullable=False, server_default=false()),
)

#: A new issuing CA's key and CSR waiting for the offline root's signature
#: ('iotsec ca request', then 'iotsec ca import').
ca_requests = Table(
    "ca_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_label", String(64), nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("subject", Text, nullable=False),
    Column("csr_der", LargeBinary, nullable=False),
    Column("spki_sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(128), primary_key=True),
    # pending | active | disabled | retired | quarantined | awaiting-approval: 17 characters,
    # so 0010
    # widened the column to 32 where the length is enforced; SQLite ignores the length and
    # keeps its original declaration.
    Column("state", String(32).with_variant(String(16), "sqlite"), nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object of strings
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # The device's group names and own role names, sorted byte by byte and space-separated
    # ('' for none): copies of the links (device_groups, device_roles), kept equal to them
    # by the database's own triggers (migration 0028), so that a decision reads the
    # device's row alone (ADR 0041). Lists and joins read the links.
    Column("group_names", Text, nullable=False, server_default=""),
    Column("role_names", Text, nullable=False, server_default=""),
    Index(None, "updated_at"),
    # The console's device list filtered by state, in id order (keyset paging).
    Index(None, "state", "id"),
)

groups = Table(
    "groups",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("group_name", String(128), ForeignKey("groups.name", ondelete="CASCADE"),
           primary_key=True),
    Index(None, "group_name"),
    # On SQLite, each link is stored in its primary key's b-tree alone (migration 0031).
    sqlite_with_rowid=False,
)

#: The condition of the partial CRL indexes.
_REVOKED = text("revoked_at IS NOT NULL")

certificates = Table(
    "certificates",
    metadata,
    # Upper-case hex, as openssl prints it; random 159-bit values, unique by primary key.
    Column("serial", String(42), primary_key=True),
    Column("authority_id", Integer, ForeignKey("authorities.id"), nullable=False),
    Column("device_id", String(128), ForeignKey("devices.id"), nullable=True),
    Column("kind", String(16), nullable=False),  # device | server
    Column("profile", String(64), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("not_before", BigInteger, nullable=False),
    Column("not_after", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("der", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Revocation takes effect at revoked_at, which may lie in the future for a certificate
    # superseded with a grace period. crl_entry is its pre-encoded revokedCertificates element.
    Column("revoked_at", BigInteger, nullable=True),
    Column("revocation_reason", SmallInteger, nullable=True),
    Column("crl_entry", LargeBinary, nullable=True),
    Column("replaced_by", String(42), nullable=True),
    # SHA-256 of the certified SubjectPublicKeyInfo: issuance looks a key up by it to refuse
    # one key for two identities. Every row has it (migration 0008 filled in older rows).
    Column("spki_sha256", String(64), nullable=True),
    # The CRL partition the certificate's CDP names (IOTSEC_CRL_PARTITIONS); NULL for one
    # issued while partitioning was off: it is on the complete CRL only.
    Column("crl_partition", SmallInteger, nullable=True),
    Index(None, "device_id"),
    # Expiry (a range of not_after), and the number of certificates per CA: an index-only
    # pass, grouped by a sort (migration 0030).
    Index(None, "not_after", "authority_id"),
    Index(None, "spki_sha256"),
    # The CRL indexes hold the revoked certificates only (migration 0030): an issuance
    # writes neither. Every query that reads them compares revoked_at, which implies it.
    # Covers the CRL query: an index-only range scan, no lookup into the wide table rows.
    # It also makes a delta CRL a range scan of the recent revocations (revoked_at >= base).
    Index(None, "authority_id", "revoked_at", "not_after", "crl_entry",
          sqlite_where=_REVOKED, postgresql_where=_REVOKED),
    # A partition CRL: the partition's revocations only.
    Index("ix_certificates_partition_crl", "authority_id", "crl_partition", "revoked_at",
          "not_after", "crl_entry", sqlite_where=_REVOKED, postgresql_where=_REVOKED),
)

crls = Table(
    "crls",
    metadata,
    Column("authority_id", Integer, ForeignKey("authorities.id"), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("this_update", BigInteger, nullable=False),
    Column("next_update", BigInteger, nullable=False),
    # Set when a revocation happens, so the next request rebuilds the CRL.
    Column("stale", Boolean, nullable=False),
    Column("der", LargeBinary, nullable=True),
)

# The published delta CRL of each CA (RFC 5280 5.2.4), in a row of its own: on SQLite an
# update rewrites the whole row, and the crls row holds the complete CRL (53 MB at a
# million entries). Its number comes from the sequence it shares with the complete CRL
# (RFC 5280 5.2.3): the next number of either is max(crls.number, number) + 1, taken
# while the CA's crls row is locked. base is the number of the complete CRL it completes
# (deltaCRLIndicator), signed at base_update: the delta lists what was revoked since.
delta_crls = Table(
    "delta_crls",
    metadata,
    Column("authority_id", Integer, ForeignKey("authorities.id"), primary_key=True),
    Column("number", BigInteger, nullable=True),
    Column("base", BigInteger, nullable=True),
    Column("base_update", BigInteger, nullable=True),
    Column("this_update", BigInteger, nullable=True),
    Column("next_update", BigInteger, nullable=True),
    Column("stale", Boolean, nullable=False),
    Column("der", LargeBinary, nullable=True),
)

# One row per CRL partition of a CA (IOTSEC_CRL_PARTITIONS): each partition is a scope of
# its own (its issuingDistributionPoint), with its own CRL number sequence.
partition_crls = Table(
    "partition_crls",
    metadata,
    Column("authority_id", Integer, ForeignKey("authorities.id"), primary_key=True),
    Column("partition", SmallInteger, primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("this_update", BigInteger, nullable=False),
    Column("next_update", BigInteger, nullable=False),
    Column("stale", Boolean, nullable=False),
    Column("der", LargeBinary, nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(32), nullable=False),  # the scope: admin | operator | auditor
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
)

roles = Table(
    "roles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

role_rules = Table(
    "role_rules",
    metadata,
    Column("role_name", String(64), ForeignKey("roles.name", ondelete="CASCADE"),
           primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("effect", String(8), nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource", String(1024), nullable=False),
)

device_roles = Table(
    "device_roles",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("role_name", String(64), ForeignKey("roles.name"), primary_key=True),
    Index(None, "role_name"),
    sqlite_with_rowid=False,  # as device_groups (migration 0031)
)

group_roles = Table(
    "group_roles",
    metadata,
    Column("group_name", String(128), ForeignKey("groups.name", ondelete="CASCADE"),
           primary_key=True),
    Column("role_name", String(64), ForeignKey("roles.name"), primary_key=True),
    Index(None, "role_name"),
)

# One row, bumped by every change to roles or their bindings: serving processes compare it
# to decide whether their compiled policy is still current.
policy_version = Table(
    "policy_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

# Security events (authentication decisions, denied scopes, ...). The monitor module will
# build on this table; ids are ordered, times are Unix seconds.
events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor", String(160), nullable=True),
    Column("source", String(64), nullable=True),
    Column("subject", String(256), nullable=True),
    Column("detail", Text, nullable=False),  # JSON object
    # The hash chain (iotsec.eventlog.chain): the event's position and its hash over the
    # previous event's hash and its own fields. NULL only for a row written around the chain.
    Column("seq", BigInteger, nullable=True),
    Column("hash", String(64), nullable=True),
    Index(None, "at"),
    Index(None, "kind", "at"),
    Index(None, "seq", unique=True),
    # 'events list --device' and 'incident timeline' look a device up as actor or subject.
    Index(None, "actor", "at"),
    Index(None, "subject", "at"),
)

# Signed checkpoints of the event chain: its position and head hash, signed by the audit key.
event_checkpoints = Table(
    "event_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("key_label", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# Public keys a device signs its JWTs with: taken from its certificate or registered.
device_keys = Table(
    "device_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           nullable=False),
    Column("algorithm", String(16), nullable=False),  # ES256 | EdDSA
    Column("public_key_der", LargeBinary, nullable=False),
    Column("source", String(16), nullable=False),  # registered | certificate
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index(None, "device_id"),
)

# Legacy HS256 secrets: generated by the server, stored only encrypted (AES-256-GCM under a
# key-encryption key in custody). A rotated-out secret keeps working until expires_at.
device_secrets = Table(
    "device_secrets",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Index(None, "device_id"),
)

# Replay cache for device JWTs: a jti is remembered until the token would have expired.
token_jtis = Table(
    "token_jtis",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("jti", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index(None, "expires_at"),
)

# --- secure OTA distribution -----------------------------------------------------------

# One row per publication of a verified image to a channel (the TUF repository in the home
# holds the image and the signed metadata; this is what campaigns and reports refer to).
ota_releases = Table(
    "ota_releases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product", String(64), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("version", String(32), nullable=False),  # major.minor.revision+build
    Column("security_counter", BigInteger, nullable=True),
    Column("target_path", String(256), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("hardware", Text, nullable=False),  # JSON list of hardware names
    Column("targets_version", Integer, nullable=False),
    Column("published_at", BigInteger, nullable=False),
    Index(None, "product", "channel"),
    Index(None, "product", "version"),
)

# Rollout campaigns: a release sent to a set of devices in waves (cumulative percentages).
ota_campaigns = Table(
    "ota_campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("release_id", Integer, ForeignKey("ota_releases.id"), nullable=False),
    Column("selector", String(160), nullable=False),  # group:NAME | devices
    Column("state", String(16), nullable=False),  # active | paused | aborted | completed
    Column("waves", Text, nullable=False),  # JSON list of cumulative percentages
    Column("current_wave", Integer, nullable=False),
    Column("wave_started_at", BigInteger, nullable=False),
    Column("failure_threshold_bp", Integer, nullable=False),  # basis points of a wave
    Column("device_timeout", BigInteger, nullable=False),  # seconds
    Column("soak", BigInteger, nullable=False),  # seconds a finished wave waits
    Column("acknowledged_failures", Integer, nullable=False),
    Column("reason", Text, nullable=True),  # why it paused, aborted or completed
    Column("created_by", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "state"),
)

ota_campaign_devices = Table(
    "ota_campaign_devices",
    metadata,
    Column("campaign_id", Integer, ForeignKey("ota_campaigns.id", ondelete="CASCADE"),
           primary_key=True),
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("wave", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", String(32), nullable=True),  # the version the device last reported
    Column("detail", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=True),  # time of the device's last report
    Index(None, "campaign_id", "wave", "status"),
    Index(None, "device_id"),
)

# Server-side anti-rollback record: the highest security counter a device has confirmed
# running, and the lowest version that counter allows.
ota_device_firmware = Table(
    "ota_device_firmware",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("product", String(64), nullable=True),
    Column("version", String(32), nullable=False),  # the version now running
    Column("security_counter", BigInteger, nullable=False),
    Column("min_version", String(32), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# --- compliance reports ----------------------------------------------------------------

# Attestations: a person's status and justification for one provision of a framework.
# Append only: every attestation adds version n+1, the latest version counts, and the
# history stays. The unique index makes two concurrent attestations of one provision
# conflict instead of both becoming version n+1.
compliance_attestations = Table(
    "compliance_attestations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("framework", String(32), nullable=False),
    Column("provision", String(48), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pass|fail|partial|manual|not_applicable
    Column("note", Text, nullable=False),
    Column("actor", String(160), nullable=False),
    Column("at", BigInteger, nullable=False),
    Index(None, "framework", "provision", "version", unique=True),
)

# --- files encrypted at rest -------------------------------------------------------------

# One row per file written by 'iotsec data encrypt' (or moved by 'iotsec data rewrap'):
# which KEK its data key is wrapped under, so that a KEK is not retired while a file may
# still need it. The id is the SHA-256 of the file's header, which is unique per file
# (random salt and data key) and changes when the file is re-wrapped.
encrypted_files = Table(
    "encrypted_files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kek_id", String(80), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "kek_id"),
)

# --- enrolment (EST) -------------------------------------------------------------------

# What a device enrolling under a template becomes. Groups, roles and attributes are JSON
# (a list, a list, an object of strings), as the template gives them to a new device.
provisioning_templates = Table(
    "provisioning_templates",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("groups", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("attributes", Text, nullable=False),
    Column("id_from", String(16), nullable=False),  # csr-cn | serial-number | secret
    Column("require_approval", Boolean, nullable=False),
    # A built-in (device | server) or a named profile: 0013 widened the column from 16 to
    # 64 where the length is enforced; SQLite ignores it and keeps its declaration.
    Column("profile", String(64).with_variant(String(16), "sqlite"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Bootstrap credentials: bound to one device or to a template, stored only as the SHA-256
# of the secret, usable uses_left more times until expires_at.
enrolment_secrets = Table(
    "enrolment_secrets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           nullable=True),
    Column("template", String(64), ForeignKey("provisioning_templates.name"), nullable=True),
    Column("uses_total", Integer, nullable=False),
    Column("uses_left", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index(None, "device_id"),
    Index(None, "template"),
)

# Manufacturers' (or factories') CAs whose certificates may each enrol once.
claim_cas = Table(
    "claim_cas",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("certificate", Text, nullable=False),  # PEM
    Column("fingerprint", String(64), nullable=False, unique=True),  # SHA-256 of the DER
    Column("template", String(64), ForeignKey("provisioning_templates.name"), nullable=False),
    Column("allow_list", Text, nullable=True),  # JSON list of serials and hardware ids
    Column("hook_url", String(2048), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "template"),
)

# Every claim certificate that enrolled, by the SHA-256 of its DER: it never enrols again,
# even when its CA is removed and added back (so no foreign keys).
claim_uses = Table(
    "claim_uses",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("claim_ca", String(64), nullable=False),
    Column("serial", String(42), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("used_at", BigInteger, nullable=False),
)

# Devices waiting for an operator's approval, with the credential and the key of their
# request: a later request for the same device with the same credential and key polls, and
# is answered with the certificate once the device is approved. (One secret may enrol
# several devices, so the credential is not unique here.)
pending_enrolments = Table(
    "pending_enrolments",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("credential", String(128), nullable=False),  # secret:<id> | claim:<fingerprint>
    Column("spki_sha256", String(64), nullable=False),
    Column("template", String(64), nullable=False),
    Column("source", String(64), nullable=True),
    Column("requested_at", BigInteger, nullable=False),
)


# --- certificate profiles ----------------------------------------------------------------

# Named certificate profiles (the built-ins device and server are not rows). Key types,
# extended key usages (by name) and DNS name sources are JSON lists.
cert_profiles = Table(
    "cert_profiles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("validity_days", Integer, nullable=False),
    Column("key_types", Text, nullable=False),
    Column("ekus", Text, nullable=False),
    Column("dns_from", Text, nullable=False),
    Column("no_revocation", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# The profile a device, or the members of a group, are issued under (absent: the next
# rule decides). Indexed by profile, so that removing one finds its users at once.
device_profiles = Table(
    "device_profiles",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("profile", String(64), nullable=False),
    Index(None, "profile"),
)

group_profiles = Table(
    "group_profiles",
    metadata,
    Column("group_name", String(128), ForeignKey("groups.name", ondelete="CASCADE"),
           primary_key=True),
    Column("profile", String(64), nullable=False),
    Index(None, "profile"),
)


# Alerts: one per rule and subject (fingerprint) while not resolved; raised again, it counts.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # open | acknowledged | resolved
    Column("summary", Text, nullable=False),
    Column("suggested", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON object
    Column("count", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("acknowledged_by", String(160), nullable=True),
    Column("resolved_by", String(160), nullable=True),
    Index(None, "fingerprint", "state"),
    Index(None, "state", "updated_at"),
)

# One row per alert and sink: pending until delivered, dead after the last attempt.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("alert_id", Integer, ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    Column("sink", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("last_error", String(512), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "state", "next_attempt_at"),
)


# Detection rule documents as applied; the newest is in force (none: the built-in set).
detect_rules = Table(
    "detect_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("document", Text, nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the document
    Column("applied_at", BigInteger, nullable=False),
    Column("applied_by", String(160), nullable=True),
)

# The lease that makes one serving process the detector and scheduler ("detector").
detect_lease = Table(
    "detect_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(160), nullable=False),
    Column("token", BigInteger, nullable=False),  # grows with every change of holder
    Column("acquired_at", BigInteger, nullable=False),
    Column("renewed_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# How far each followed source was read: a log file's byte offset (with its inode), the
# last event id taken from the event table.
detect_cursors = Table(
    "detect_cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=True),
    Column("lines", BigInteger, nullable=False),
    Column("lag", BigInteger, nullable=False),  # bytes (or events) not read yet
    Column("rate", Float, nullable=False),  # lines per second, recently
    Column("last_line_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

# What the detector learnt: a baseline per rule and subject, a profile per device (rule "").
detect_state = Table(
    "detect_state",
    metadata,
    Column("rule", String(64), primary_key=True),
    Column("subject", String(256), primary_key=True),
    Column("data", Text, nullable=False),  # JSON
    Column("updated_at", BigInteger, nullable=False),
)

# Incidents opened by 'incident quarantine': who, why, which selection, and when closed.
incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),  # quarantine
    Column("state", String(16), nullable=False),  # open | closed
    Column("actor", String(160), nullable=False),
    Column("reason", String(512), nullable=False),
    Column("selector", Text, nullable=False),  # JSON object: device | group | query
    Column("devices", Integer, nullable=False),
    Column("revoked", Integer, nullable=False),
    Column("alert_id", Integer, nullable=True),
    Column("opened_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("closed_by", String(160), nullable=True),
    Index(None, "state", "opened_at"),
)

# The devices an incident holds in quarantine, with the state each returns to on release.
quarantines = Table(
    "quarantines",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    Column("incident_id", String(32), ForeignKey("incidents.id"), nullable=False),
    Column("previous_state", String(32), nullable=False),
    Column("since", BigInteger, nullable=False),
    Index(None, "incident_id"),
)

# Web console sessions: the SHA-256 of the cookie's secret (never the secret), the API token
# that opened the session (revoking it ends the session) and its timeouts.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("token_id", String(32), ForeignKey("api_tokens.id", ondelete="CASCADE"),
           nullable=False),
    Column("scope", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # the absolute timeout
    Column("source", String(64), nullable=True),
    Index(None, "token_id"),
    Index(None, "expires_at"),
)

# The console's fleet aggregates, newest first computed by any serving process: the JSON
# body, when it was computed and, while a process recomputes it, until when it holds the
# claim (a crashed process's claim lapses).
console_summaries = Table(
    "console_summaries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("computed_at", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("claimed_until", BigInteger, nullable=True),
)

# OSCORE security contexts (RFC 8613) between the CoAP gateway and one device each. The
# master secret is not stored: it is derived again (ECDH + HKDF) from the gateway's
# agreement key (IOTSEC_HOME/gateway) and the device's public key with the salt. The replay
# window of the device's sequence numbers is persisted with each accepted request, so that
# a restart does not accept a replay.
coap_oscore_contexts = Table(
    "coap_oscore_contexts",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"),
           primary_key=True),
    # The device's Sender ID (the gateway's Recipient ID, the kid of its requests).
    Column("recipient_id", LargeBinary, nullable=False, unique=True),
    Column("sender_id", LargeBinary, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("device_public_der", LargeBinary, nullable=False),
    Column("key_type", String(16), nullable=False),  # x25519 | p256
    Column("replay_top", BigInteger, nullable=True),
    Column("replay_bitmap", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The end of the last range of the gateway's own sender sequence numbers reserved
    # (notifications): every number below it may have been used.
    Column("sender_seq_reserved", BigInteger, nullable=False, server_default="0"),
)
