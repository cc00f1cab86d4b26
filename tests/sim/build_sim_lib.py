"""Build tests/sim/libvitastor_client_sim.c, the simulated libvitastor_client, with gcc.

The result has the C ABI of Vitastor's ``libvitastor_client.so`` (``vitastor_c_*``) and works on
the simulated cluster of tests/sim (metadata in etcd, data in sparse files; see README.md), so
code that loads the real library can be pointed at it::

    from tests.sim.build_sim_lib import build
    lib_path = build(tmp_dir)          # <tmp_dir>/libvitastor_client.so
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

__all__ = ["CFLAGS", "LIB_NAME", "SOURCE", "build"]

SOURCE = Path(__file__).resolve().parent / "libvitastor_client_sim.c"
LIB_NAME = "libvitastor_client.so"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-O2", "-shared", "-fPIC", "-fvisibility=hidden"]


def build(out_dir: Path | str, *, cc: str | None = None, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the simulated client library into ``out_dir/libvitastor_client.so``; returns its
    path. ``cc`` (a command line, e.g. ``"gcc -fsanitize=address"``) defaults to $CC, then gcc.
    Raises RuntimeError with the compiler's output."""
    out = Path(out_dir) / LIB_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler = shlex.split(cc or os.environ.get("CC") or "gcc")
    proc = subprocess.run([*compiler, *CFLAGS, *extra_flags, "-o", str(out), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"building {out} failed ({proc.returncode}):\n{proc.stderr}")
    return out
