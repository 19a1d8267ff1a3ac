"""Broker services: driving Mosquitto (:mod:`.mosquitto`, built from :mod:`.build`,
:mod:`.files`, :mod:`.fleet`, :mod:`.pki`), the broker's log as events (:mod:`.events`), and
EMQX (hooks in :mod:`.emqx`, configuration in :mod:`.emqx_render`)."""
