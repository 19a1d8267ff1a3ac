"""Compliance: framework catalogues (ETSI EN 303 645, NIST IR 8259A, OWASP IoT), their
evaluation over evidence, and the reports."""
