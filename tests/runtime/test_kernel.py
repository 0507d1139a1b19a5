"""The kernel's observable semantics, called directly from Python."""

from __future__ import annotations

import pytest
import wasmtime

from edged.runtime._engine import ENGINE
from edged.runtime._kernel import KERNEL_EXPORTS, Kernel
from edged.runtime._plugin import kernel_module


class K:
    """A kernel in its own store, with every export callable by name."""

    def __init__(self, config: dict[str, str] | None = None) -> None:
        self.store = wasmtime.Store(ENGINE)
        self.store.set_fuel(10**12)
        self.store.set_epoch_deadline(10**9)
        inst = wasmtime.Instance(self.store, kernel_module(), [])
        self.view = Kernel(self.store, inst, config or {}, 2)
        self.ex = inst.exports(self.store)

    def __getattr__(self, name: str):
        f = self.ex[name]
        return lambda *a: f(self.store, *a)

    def put(self, data: bytes) -> int:
        h = self.alloc(len(data))
        for i, b in enumerate(data):
            self.store_u8(h + i, b)
        return h

    def get(self, h: int) -> bytes:
        return bytes(self.load_u8(h + i) for i in range(self.length(h)))


@pytest.fixture
def k() -> K:
    return K({"thing": "value", "empty": ""})


def test_exports_have_extism_types(k: K) -> None:
    kinds = {str(wasmtime.ValType.i32()): "i32", str(wasmtime.ValType.i64()): "i64"}
    for name, (params, results) in KERNEL_EXPORTS.items():
        ft = k.ex[name].type(k.store)
        assert tuple(kinds[str(p)] for p in ft.params) == params, name
        assert tuple(kinds[str(r)] for r in ft.results) == results, name


def test_alloc_zero_is_null_and_blocks_have_lengths(k: K) -> None:
    assert k.alloc(0) == 0
    a = k.alloc(5)
    b = k.alloc(100)
    assert a and b and a != b
    assert k.length(a) == 5 and k.length(b) == 100
    assert k.length_unsafe(a) == 5


def test_length_is_zero_for_anything_but_an_active_block_start(k: K) -> None:
    a = k.alloc(32)
    assert k.length(0) == 0
    assert k.length(a + 1) == 0
    assert k.length(a + 8) == 0
    assert k.length(2**40) == 0
    k.free(a)
    assert k.length(a) == 0


def test_out_of_bounds_loads_return_zero_and_stores_do_nothing(k: K) -> None:
    size = k.memory_bytes()
    assert k.load_u8(size) == 0
    assert k.load_u64(size - 4) == 0
    assert k.load_u8(2**63) == 0
    k.store_u8(size + 10, 7)
    k.store_u64(size - 1, 7)
    # the kernel's own state below the heap is out of bounds for plugins too
    k.store_u64(0, 0xDEAD)
    assert k.load_u64(0) == 0
    h = k.alloc(8)
    k.store_u64(h, 0x0102030405060708)
    assert k.load_u64(h) == 0x0102030405060708
    assert k.load_u8(h) == 8


def test_input_set_and_loads_past_the_end(k: K) -> None:
    h = k.put(b"hello world!")
    k.input_set(h, 12)
    assert k.input_offset() == h and k.input_length() == 12
    assert k.input_load_u8(0) == ord("h")
    assert k.input_load_u8(12) == 0
    assert k.input_load_u64(0) == int.from_bytes(b"hello wo", "little")
    assert k.input_load_u64(5) == 0  # would read past the end
    assert k.input_load_u64(4) == int.from_bytes(b"o world!", "little")


def test_freeing_the_input_block_zeroes_the_input_length(k: K) -> None:
    h = k.put(b"abc")
    k.input_set(h, 3)
    k.free(h)
    assert k.input_length() == 0


def test_output_and_error_slots(k: K) -> None:
    h = k.put(b"out")
    k.output_set(h, 3)
    assert (k.output_offset(), k.output_length()) == (h, 3)
    e = k.put(b"bad")
    k.error_set(e)
    assert k.error_get() == e
    k.error_set(0)
    assert k.error_get() == 0


def test_reset_clears_blocks_input_output_and_error(k: K) -> None:
    h = k.put(b"data")
    k.input_set(h, 4)
    k.output_set(h, 4)
    k.error_set(h)
    k.reset()
    assert (k.input_length(), k.output_length(), k.error_get()) == (0, 0, 0)
    assert k.length(h) == 0
    assert k.alloc(4) == h  # the heap starts over


def test_freed_blocks_are_reused_and_split(k: K) -> None:
    a = k.alloc(1024)
    b = k.alloc(8)  # keeps `a` from being the last block
    k.free(a)
    c = k.alloc(16)
    assert c == a  # first fit
    d = k.alloc(64)  # the rest of the split block
    assert a < d < b
    assert k.length(c) == 16 and k.length(d) == 64


def test_freeing_the_last_block_returns_it_to_the_bump_region(k: K) -> None:
    a = k.alloc(8)
    b = k.alloc(8)
    k.free(b)
    assert k.alloc(8) == b
    assert k.length(a) == 8


def test_alloc_grows_memory_and_fails_cleanly(k: K) -> None:
    before = k.memory_bytes()
    h = k.alloc(before + 65536)
    assert h and k.length(h) == before + 65536
    assert k.memory_bytes() > before
    assert k.alloc(2**33) == 0  # beyond a 32-bit memory: null, not a trap


def test_config_get_consumes_the_key_and_returns_a_new_block(k: K) -> None:
    key = k.put(b"thing")
    v = k.config_get(key)
    assert k.get(v) == b"value"
    assert k.length(key) == 0 or key == v  # the key was freed (its block may be reused for the value)
    assert k.config_get(k.put(b"missing")) == 0
    empty = k.config_get(k.put(b"empty"))
    assert empty != 0 and k.length(empty) == 0
    assert k.config_get(0) == 0


def test_log_level_comes_from_the_host(k: K) -> None:
    assert k.get_log_level() == 2
    k.view.set_log_level(0x7FFFFFFF)
    assert k.get_log_level() == 0x7FFFFFFF


def test_host_view_places_input_and_reads_output(k: K) -> None:
    k.view.begin(b"x" * 100_000)  # larger than the initial memory's free space: grows
    assert k.input_length() == 100_000
    assert k.input_load_u8(99_999) == ord("x")
    h = k.view.alloc_bytes(b"result")
    k.output_set(h, 6)
    off, n, err = k.view.result()
    assert k.view.output(off, n, 1 << 20) == b"result" and err == 0
    k.view.begin(b"")
    assert (k.input_length(), k.output_length()) == (0, 0)


def test_new_blocks_are_zeroed_even_where_old_data_was(k: K) -> None:
    h = k.put(b"\xff" * 64)
    k.reset()
    again = k.alloc(64)
    assert again == h
    assert k.get(again) == b"\0" * 64
    a = k.alloc(256)
    k.put(b"x")  # keep `a` from being the last block
    for i in range(256):
        k.store_u8(a + i, 0xAB)
    k.free(a)
    reused = k.alloc(200)
    assert reused == a and k.get(reused) == b"\0" * 200


# --- a plugin that rewrites kernel memory (issue 10, point 1 and the bounds of point 7) ----------------------------


def _forge_length(k: K, h: int, length: int) -> None:
    """What a hostile plugin does: rewrite the length in a block's header with store_u64."""
    k.store_u64(h - 8, length)


def test_a_forged_length_makes_the_handle_no_block(k: K) -> None:
    h = k.put(b"hello")
    _forge_length(k, h, 2**40)
    assert k.length(h) == 0
    assert k.length_unsafe(h) == 2**40  # the unsafe form reads the header as it is, as in Extism
    # the host's reads are bounded by the header's capacity and the heap: no read past the heap, no crash
    assert k.view.read(h) == b""
    assert k.view.take(h) == b""


def test_a_forged_length_within_the_capacity_reads_only_that_block(k: K) -> None:
    h = k.put(b"hello")  # capacity 8
    _forge_length(k, h, 8)
    assert k.view.read(h) == b"hello\0\0\0"
    _forge_length(k, h, 9)
    assert k.view.read(h) == b""


def test_loads_and_stores_near_two_to_the_64_do_not_wrap_onto_the_control_block(k: K) -> None:
    before = bytes(k.view.ctl)
    for p in (2**64 - 8, 2**64 - 1, 2**64 - 4):
        k.store_u64(p - 2**64, 0xFFFF_FFFF_FFFF_FFFF)  # i64 arguments: -8, -1, -4
        k.store_u8(p - 2**64, 0xFF)
        assert k.load_u64(p - 2**64) == 0
    assert bytes(k.view.ctl) == before
    assert k.view.read(k.config_get(k.put(b"thing"))) == b"value"


def test_loads_and_stores_stop_at_the_heap_top(k: K) -> None:
    h = k.alloc(8)
    top = h + 8
    k.store_u64(top, 0xDEAD)  # past the last block: memory the plugin never allocated
    k.store_u8(top + 100, 1)
    assert k.load_u64(top) == 0 and k.load_u8(top + 100) == 0
    assert k.load_u64(top - 4) == 0  # would straddle the heap top
    k.reset()
    assert k.load_u8(h) == 0  # reset memory keeps its bytes, but they are no longer readable


def test_an_output_outside_the_allocated_blocks_is_refused(k: K) -> None:
    from edged.errors import PluginError

    h = k.view.alloc_bytes(b"[]")
    size = k.memory_bytes()
    with pytest.raises(PluginError, match="outside the blocks"):
        k.view.output(h + 1024, 24 << 20, 64 << 20)  # a frame built in memory past the heap top
    with pytest.raises(PluginError, match="outside the blocks"):
        k.view.output(size - 16, 8, 1 << 20)
    assert k.view.output(h, 2, 1 << 20) == b"[]"


def test_the_input_can_only_be_read_inside_the_heap(k: K) -> None:
    h = k.put(b"in the heap")
    k.input_set(8, 64)  # a plugin pointing its input at the control block below the heap
    assert k.input_load_u8(0) == 0 and k.input_load_u64(0) == 0
    k.input_set(h, 11)
    assert k.input_load_u8(0) == ord("i")


def test_the_kernel_heap_limit_covers_host_results_but_not_the_input() -> None:
    from edged.errors import OutOfMemory

    kern = K()
    kern.view.heap_limit = 1 << 20
    kern.view.begin(b"x" * (3 << 20))  # the host's input may be larger than the limit: it is not the plugin's
    assert kern.input_length() == 3 << 20
    kern.view.alloc_bytes(b"y" * (512 << 10))
    with pytest.raises(OutOfMemory, match="over its limit"):
        kern.view.alloc_bytes(b"z" * (768 << 10))  # what a host function would hand the plugin, over the limit
    assert kern.alloc(768 << 10) == 0  # and the plugin's own allocations fail in the kernel itself
