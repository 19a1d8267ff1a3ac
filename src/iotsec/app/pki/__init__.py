"""PKI services: certificates (:mod:`.certs`), CRLs (:mod:`.crl`), iotsec's own
certificates (:mod:`.infrastructure`) and the TLS certificate of ``iotsec serve``
(:mod:`.server_tls`)."""
