"""Security scanning: find a fleet's network services, identify them by probing, and judge
them (plaintext protocols, anonymous or wildcard MQTT, default credentials, TLS).

- ``targets``: targets, port lists, scope files and the checked plan (pure);
- ``ports``: the asyncio TCP connect scanner;
- ``probes`` / ``tlsraw``: protocol packets and parsers (pure);
- ``identify``: service identification by probing; ``tls``, ``mqtt``, ``credentials``:
  the checks; ``engine``: the scan end to end;
- ``findings`` / ``rules``: the finding model (shared with the fleet audit and the
  compliance reports) and the scanner's rules; ``report``: JSON, SARIF 2.1.0 and HTML.
"""
