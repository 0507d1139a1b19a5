"""What the web page (``/metrics``) and the Home Assistant bridge read from the deploy agent, as a protocol.

The front-ends must not load :mod:`edged.deploy.agent` (the ``agent-apart`` import contract): they are typed
against :class:`AgentView`, which :class:`~edged.deploy.agent.DeviceAgent` satisfies, and which this module
declares without importing the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeAlias

from .connection import MqttState


class AgentView(Protocol):
    """The deploy agent as the front-ends see it: read-only."""

    @property
    def mqtt_state(self) -> MqttState:
        """The broker connection now (``/metrics``: connected, connects)."""
        ...

    @property
    def outcomes(self) -> Mapping[tuple[str, str], int]:
        """Installs and rejected messages by outcome: (state, reason) -> count (``/metrics``)."""
        ...

    def plugin_versions(self) -> Mapping[str, tuple[str | None, str | None]]:
        """Each managed plugin's (installed version, version its desired state wants) (Home Assistant). May raise
        :class:`RuntimeError` when the agent's worker changes its state meanwhile."""
        ...


#: the agent, read when needed: it may start after the front-end (None until then, or without ``[mqtt]``)
AgentSource: TypeAlias = Callable[[], AgentView | None]
