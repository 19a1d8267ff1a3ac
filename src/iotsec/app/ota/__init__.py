"""Firmware and OTA services: signing and verifying images (:mod:`.firmware`), releases
(:mod:`.releases`), rollout campaigns (:mod:`.campaigns`, evaluated by :mod:`.evaluation`
and :mod:`.tick`), the device side of a campaign (:mod:`.device_updates`,
:mod:`.anti_rollback`) and the TUF update repository (:mod:`.repo` and its parts)."""
