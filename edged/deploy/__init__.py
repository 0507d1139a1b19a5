"""Remote plugin deployment: signed bundles and messages (:mod:`.trust`, :mod:`.bundle`), the atomic on-device
store with resumable transfers (:mod:`.store`), broker settings (:mod:`.broker`), and the MQTT device agent built
on them (:mod:`.agent`).

See docs/deploy-store.md for the bundle format, signatures, trust, store layout and crash safety.
"""
