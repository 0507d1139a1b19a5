"""The hostile-plugin suite (issue 10): every attack runs through the real CLI as a subprocess.

Each case is a plugin written as an attacker would write it (WAT, compiled at test time) and is run through
``edged call``, ``edged preview``, ``edged plugin check`` and ``edged run`` (16×16 emulated, beside the gallery's
plasma). Every test asserts the security property, not the wording: the process survives, the bad plugin is refused
or stopped with one clear line (no traceback), it does no IO outside its grant, the process's peak RSS stays within
a bound derived from the configured memory cap, and the healthy plugin keeps its frame rate (dropped frames judged
against plasma alone, measured in the same test module).
"""
