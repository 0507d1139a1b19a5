"""All of edged's exceptions and warnings, in one place.

One root, :class:`EdgedError`, with a family per layer. Leaves also inherit a builtin where one fits, so callers
may catch by family (``except PluginError``) or by builtin (``except ValueError``)::

    EdgedError
    ├── PluginError            a plugin failed to load or a call into it failed (runtime, host, engine)
    ├── HardwareError          a backend, GPIO pin or sensor (hardware)
    ├── ConfigError            a configuration file or value (everywhere), BrokerRefused
    ├── DeployError            bundles, signatures, messages, the store, the marketplace catalog (deploy, market)
    ├── ScaffoldError          ``edged plugin new`` (tooling)
    └── UsageError             bad command-line arguments (cli)
    EdgedWarning               a degraded state that still works

The modules that raise an error also export its name (``from edged.hardware.gpio import PinNotConfigured`` works),
but every class is defined here and nowhere else; tests/test_errors.py checks that. This module imports nothing, so
every layer (the runtime too) may import it.
"""

from __future__ import annotations


class EdgedError(Exception):
    """Root of every error edged raises on purpose."""


# --- runtime / plugins -------------------------------------------------------------------------------------------


class PluginError(EdgedError):
    """A plugin failed to load or a call into it failed.

    ``str(err)`` is the Extism-compatible message (for example ``"plugin ran out of fuel"`` or the plugin's own
    ``error_set`` text).
    """


class PluginLoadError(PluginError, ValueError):
    """The module or manifest could not be loaded: bad bytes, bad imports, bad exports or a hash mismatch."""


class ManifestError(PluginLoadError):
    """A manifest (Extism's or edged's extension block) is invalid."""


class FunctionNotFound(PluginError, LookupError):
    """The requested export does not exist (``"Function not found: NAME"``)."""


class OutOfFuel(PluginError):
    """The call used up its fuel budget (``"plugin ran out of fuel"``)."""


class PluginTimeout(PluginError, TimeoutError):
    """The call passed its wall-clock deadline (``"timeout"``)."""


class PluginCancelled(PluginError):
    """The call was stopped through its plugin's cancel handle (``"cancelled"``)."""


class OutOfMemory(PluginError, MemoryError):
    """The plugin hit its memory limit (``"oom"``)."""


class PluginTrap(PluginError):
    """The plugin trapped (unreachable, out-of-bounds access, ...); the message keeps wasmtime's cause."""


class OutputTooLarge(PluginError):
    """The plugin's output exceeded the configured output limit."""


class HostFunctionError(PluginError):
    """A host function raised a Python exception; ``exception`` is the original, also chained as ``__cause__``."""

    def __init__(self, message: str, exception: BaseException | None = None) -> None:
        super().__init__(message)
        self.exception = exception


class CapabilityDenied(PluginError, PermissionError):
    """A plugin asked for something its granted capabilities do not allow."""


class FrameError(PluginError):
    """A plugin produced a frame the host cannot use (wrong size, malformed JSON, values out of range)."""


class InternalFailure(PluginError):
    """Something other than a plugin error escaped a plugin's frame (a bug in the host, say): a strike all the
    same, so one plugin never takes its display thread down."""


# --- hardware ----------------------------------------------------------------------------------------------------


class HardwareError(EdgedError):
    """A hardware backend or device failed."""


class BackendUnavailable(HardwareError, RuntimeError):
    """The requested backend cannot run on this machine (for example ws281x on a Pi 5 or off a Pi)."""


class GpioError(HardwareError):
    """A GPIO or sensor operation cannot be done on this board."""


class PinNotConfigured(GpioError, LookupError):
    """The pin is not declared by the hardware profile."""


class WrongPinUse(GpioError, ValueError):
    """The pin is declared, but as something else (a write to an input, a read of a PWM output, ...)."""


class UnknownSensor(GpioError, LookupError):
    """No sensor of that name is declared."""


class InvalidValue(GpioError, ValueError):
    """A value outside what the device takes (a PWM duty outside 0..1)."""


class NotEmulated(GpioError, RuntimeError):
    """An emulation-only operation (driving a mock pin, setting a sensor value) on a real board."""


class SensorReadError(HardwareError, OSError):
    """A sensor could not be read (for example its sensor file is missing)."""


# --- configuration -----------------------------------------------------------------------------------------------


class ConfigError(EdgedError, ValueError):
    """A configuration file or value is invalid; the message names the key (and line where known)."""


class ServiceStartError(EdgedError):
    """A step of ``edged run``'s service could not start (the steps started before it were stopped again)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


class BrokerRefused(ConfigError):
    """The broker answered and refused the connection (bad credentials, not authorized): retrying cannot help."""


# --- deploy ------------------------------------------------------------------------------------------------------


class DeployError(EdgedError):
    """A deployment step (bundle, signature, transfer, store) failed."""


class BadSignature(DeployError, ValueError):
    """A signature does not verify against the named key."""


class UntrustedKey(DeployError, PermissionError):
    """A key is not in the trust store, or not trusted for the role it signed in."""


class MessageRejected(DeployError, ValueError):
    """A signed message (command, desired state) was refused; ``reason`` is a stable code for status replies."""

    reason = "rejected"


class MalformedMessage(MessageRejected):
    """Not JSON, or not a valid signed envelope."""

    reason = "malformed"


class MessageBadSignature(MessageRejected):
    """The envelope's signature does not verify."""

    reason = "bad_signature"


class MessageUntrustedKey(MessageRejected):
    """The envelope is signed by a key the device does not trust for this role."""

    reason = "untrusted_key"


class MessageExpired(MessageRejected):
    """The envelope's ``expires_at`` has passed."""

    reason = "expired"


class MessageNotYetValid(MessageRejected):
    """The envelope's ``issued_at`` lies in the future (beyond the allowed clock skew)."""

    reason = "not_yet_valid"


class MessageReplayed(MessageRejected):
    """The envelope's nonce was already accepted once."""

    reason = "replayed"


class NonceCacheFull(MessageRejected):
    """The device already remembers as many unexpired commands as it can; a new one is refused (not executed) until
    the oldest expires, rather than forgetting a nonce and letting that command be replayed."""

    reason = "busy"


class ValidityTooLong(MessageRejected):
    """A command is signed valid for longer than the device accepts (see ``MAX_COMMAND_VALIDITY_S``)."""

    reason = "validity_too_long"


class MessageWrongTarget(MessageRejected):
    """The signed document names another device or group than the one it reached (or none at all)."""

    reason = "wrong_target"


class BundleRejected(DeployError, ValueError):
    """A plugin bundle was refused; ``reason`` is a stable code (``hash_mismatch``, ``downgrade``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.reason, str(self)))


class StoreError(DeployError):
    """The on-device plugin store cannot do what was asked (unknown plugin or version, nothing to roll back to), or
    a write failed (``reason`` ``install_failed``)."""

    reason = "install_failed"


class DiskFull(StoreError):
    """A store write failed because the file system is full (ENOSPC, EDQUOT); nothing changed. ``free`` and
    ``needed`` are bytes (``needed`` is what the failed write tried to write)."""

    reason = "disk_full"

    def __init__(self, message: str, free: int, needed: int) -> None:
        super().__init__(message)
        self.free = free
        self.needed = needed

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (type(self), (str(self), self.free, self.needed))


# --- marketplace -------------------------------------------------------------------------------------------------


class CatalogError(DeployError, LookupError):
    """A bundle, device or rollout the catalog does not know."""


class CatalogUnavailable(DeployError):
    """The catalog cannot be opened (no such database, a server that does not answer, a file that is not one)."""


class RolloutConflict(CatalogError):
    """Another rollout is active on the same target (one writer per target)."""


class NoChunkService(DeployError):
    """No marketplace service answers chunk requests on the broker."""


class UnknownTarget(DeployError):
    """A deploy target the marketplace has never heard from (a typo, or a device not provisioned yet)."""


# --- tooling and command line ------------------------------------------------------------------------------------


class ScaffoldError(EdgedError, ValueError):
    """A plugin cannot be scaffolded (bad name or language, folder already there, no templates)."""


class UsageError(EdgedError, ValueError):
    """Bad command-line arguments (exit code 2)."""


# --- warnings ----------------------------------------------------------------------------------------------------


class EdgedWarning(Warning):
    """Root of edged's warnings: a degraded state that still works."""


class BackendFallback(EdgedWarning):
    """A preferred backend could not be used and a fallback was chosen."""
