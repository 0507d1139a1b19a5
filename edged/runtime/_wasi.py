"""A plugin's WASI stdout and stderr: captured in unlinked temporary files and logged after each call.

Not through wasmtime's stdout callbacks: those run on wasmtime's I/O threads, and a Python callback entered from a
foreign thread while the interpreter shuts down ends that thread with a forced unwind, which Rust turns into an
abort (SIGABRT at exit after any WASI file or socket call). Reading the files on the calling thread after each call
needs no callback at all.
"""

from __future__ import annotations

import logging
import os
import tempfile

import wasmtime

from ._env import LogLimiter

#: Bytes of one stream logged per call; the rest is dropped, with a count.
MAX_OUTPUT_PER_CALL = 64 * 1024


class _Stream:
    __slots__ = ("fd", "level", "partial", "pos")

    def __init__(self, fd: int, level: int) -> None:
        self.fd = fd
        self.level = level
        self.pos = 0
        self.partial = b""


class WasiOutput:
    """The stdout (logged at info) and stderr (warning) of one WASI store."""

    def __init__(self, cfg: wasmtime.WasiConfig, limiter: LogLimiter) -> None:
        self._limiter = limiter
        self._streams: list[_Stream] = []
        try:
            for attr, level in (("stdout_file", logging.INFO), ("stderr_file", logging.WARNING)):
                fd, path = tempfile.mkstemp(prefix="edged-wasi-")
                self._streams.append(_Stream(fd, level))
                try:
                    setattr(cfg, attr, path)  # wasmtime opens it here
                finally:
                    os.unlink(path)
        except BaseException:
            self.close()
            raise

    def drain(self) -> None:
        """Log what the plugin wrote since the last drain, one log line per line of output, and free the space."""
        for s in self._streams:
            size = os.fstat(s.fd).st_size
            if size < s.pos:  # the writer appends at the start again after a truncation
                s.pos = 0
            if size == s.pos:
                continue
            want = size - s.pos
            data = os.pread(s.fd, min(want, MAX_OUTPUT_PER_CALL), s.pos)
            os.ftruncate(s.fd, 0)  # the file never holds more than one call's output (later writes leave a hole)
            s.pos = size
            *lines, rest = (s.partial + data).split(b"\n")
            s.partial = rest[:MAX_OUTPUT_PER_CALL]
            self._limiter.log_lines(s.level, lines)
            if want > len(data):
                self._limiter.logger.warning(
                    "%d bytes of the plugin's output were dropped (more than %d in one call)",
                    want - len(data),
                    MAX_OUTPUT_PER_CALL,
                )

    def close(self) -> None:
        """Log a last unterminated line, if any, and release the files."""
        streams, self._streams = self._streams, []
        for s in streams:
            if s.partial:
                self._limiter.log(s.level, s.partial)
            os.close(s.fd)

    def __del__(self) -> None:  # a plugin dropped without close(): release the files, log nothing
        for s in self._streams:
            os.close(s.fd)
        self._streams = []
