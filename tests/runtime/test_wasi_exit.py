"""Issue 14, point 2: a process that used WASI with pre-opened files exits cleanly (no SIGABRT at teardown).

``edged call`` is covered in test_cli.py; this is the same check for an API user's own script.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCRIPT = """
import sys
from edged.runtime import Plugin

wasm, data = sys.argv[1], sys.argv[2]
manifest = {"wasm": [{"path": wasm}], "allowed_paths": {data: "/data"}}
plugin = Plugin(manifest, wasi=True)
out = plugin.call("read_file", "/data/in.txt")
sys.stdout.buffer.write(out)
# no close(): the interpreter tears the plugin down at exit, as a careless script would
"""


def test_an_api_process_using_wasi_files_never_aborts_at_exit(built_plugin: object, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("calibration")
    script = tmp_path / "use_wasi.py"
    script.write_text(SCRIPT)
    wasm = built_plugin("wasi_files")  # type: ignore[operator]
    cmd = [sys.executable, str(script), str(wasm), str(tmp_path)]

    def once(_: int) -> tuple[int, bytes, str]:
        r = subprocess.run(cmd, capture_output=True, timeout=120)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")[-2000:]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(once, range(20)))
    bad = [r for r in results if r[:2] != (0, b"calibration")]
    assert not bad, f"{len(bad)} of 20 runs failed; first: {bad[0]}"
