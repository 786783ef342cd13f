"""The peak resident memory of this process, for benchmarks that measure one job per child.

``getrusage(RUSAGE_SELF).ru_maxrss`` is wrong for that: Linux carries it across ``fork`` and
``exec``, so a child started by a parent that once held a 3 GB model reports 3 GB whatever it
does itself. ``VmHWM`` in ``/proc/self/status`` belongs to the process's current address space
and starts again at ``exec``; elsewhere (macOS) ``ru_maxrss`` is the fallback.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """The most memory this process (since its ``exec``) has held resident, in bytes."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux
