"""Network probes: the scanner's I/O adapter (asyncio sockets).

It resolves names, finds open ports (:mod:`.ports`), identifies services (:mod:`.identify`),
observes TLS (:mod:`.tls`), tries default credentials (:mod:`.credentials`) and checks MQTT
wildcard subscriptions (:mod:`.mqtt`); :mod:`.runner` runs a whole scan plan. What to scan and
how to judge the results are the pure :mod:`iotsec.scan`; only the services
(:mod:`iotsec.app.scan`) import this package.
"""
