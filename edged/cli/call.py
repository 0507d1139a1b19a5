"""``edged call PLUGIN FUNCTION``: call one export of a plugin, modelled on ``extism call`` (it takes every
``extism call`` flag, with the same meaning, plus ``--fuel`` and ``--input-file``).

Output bytes go to stdout (with ``--loop N``, one line per call). Exit code 0 on success, 1 when the plugin
fails (message on stderr), 2 for bad usage or a module that cannot load. The plugin's log goes to stderr at
edged's log level (warnings and errors by default, where ``extism call`` shows nothing unless asked);
``--log-level`` after the command sets the plugin's own level, as with ``extism call``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import PluginError, PluginLoadError
from ..runtime import Manifest, Plugin, WasmPath, load_manifest_file
from .exitcodes import ExitCode


def register(sub: Any) -> None:
    p = sub.add_parser("call", help="call a function of a plugin", description=__doc__)
    p.add_argument("plugin", help="a .wasm file, or a manifest .json (see --manifest)")
    p.add_argument("function", help="the export to call")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", "-i", metavar="TEXT", help="input text")
    src.add_argument("--input-file", metavar="F", help="read the input from file F ('-' for stdin)")
    src.add_argument("--stdin", action="store_true", help="read the input from stdin")
    p.add_argument(
        "--config",
        "-c",
        metavar="K=V",
        action="append",
        default=[],
        help="config value (repeatable); a KEY without '=' sets it to the empty string",
    )
    p.add_argument(
        "--set-config", metavar="JSON", help="config as a JSON object of strings; --config values override it"
    )
    p.add_argument("--wasi", action="store_true", help="enable WASI")
    p.add_argument("--fuel", type=int, metavar="N", help="fuel limit per call")
    p.add_argument("--timeout-ms", "--timeout", type=int, metavar="N", help="wall-clock limit per call (ms)")
    p.add_argument("--allow-host", metavar="H", action="append", default=[], help="allow HTTP to host glob H")
    p.add_argument(
        "--enable-http-response-headers",
        action="store_true",
        help="let the plugin read the headers of HTTP responses (http_headers)",
    )
    p.add_argument(
        "--link",
        metavar="[NAME=]PATH",
        action="append",
        default=[],
        help="link another module, named NAME (default: its file name without extension)",
    )
    p.add_argument(
        "--allow-path",
        metavar="HOST[:GUEST]",
        action="append",
        default=[],
        help="pre-open a host directory for WASI, at GUEST (default: the same path); 'ro:' before it: read-only",
    )
    p.add_argument("--memory-max", type=int, metavar="PAGES", default=0, help="memory.max_pages (0: the manifest's)")
    p.add_argument("--http-response-max", type=int, metavar="BYTES", default=-1, help="memory.max_http_response_bytes")
    p.add_argument("--var-max", type=int, metavar="BYTES", default=-1, help="memory.max_var_bytes (0 disables vars)")
    p.add_argument(
        "--log-level",
        dest="plugin_log_level",
        choices=["trace", "debug", "info", "warn", "error"],
        help="show the plugin's log at this level and above on stderr (default: edged's own log level, warning)",
    )
    p.add_argument("--loop", type=int, metavar="N", default=1, help="call N times, one output line per call")
    p.add_argument("--manifest", "-m", action="store_true", help="PLUGIN is an Extism manifest JSON file")
    p.set_defaults(handler=run)


def _manifest(args: argparse.Namespace) -> Manifest:
    path = Path(args.plugin)
    if args.manifest or path.suffix == ".json":
        manifest, base = load_manifest_file(path)
        # resolve relative wasm paths against the manifest's directory, as Extism does
        wasm = [
            w.model_copy(update={"path": str(base / w.path)}) if isinstance(w, WasmPath) else w for w in manifest.wasm
        ]
        manifest = manifest.model_copy(update={"wasm": wasm})
    else:
        if not path.is_file():
            raise PluginLoadError(f"no such plugin file: {path}")
        manifest = Manifest(wasm=[WasmPath(path=str(path.resolve()))])
    if args.link:  # as extism call: the linked modules first, the plugin's own after them
        manifest = manifest.model_copy(update={"wasm": [_link(item) for item in args.link] + list(manifest.wasm)})
    config = dict(manifest.config)
    if args.set_config is not None:
        try:
            doc = json.loads(args.set_config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid value for --set-config flag: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise ValueError("invalid value for --set-config flag: expected a JSON object of strings")
        config.update(doc)
    for item in args.config:  # as extism call: KEY=VALUE, or a bare KEY for the empty string
        key, _, value = item.partition("=")
        config[key] = value
    hosts = list(manifest.allowed_hosts or []) + args.allow_host
    paths = dict(manifest.allowed_paths or {})
    for item in args.allow_path:
        paths.update([_allow_path(item)])
    limits: dict[str, int] = {}
    if args.memory_max > 0:
        limits["max_pages"] = args.memory_max
    if args.http_response_max >= 0:
        limits["max_http_response_bytes"] = args.http_response_max
    if args.var_max >= 0:
        limits["max_var_bytes"] = args.var_max
    memory = manifest.memory.model_copy(update=limits)
    return manifest.model_copy(
        update={
            "config": config,
            "allowed_hosts": hosts or manifest.allowed_hosts,
            "allowed_paths": paths or manifest.allowed_paths,
            "memory": memory,
        }
    )


def _link(item: str) -> WasmPath:
    """``--link NAME=PATH`` or ``--link PATH`` (named after the file, without its extension)."""
    name, sep, path = item.partition("=")
    if not sep:
        name, path = Path(item).stem, item
    if not name or not path:
        raise ValueError(f"--link expects NAME=PATH or PATH, got {item!r}")
    if not Path(path).is_file():
        raise PluginLoadError(f"no such module file: {path}")
    return WasmPath(path=str(Path(path).resolve()), name=name)


def _allow_path(item: str) -> tuple[str, str]:
    """``HOST`` or ``HOST:GUEST`` as ``extism call`` splits it (everything after the first ':' is the guest
    path); edged's ``ro:`` prefix for a read-only directory is kept on the host path."""
    ro = item.startswith("ro:")
    host, sep, guest = item.removeprefix("ro:").partition(":")
    if not host:
        raise ValueError(f"--allow-path needs a directory, got {item!r}")
    return ("ro:" if ro else "") + host, guest if sep else host


def _input(args: argparse.Namespace) -> bytes:
    if args.input is not None:
        text: str = args.input
        return text.encode()
    if args.stdin or args.input_file == "-":
        return sys.stdin.buffer.read()
    if args.input_file:
        return Path(args.input_file).read_bytes()
    return b""


#: ``extism call``'s log levels as Python's (5 is edged's TRACE)
_LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _logging(args: argparse.Namespace) -> None:
    """``call --log-level`` sets the plugin's level (its lines go to stderr through edged's own log handler);
    without it the plugin logs at edged's level. Deliberately not ``extism call``'s default, which shows nothing:
    a plugin's warnings and errors are what explain a failed call. Set before the plugin exists, so its
    ``get_log_level`` sees the level."""
    if args.plugin_log_level is not None:
        logging.getLogger("edged.plugin").setLevel(_LEVELS[args.plugin_log_level])


def run(args: argparse.Namespace) -> int:
    try:
        if args.loop < 1:
            raise ValueError("--loop must be at least 1")
        data = _input(args)
        _logging(args)
        plugin = Plugin(
            _manifest(args),
            wasi=args.wasi,
            functions=[],
            fuel=args.fuel,
            timeout_ms=args.timeout_ms,
            http_response_headers=args.enable_http_response_headers,
        )
    except (PluginLoadError, ValueError, OSError) as exc:
        print(f"edged call: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    paths = plugin.compiled.manifest.allowed_paths
    if args.wasi and paths:  # like extism call, the manifest is trusted here (a device decides for itself): say so
        opened = ", ".join(
            f"{host.removeprefix('ro:')} as {guest} ({'read-only' if host.startswith('ro:') else 'read-write'})"
            for host, guest in paths.items()
        )
        print(f"edged call: the manifest opens host folders to the plugin: {opened}", file=sys.stderr)
    out = sys.stdout.buffer
    with plugin:
        for i in range(args.loop):
            try:
                result = plugin.call(args.function, data)
            except PluginLoadError as exc:  # found while instantiating, on the first call: the module cannot load
                out.flush()
                print(f"edged call: {exc}", file=sys.stderr)
                return ExitCode.USAGE
            except PluginError as exc:
                out.flush()
                print(f"edged call: {exc}", file=sys.stderr)
                return ExitCode.FAILED
            out.write(result)
            if args.loop > 1 or i < args.loop - 1:
                out.write(b"\n")
    out.flush()
    return ExitCode.OK
