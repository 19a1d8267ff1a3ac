"""Compliance services: reports and attestations (:mod:`.reports`) over the evidence iotsec
establishes about itself (:mod:`.facts`)."""
