"""The bridge between plugins and hardware: capabilities and the host functions they gate."""

from .capabilities import Capabilities, DevicePolicy, GpioCapabilities

__all__ = ["Capabilities", "DevicePolicy", "GpioCapabilities"]
