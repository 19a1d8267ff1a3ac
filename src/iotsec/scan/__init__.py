"""Security scanning: find a fleet's network services, identify them by probing, and judge
them (plaintext protocols, anonymous or wildcard MQTT, default credentials, TLS).

- ``targets``: targets, port lists, scope files and the checked plan (pure);
- ``ports``: the asyncio TCP connect scanner;
- ``probes`` / ``tlsraw``: protocol packets and parsers (pure);
- ``identify``: service identification by probing; ``tls``, ``mqtt``, ``credentials``:
  the checks; ``engine``: the scan end to end;
- ``rules``: the scanner's rules (the finding model is :mod:`iotsec.findings`, shared with
  every other check); ``report``: the scan's JSON, SARIF 2.1.0 and HTML reports.
"""
