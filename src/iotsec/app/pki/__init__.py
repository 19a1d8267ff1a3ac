"""PKI services: certificates (:mod:`.certs`), CRLs (:mod:`.crl`) and the TLS certificate of
``iotsec serve`` (:mod:`.server_tls`)."""
