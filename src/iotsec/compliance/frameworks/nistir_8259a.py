"""NIST IR 8259A (May 2020), "IoT Device Cybersecurity Capability Core Baseline": the six
device cybersecurity capabilities of the core baseline, each with its elements.

The capability descriptions and elements are paraphrased. NIST IR 8259A neither numbers the
capabilities nor gives them requirement levels; they are numbered here in the order the
document lists them. Each capability is judged from the fleet as iotsec manages it: what the
devices prove through their identities, certificates, policies and updates.
"""

from __future__ import annotations

from iotsec.compliance.catalog import Category, Checks, Framework, Provision

__all__ = ["CAPABILITIES", "NISTIR_8259A"]

CAPABILITIES = (
    ("device-identification", "1", "Device Identification",
     "The device can be uniquely identified, logically and physically.",
     ("A unique logical identifier for the device.",
      "A unique physical identifier on the device or its packaging."),
     Checks(audit=("audit/shared-certificate", "audit/client-id-conflict",
                   "audit/device-cert-expiring"),
            facts=("identity.private-ca", "identity.device-credentials"))),
    ("device-configuration", "2", "Device Configuration",
     "The device's software configuration can be changed, by authorized entities only.",
     ("The configuration of the device's software can be changed.",
      "Only authorized entities can change it.",
      "Authorized entities can restore a secure default configuration they define."),
     Checks(audit=("audit/policy-permissive", "audit/policy-misconfigured",
                   "audit/token-no-expiry", "audit/broker-anonymous"),
            facts=("api.tls",))),
    ("data-protection", "3", "Data Protection",
     "The device protects the data it stores and transmits from unauthorized access and "
     "modification.",
     ("Demonstrably secure cryptographic modules for standardized algorithms protect the "
      "confidentiality and integrity of stored and transmitted data.",
      "Authorized entities can make all data on the device inaccessible (wipe, or destroy "
      "the keys of encrypted data).",
      "The cryptography the device uses can be configured (for example the key length)."),
     Checks(audit=("audit/ca-weak-key", "audit/device-weak-key",
                   "audit/broker-plaintext-listener"),
            facts=("keys.custody", "data.at-rest", "api.tls"), scan_rules=("tls/",),
            scan=True)),
    ("logical-access-to-interfaces", "4", "Logical Access to Interfaces",
     "The device restricts logical access to its local and network interfaces, and to the "
     "protocols and services behind them, to authorized entities.",
     ("Local and network interfaces not needed for the core function can be disabled.",
      "Access to each network interface can be restricted to authorized people or devices.",
      "Account lock-out or delays after repeated failed authentication can be configured."),
     Checks(audit=("audit/broker-anonymous", "audit/policy-permissive",
                   "audit/broker-plaintext-listener"),
            facts=("auth.brute-force-limit", "auth.no-default-passwords"),
            scan_rules=("plaintext/", "mqtt/", "credentials/"), scan=True)),
    ("software-update", "5", "Software Update",
     "The device's software can be updated by authorized entities only, through a secure "
     "and configurable mechanism.",
     ("The software can be updated remotely and/or locally.",
      "Each update is verified and authenticated before it is installed.",
      "Authorized entities can roll back to a previous version.",
      "Only authorized entities can update the device.",
      "Updating can be enabled and disabled.",
      "Automatic and manual update behaviour can be configured."),
     Checks(audit=("audit/firmware-below-counter",),
            facts=("firmware.ota-repository", "firmware.metadata-fresh",
                   "firmware.signed-releases", "firmware.anti-rollback"))),
    ("cybersecurity-state-awareness", "6", "Cybersecurity State Awareness",
     "The device can report its cybersecurity state, to authorized entities only.",
     ("The device reports its cybersecurity state.",
      "It can tell likely normal operation apart from a possibly degraded security state.",
      "Only authorized entities can see the state indicator.",
      "Only the entities responsible for the state can change it.",
      "The state can be made available to a service elsewhere, such as a log server."),
     Checks(audit=("audit/logging-disabled", "audit/revoked-cert-connecting",
                   "audit/client-id-conflict"))),
)

NISTIR_8259A = Framework(
    id="nistir-8259a",
    name="NIST IR 8259A",
    version="May 2020",
    reference="NISTIR 8259A: IoT Device Cybersecurity Capability Core Baseline (May 2020)",
    categories=tuple(Category(cid, title) for cid, _, title, *_ in CAPABILITIES),
    provisions=tuple(
        Provision(id=cid, number=number, title=title, category=cid, summary=summary,
                  elements=elements, checks=checks)
        for cid, number, title, summary, elements, checks in CAPABILITIES),
)
