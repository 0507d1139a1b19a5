"""The MQTT device agent (:class:`DeviceAgent`) and its parts: :mod:`.desired`, :mod:`.state`, :mod:`.install`,
:mod:`.download`, :mod:`.commands` and :mod:`.reporting`. Broker settings live in :mod:`edged.deploy.broker`."""

from .device_agent import DeviceAgent

__all__ = ["DeviceAgent"]
