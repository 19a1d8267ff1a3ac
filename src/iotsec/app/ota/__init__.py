"""Firmware and OTA services: signing and verifying images (:mod:`.firmware`), rollout
campaigns (:mod:`.campaigns`) and the TUF update repository (:mod:`.repo` and its parts)."""
