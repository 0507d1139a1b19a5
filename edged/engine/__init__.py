"""The frame engine: fixed-rate frame loops per display, playlists, composition, and plugin supervision (budgets,
strikes, quarantine). It runs :class:`~edged.host.plugin.DevicePlugin` objects and draws through the hardware
layer's outputs."""
