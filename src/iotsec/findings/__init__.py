"""Findings: the one model every iotsec check reports with, and the report writers.

- ``model``: :class:`~iotsec.findings.model.Severity`, :class:`~iotsec.findings.model.Rule`,
  :class:`~iotsec.findings.model.Location` and :class:`~iotsec.findings.model.Finding`, used
  by the scanner, the fleet audit, the compliance reports, policy lint and the zone-policy
  review;
- ``report``: what every report format shares (timestamps, published schemas, JSON bytes);
- ``sarif``: SARIF 2.1.0 logs; ``html``: single-file HTML pages.

This package sits at the bottom of the core: it imports nothing from iotsec but
``iotsec.errors``, so every area can build on it.
"""
