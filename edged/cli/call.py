"""``edged call PLUGIN FUNCTION``: call one export of a plugin, modelled on ``extism call``.

Output bytes go to stdout (with ``--loop N``, one line per call). Exit code 0 on success, 1 when the plugin
fails (message on stderr), 2 for bad usage or a module that cannot load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import PluginError, PluginLoadError
from ..runtime import Plugin
from ..runtime._manifest import Manifest, WasmPath, load_manifest_file


def register(sub: Any) -> None:
    p = sub.add_parser("call", help="call a function of a plugin", description=__doc__)
    p.add_argument("plugin", help="a .wasm file, or a manifest .json (see --manifest)")
    p.add_argument("function", help="the export to call")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", "-i", metavar="TEXT", help="input text")
    src.add_argument("--input-file", metavar="F", help="read the input from file F ('-' for stdin)")
    p.add_argument("--config", "-c", metavar="K=V", action="append", default=[], help="config key (repeatable)")
    p.add_argument("--wasi", action="store_true", help="enable WASI")
    p.add_argument("--fuel", type=int, metavar="N", help="fuel limit per call")
    p.add_argument("--timeout-ms", type=int, metavar="N", help="wall-clock limit per call")
    p.add_argument("--allow-host", metavar="H", action="append", default=[], help="allow HTTP to host glob H")
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
    config = dict(manifest.config)
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config expects K=V, got {item!r}")
        config[key] = value
    hosts = list(manifest.allowed_hosts or []) + args.allow_host
    return manifest.model_copy(update={"config": config, "allowed_hosts": hosts or manifest.allowed_hosts})


def _input(args: argparse.Namespace) -> bytes:
    if args.input is not None:
        return args.input.encode()
    if args.input_file == "-":
        return sys.stdin.buffer.read()
    if args.input_file:
        return Path(args.input_file).read_bytes()
    return b""


def run(args: argparse.Namespace) -> int:
    try:
        if args.loop < 1:
            raise ValueError("--loop must be at least 1")
        data = _input(args)
        plugin = Plugin(_manifest(args), wasi=args.wasi, fuel=args.fuel, timeout_ms=args.timeout_ms)
    except (PluginLoadError, ValueError, OSError) as exc:
        print(f"edged call: {exc}", file=sys.stderr)
        return 2
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
                return 2
            except PluginError as exc:
                out.flush()
                print(f"edged call: {exc}", file=sys.stderr)
                return 1
            out.write(result)
            if args.loop > 1 or i < args.loop - 1:
                out.write(b"\n")
    out.flush()
    return 0
