"""OWASP Internet of Things Top 10 (2018): items I1 to I10, judged from the fleet's state
and, when given, a scan report (the scanner tags its rules ``owasp-iot:In``).

The summaries are paraphrases. The Top 10 has no requirement levels.
"""

from __future__ import annotations

from iotsec.compliance.catalog import Category, Checks, Framework, Provision

__all__ = ["ITEMS", "OWASP_IOT_TOP10"]

ITEMS = (
    ("I1", "Weak, Guessable, or Hardcoded Passwords",
     "Credentials that can be brute-forced, are public, or cannot be changed, including "
     "backdoors in firmware or client software.",
     Checks(audit=("audit/broker-anonymous",), facts=("auth.no-default-passwords",),
            scan=True)),
    ("I2", "Insecure Network Services",
     "Unneeded or insecure network services on the device, above all those exposed to the "
     "internet, that endanger confidentiality, integrity or availability or allow remote "
     "control.", Checks(audit=("audit/broker-plaintext-listener",), scan=True)),
    ("I3", "Insecure Ecosystem Interfaces",
     "Insecure web, backend API, cloud or mobile interfaces around the device: weak "
     "authentication or authorization, missing or weak encryption, no input or output "
     "filtering.",
     Checks(audit=("audit/policy-permissive", "audit/token-no-expiry",
                   "audit/broker-anonymous"),
            facts=("api.tls", "auth.brute-force-limit"), scan=True)),
    ("I4", "Lack of Secure Update Mechanism",
     "No way to update the device securely: no firmware validation, no secure delivery, no "
     "anti-rollback, no notification of security changes.",
     Checks(audit=("audit/firmware-below-counter",),
            facts=("firmware.ota-repository", "firmware.metadata-fresh",
                   "firmware.signed-releases", "firmware.anti-rollback"))),
    ("I5", "Use of Insecure or Outdated Components",
     "Deprecated or insecure software components and libraries, or third-party software "
     "and hardware from a compromised supply chain.",
     Checks(audit=("audit/ca-weak-key", "audit/device-weak-key",
                   "audit/firmware-below-counter"))),
    ("I6", "Insufficient Privacy Protection",
     "Personal information stored on the device or in the ecosystem used insecurely, "
     "improperly or without permission."),
    ("I7", "Insecure Data Transfer and Storage",
     "No encryption or access control for sensitive data anywhere in the ecosystem: at "
     "rest, in transit or while processed.",
     Checks(audit=("audit/broker-plaintext-listener", "audit/ca-weak-key",
                   "audit/device-weak-key"),
            facts=("data.at-rest", "keys.custody", "api.tls"), scan=True)),
    ("I8", "Lack of Device Management",
     "No security support for devices in production: asset management, update management, "
     "secure decommissioning, monitoring and response.",
     Checks(audit=("audit/device-cert-expiring", "audit/device-cert-old",
                   "audit/revoked-cert-connecting", "audit/revoked-ca-active-certs",
                   "audit/broker-crl-missing", "audit/broker-crl-stale",
                   "audit/shared-certificate", "audit/client-id-conflict",
                   "audit/logging-disabled"),
            facts=("identity.device-credentials",))),
    ("I9", "Insecure Default Settings",
     "Devices or systems shipped with insecure defaults, or without a way to make them more "
     "secure by restricting what operators can change.",
     Checks(audit=("audit/broker-anonymous", "audit/broker-plaintext-listener",
                   "audit/policy-permissive"),
            facts=("auth.no-default-passwords",), scan=True)),
    ("I10", "Lack of Physical Hardening",
     "No physical hardening, so that an attacker with the device in hand can extract "
     "information for a remote attack or take control of it locally."),
)

OWASP_IOT_TOP10 = Framework(
    id="owasp-iot-top10",
    name="OWASP IoT Top 10",
    version="2018",
    reference="OWASP Internet of Things Top 10 (2018)",
    categories=tuple(Category(number, title) for number, title, *_ in ITEMS),
    provisions=tuple(Provision(id=number, number=number, title=title, category=number,
                               summary=summary, checks=checks)
                     for number, title, summary, *rest in ITEMS
                     for checks in (rest[0] if rest else Checks(),)),
    scan_tag="owasp-iot:",
)
