"""ETSI EN 303 645 V2.1.1 (2020-06), "Cyber Security for Consumer Internet of Things:
Baseline Requirements": every provision of clauses 4, 5 and 6, with its number and its
requirement level (M: shall; R: should; "C" marks a provision that applies only under a
condition the standard states, given here in short).

The summaries are paraphrases, not the standard's text. Where iotsec has evidence (the fleet
audit, its own configuration, a scan report) the provision's checks name it; provisions
about the manufacturer's processes, documentation or device hardware are decided by a person
and recorded with ``iotsec compliance attest``.
"""

from __future__ import annotations

from iotsec.compliance.catalog import Category, Checks, Framework, Level, Provision

__all__ = ["CATEGORIES", "ETSI_EN_303_645", "PROVISIONS", "M"]

M = Level.MANDATORY
R = Level.RECOMMENDED

CATEGORIES = (
    Category("4", "Reporting implementation"),
    Category("5.1", "No universal default passwords"),
    Category("5.2", "Implement a means to manage reports of vulnerabilities"),
    Category("5.3", "Keep software updated"),
    Category("5.4", "Securely store sensitive security parameters"),
    Category("5.5", "Communicate securely"),
    Category("5.6", "Minimize exposed attack surfaces"),
    Category("5.7", "Ensure software integrity"),
    Category("5.8", "Ensure that personal data is secure"),
    Category("5.9", "Make systems resilient to outages"),
    Category("5.10", "Examine system telemetry data"),
    Category("5.11", "Make it easy for users to delete user data"),
    Category("5.12", "Make installation and maintenance of devices easy"),
    Category("5.13", "Validate input data"),
    Category("6", "Data protection provisions for consumer IoT"),
)

_UPDATABLE = "the device can be updated"
_CONSTRAINED_NO_UPDATE = "constrained devices whose software cannot be updated"
_TELEMETRY = "telemetry data is collected"

_CRYPTO_AUDIT = ("audit/ca-weak-key", "audit/device-weak-key")
_TRANSPORT_AUDIT = ("audit/broker-plaintext-listener",)
_LIFECYCLE_AUDIT = ("audit/ca-expiring", "audit/device-cert-expiring", "audit/device-cert-old",
                    "audit/revoked-cert-connecting", "audit/revoked-ca-active-certs",
                    "audit/broker-crl-missing", "audit/broker-crl-stale")
_OTA_FACTS = ("firmware.ota-repository", "firmware.metadata-fresh")
#: Scanner rules showing data that crosses the network in clear or under weak TLS.
_IN_CLEAR = ("plaintext/", "tls/old-protocol", "tls/weak-cipher", "tls/weak-key-exchange")


def _p(number: str, title: str, level: Level, summary: str, checks: Checks | None = None,
       condition: str | None = None) -> Provision:
    clause = number.split("-")[0]
    return Provision(id=number, number=number, title=title, category=clause, summary=summary,
                     level=level, condition=condition, checks=checks or Checks())


PROVISIONS = (
    _p("4-1", "Justify what is not applicable or not met", M,
       "For every recommendation considered not applicable or not fulfilled, a justification "
       "is recorded.", Checks(special="justifications")),
    # 5.1
    _p("5.1-1", "Unique or user-defined passwords", M,
       "Outside the factory default state, passwords are unique per device or set by the "
       "user.", Checks(audit=("audit/broker-anonymous",), facts=("auth.no-default-passwords",),
                       scan=True), condition="passwords are used"),
    _p("5.1-2", "Pre-installed passwords resist automated attacks", M,
       "Pre-installed unique passwords are generated so that they cannot be derived for a "
       "whole class of devices (no serial numbers, no obvious patterns).",
       Checks(facts=("auth.no-default-passwords",), scan=True),
       condition="pre-installed unique passwords are used"),
    _p("5.1-3", "Best practice cryptography for authentication", M,
       "Mechanisms that authenticate users against the device use best practice "
       "cryptography suited to the technology, risk and usage.",
       Checks(audit=(*_CRYPTO_AUDIT, "audit/token-no-expiry"),
              facts=("identity.device-credentials",))),
    _p("5.1-4", "Simple way to change the authentication value", M,
       "Where a user can authenticate against the device, there is a simple way for the user "
       "or an administrator to change the authentication value.",
       Checks(audit=("audit/device-cert-old",)),
       condition="users can authenticate against the device"),
    _p("5.1-5", "Brute force impracticable over the network", M,
       "A device that is not constrained makes brute-force attacks on its network "
       "authentication impracticable (rate limits, lock-outs, strong secrets).",
       Checks(facts=("auth.brute-force-limit",)), condition="the device is not constrained"),
    # 5.2
    _p("5.2-1", "Public vulnerability disclosure policy", M,
       "The manufacturer publishes a vulnerability disclosure policy: how to report issues "
       "and when reporters hear back."),
    _p("5.2-2", "Act on disclosed vulnerabilities in time", R,
       "Disclosed vulnerabilities are acted on in a timely manner."),
    _p("5.2-3", "Monitor for and fix vulnerabilities", R,
       "The manufacturer continually monitors for, identifies and fixes vulnerabilities in "
       "its products and services over the product's security lifecycle."),
    # 5.3
    _p("5.3-1", "Software components securely updateable", R,
       "All software components of the device can be updated securely.",
       Checks(audit=("audit/firmware-below-counter",), facts=_OTA_FACTS)),
    _p("5.3-2", "Secure update installation mechanism", M,
       "A device that can receive security updates has a mechanism to install them "
       "securely.", Checks(facts=(*_OTA_FACTS, "firmware.anti-rollback")),
       condition=_UPDATABLE),
    _p("5.3-3", "Updates simple to apply", M,
       "Applying an update is simple for the user.", condition=_UPDATABLE),
    _p("5.3-4", "Automatic update mechanisms", R,
       "Software updates use automatic mechanisms.",
       Checks(facts=("firmware.ota-repository",)), condition=_UPDATABLE),
    _p("5.3-5", "Check for updates after initialization and periodically", R,
       "The device checks for security updates after initialization and then "
       "periodically.", condition=_UPDATABLE),
    _p("5.3-6", "Automatic updates enabled and configurable", R,
       "Automatic updates and update notifications are on in the initialized state, and the "
       "user can enable, disable or postpone them.", condition=_UPDATABLE),
    _p("5.3-7", "Best practice cryptography for updates", M,
       "The update mechanism uses best practice cryptography.",
       Checks(facts=(*_OTA_FACTS, "firmware.signed-releases")), condition=_UPDATABLE),
    _p("5.3-8", "Timely security updates", M,
       "Security updates are timely.", Checks(audit=("audit/firmware-below-counter",)),
       condition=_UPDATABLE),
    _p("5.3-9", "Device verifies updates", R,
       "The device verifies the authenticity and integrity of software updates.",
       Checks(facts=("firmware.signed-releases", "firmware.anti-rollback")),
       condition=_UPDATABLE),
    _p("5.3-10", "Network updates verified through a trust relationship", M,
       "An update delivered over a network interface is verified for authenticity and "
       "integrity through a trust relationship.",
       Checks(facts=(*_OTA_FACTS, "firmware.signed-releases")),
       condition="updates are delivered over a network interface"),
    _p("5.3-11", "Tell the user an update is required", R,
       "The manufacturer tells the user clearly that a security update is needed and what "
       "risk it addresses.", condition=_UPDATABLE),
    _p("5.3-12", "Warn when an update disrupts basic functioning", R,
       "The device tells the user when applying an update will disrupt its basic "
       "functioning.", condition=_UPDATABLE),
    _p("5.3-13", "Published support period", M,
       "The manufacturer publishes the defined support period clearly and accessibly."),
    _p("5.3-14", "Rationale for devices that cannot be updated", R,
       "For a constrained device that cannot be updated, the manufacturer publishes why, the "
       "hardware replacement support (period and method) and the support period.",
       condition=_CONSTRAINED_NO_UPDATE),
    _p("5.3-15", "Non-updateable devices isolable and replaceable", R,
       "A constrained device that cannot be updated can be isolated and its hardware "
       "replaced.", condition=_CONSTRAINED_NO_UPDATE),
    _p("5.3-16", "Recognizable model designation", M,
       "The device's model designation is clearly recognizable, on a label or through a "
       "physical interface."),
    # 5.4
    _p("5.4-1", "Sensitive security parameters stored securely", M,
       "Sensitive security parameters in persistent storage are stored securely.",
       Checks(facts=("keys.custody", "data.at-rest"))),
    _p("5.4-2", "Hard-coded device identity resists tampering", M,
       "A hard-coded unique per-device identity used for security resists physical, "
       "electrical and software tampering.",
       condition="a hard-coded unique per-device identity is used for security"),
    _p("5.4-3", "No hard-coded critical security parameters in source code", M,
       "Device software source code contains no hard-coded critical security parameters."),
    _p("5.4-4", "Per-device critical security parameters", M,
       "Critical security parameters for update integrity and for protecting communication "
       "with associated services are unique per device and produced so that automated "
       "attacks on a class of devices are hard.",
       Checks(audit=("audit/shared-certificate", "audit/device-weak-key"),
              facts=("identity.device-credentials",))),
    # 5.5
    _p("5.5-1", "Best practice cryptography for communication", M,
       "The device communicates securely using best practice cryptography.",
       Checks(audit=(*_CRYPTO_AUDIT, *_TRANSPORT_AUDIT), facts=("api.tls",), scan=True)),
    _p("5.5-2", "Reviewed or evaluated implementations", R,
       "Network and security functions, cryptography especially, use reviewed or evaluated "
       "implementations."),
    _p("5.5-3", "Updateable cryptographic algorithms", R,
       "Cryptographic algorithms and primitives can be updated."),
    _p("5.5-4", "Network access only after authentication", R,
       "In the initialized state, device functionality is reachable over a network interface "
       "only after authentication on that interface.",
       Checks(audit=("audit/broker-anonymous", "audit/policy-permissive"), scan=True)),
    _p("5.5-5", "Authenticated security-relevant configuration", M,
       "Functionality that changes security-relevant configuration over a network interface "
       "requires authentication (network service protocols the device depends on excepted).",
       Checks(audit=("audit/broker-anonymous", "audit/token-no-expiry",
                     "audit/policy-misconfigured"), facts=("api.tls",))),
    _p("5.5-6", "Critical security parameters encrypted in transit", R,
       "Critical security parameters are encrypted in transit, suitably for the technology, "
       "risk and usage.",
       Checks(audit=_TRANSPORT_AUDIT, facts=("api.tls",), scan_rules=_IN_CLEAR)),
    _p("5.5-7", "Confidentiality of critical security parameters on remote interfaces", M,
       "Critical security parameters communicated over remotely accessible network "
       "interfaces are kept confidential.",
       Checks(audit=_TRANSPORT_AUDIT, facts=("api.tls",), scan_rules=_IN_CLEAR)),
    _p("5.5-8", "Secure management of critical security parameters", M,
       "The manufacturer follows secure management processes for the device's critical "
       "security parameters (generation, custody, rotation, revocation).",
       Checks(audit=_LIFECYCLE_AUDIT, facts=("keys.custody",))),
    # 5.6
    _p("5.6-1", "Unused interfaces disabled", M,
       "All unused network and logical interfaces are disabled.",
       Checks(audit=_TRANSPORT_AUDIT, scan=True)),
    _p("5.6-2", "Minimal unauthenticated disclosure", M,
       "In the initialized state, network interfaces disclose as little security-relevant "
       "information as possible without authentication.",
       Checks(audit=("audit/broker-anonymous",), scan_rules=("mqtt/",), scan=True)),
    _p("5.6-3", "Physical interfaces not unnecessarily exposed", R,
       "Device hardware does not expose physical interfaces to attack unnecessarily."),
    _p("5.6-4", "Physically accessible debug interfaces disabled in software", M,
       "A physically accessible debug interface is disabled in software.",
       condition="a debug interface is physically accessible"),
    _p("5.6-5", "Only needed software services enabled", R,
       "Only software services used or required for the device's intended operation are "
       "enabled.", Checks(scan_rules=("plaintext/",), scan=True)),
    _p("5.6-6", "Minimized code", R,
       "Code is minimized to the functionality the device needs."),
    _p("5.6-7", "Least privilege", R,
       "Software runs with the least privileges it needs.",
       Checks(audit=("audit/policy-permissive", "audit/policy-misconfigured"))),
    _p("5.6-8", "Hardware memory access control", R,
       "The device has a hardware-level access control mechanism for memory."),
    _p("5.6-9", "Secure development processes", R,
       "The manufacturer follows secure development processes for device software."),
    # 5.7
    _p("5.7-1", "Secure boot", R,
       "The device verifies its software with secure boot mechanisms.",
       Checks(facts=("firmware.signed-releases",))),
    _p("5.7-2", "Alert on unauthorized software change", R,
       "On detecting an unauthorized software change, the device alerts the user or "
       "administrator and connects to no wider network than needed for the alert."),
    # 5.8
    _p("5.8-1", "Personal data protected in transit", R,
       "Personal data travelling between the device and services is kept confidential with "
       "best practice cryptography.",
       Checks(audit=_TRANSPORT_AUDIT, facts=("api.tls",), scan_rules=_IN_CLEAR)),
    _p("5.8-2", "Sensitive personal data protected in transit", M,
       "Sensitive personal data communicated between the device and associated services is "
       "kept confidential with suitable cryptography.",
       Checks(audit=_TRANSPORT_AUDIT, facts=("api.tls",), scan_rules=_IN_CLEAR)),
    _p("5.8-3", "External sensing capabilities documented", M,
       "All external sensing capabilities of the device are documented clearly for the "
       "user."),
    # 5.9
    _p("5.9-1", "Resilience to network and power outages", R,
       "Devices and services are built to be resilient to data network and power outages."),
    _p("5.9-2", "Local function without network; clean recovery", R,
       "The device keeps working locally when the network is lost and recovers cleanly after "
       "a power loss."),
    _p("5.9-3", "Orderly network connection", R,
       "The device connects to networks in an expected, operational and stable state, in an "
       "orderly way that respects the infrastructure's capacity."),
    # 5.10
    _p("5.10-1", "Telemetry examined for security anomalies", R,
       "Collected telemetry (usage and measurement data) is examined for security "
       # Judged from the detector's own record (it ran recently, with rules in force): the
       # audit's anomaly checks say what was found, not whether telemetry is examined.
       "anomalies.", Checks(facts=("monitor.detection",)), condition=_TELEMETRY),
    # 5.11
    _p("5.11-1", "Simple erasure of user data on the device", M,
       "The user can erase user data from the device simply."),
    _p("5.11-2", "Simple removal of personal data from associated services", R,
       "The user can simply remove personal data from associated services."),
    _p("5.11-3", "Instructions for deleting personal data", R,
       "Users get clear instructions on how to delete their personal data."),
    _p("5.11-4", "Confirmation that personal data was deleted", R,
       "Users get clear confirmation that personal data has been deleted from services, "
       "devices and applications."),
    # 5.12
    _p("5.12-1", "Minimal, usable installation and maintenance", R,
       "Installation and maintenance take minimal steps and follow usable-security best "
       "practice."),
    _p("5.12-2", "Guidance on secure set-up", R,
       "Users get guidance on how to set the device up securely."),
    _p("5.12-3", "Guidance on checking the set-up", R,
       "Users get guidance on how to check that the device is set up securely."),
    # 5.13
    _p("5.13-1A", "Input data validated", M,
       "Device software validates data entered through user interfaces, received through "
       "APIs, or passed between networks, services and devices."),
    # 6
    _p("6-1", "Information on personal data processing", M,
       "Consumers get clear information on what personal data is processed, how, by whom "
       "and why, for each device and service."),
    _p("6-2", "Valid consent", M,
       "Where processing rests on consent, consent is obtained validly.",
       condition="personal data is processed on the basis of consent"),
    _p("6-3", "Consent can be withdrawn", M,
       "Consumers who consented can withdraw consent at any time.",
       condition="personal data is processed on the basis of consent"),
    _p("6-4", "Minimal personal data in telemetry", R,
       "Processing of personal data in telemetry is kept to the minimum needed.",
       condition=_TELEMETRY),
    _p("6-5", "Information on telemetry", M,
       "Consumers are told what telemetry is collected, how it is used, by whom and why.",
       condition=_TELEMETRY),
)

ETSI_EN_303_645 = Framework(
    id="etsi-en-303-645",
    name="ETSI EN 303 645",
    version="V2.1.1 (2020-06)",
    reference="ETSI EN 303 645 V2.1.1 (2020-06): Cyber Security for Consumer Internet of "
              "Things: Baseline Requirements",
    categories=CATEGORIES,
    provisions=PROVISIONS,
    scan_tag="etsi:",
)
