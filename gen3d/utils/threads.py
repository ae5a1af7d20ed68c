"""CPU thread policy: how many intra-op threads torch uses, chosen from the cores that are free.

Torch's default (one thread per core) thrashes when other processes share the cores: with one busy
process on a 2-core machine, two torch threads spend their time waiting for each other at every
parallel region (an order of magnitude slower), while one thread keeps most of its speed.

`num_threads` (every method's config): 0 = auto (the default), N > 0 = exactly N threads.
Auto: the cores this process may run on (os.sched_getaffinity), minus the cores other processes
keep busy, measured over a short window from /proc/stat (or os.getloadavg where there is no
/proc), split between the processes of this run on the machine; at least 1. When the machine is
oversubscribed (no free core), a warning names the override.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("gen3d")
SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies over all cores from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores other processes keep busy now (this process sleeps while it measures)."""
    first = _cpu_times()
    if first is not None:
        time.sleep(seconds)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            return (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(processes: int = 1, busy: float | None = None, cores: int | None = None) -> tuple[int, bool]:
    """(threads per process, oversubscribed) for `processes` processes of this run on the machine."""
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    free = min(cores, (os.cpu_count() or cores) - busy)
    threads = max(1, int(free + 0.5) // max(processes, 1))
    oversubscribed = free < processes - 0.25
    return threads, oversubscribed


def apply_thread_policy(num_threads: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads by the policy above; returns the number set."""
    import torch

    if num_threads and num_threads > 0:
        threads = num_threads
    else:
        threads, oversubscribed = auto_threads(processes)
        if oversubscribed:
            log.warning(
                "warning: the CPU is busy with other work (%d usable cores); using %d thread%s per "
                "process; set num_threads=N to override",
                usable_cores(),
                threads,
                "s" * (threads > 1),
            )
    torch.set_num_threads(threads)
    log.debug("torch intra-op threads: %d", threads)
    return threads
