"""Enrolment services: bootstrap secrets, provisioning templates, claim CAs and the EST
flows (enrol, re-enrol, server-side key generation, approval)."""
