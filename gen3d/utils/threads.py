"""CPU thread policy: how many intra-op threads torch uses, chosen from the cores that are free.

Torch's default (one thread per core) thrashes when other processes share the cores: with one busy
process on a 2-core machine, two torch threads spend their time waiting for each other at every
parallel region (an order of magnitude slower), while one thread keeps most of its speed.

`num_threads` (every 3D and video config): 0 = auto (the default), N > 0 = exactly N threads.
Auto: $OMP_NUM_THREADS when it is set (the user's own choice); otherwise the cores this process may
run on (os.sched_getaffinity: taskset, cgroups, SLURM allocations) minus how busy other processes keep
those cores (sampled for a quarter of a second from /proc/stat's per-core lines, or os.getloadavg
where there is no /proc), split between the processes of this run on the machine; at least 1. When
the machine is oversubscribed (no free core), one warning names the override. The choice is made
once, when the run starts.
"""

from __future__ import annotations

import logging
import os
import time

from gen3d.errors import UserError

log = logging.getLogger("gen3d")
SAMPLE_SECONDS = 0.25


def _usable() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    return len(_usable())


def _cpu_times(cpus: set[int]) -> dict[int, tuple[float, float]] | None:
    """cpu -> (busy, total) jiffies from /proc/stat's per-core lines, for the given cores; or None."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    fields = [float(v) for v in values]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
                    total = sum(fields[:8])  # guest time is already counted in user
                    out[int(name[3:])] = (total - idle, total)
    except (OSError, ValueError):
        return None
    return out or None


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of the cores this process may use other processes keep busy now (this process sleeps
    while it measures): the busy share of each core over `seconds`, summed."""
    cpus = _usable()
    first = _cpu_times(cpus)
    if first is not None:
        time.sleep(seconds)
        second = _cpu_times(cpus)
        if second is not None:
            shares = [
                (second[c][0] - first[c][0]) / (second[c][1] - first[c][1])
                for c in first
                if c in second and second[c][1] > first[c][1]
            ]
            if shares:
                return sum(shares) * len(cpus) / len(shares)
    try:  # runnable processes machine-wide, scaled to our cores
        return os.getloadavg()[0] * len(cpus) / (os.cpu_count() or len(cpus))
    except (AttributeError, OSError):
        return 0.0


def auto_threads(processes: int = 1, busy: float | None = None, cores: int | None = None) -> tuple[int, bool]:
    """(threads per process, oversubscribed) for `processes` processes of this run on `cores` usable
    cores of which `busy` are kept busy by other work."""
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    free = cores - busy
    threads = max(1, int(free + 0.5) // max(processes, 1))
    oversubscribed = free < processes - 0.25
    return threads, oversubscribed


def processes_per_node(cfg) -> int:
    """Processes of this run on this machine: the launcher's LOCAL_WORLD_SIZE, else trainer.devices."""
    if os.environ.get("LOCAL_WORLD_SIZE"):
        return max(1, int(os.environ["LOCAL_WORLD_SIZE"]))
    from gen3d.utils.distributed import devices_per_node

    devices = getattr(getattr(cfg, "trainer", None), "devices", 1)
    try:
        return max(1, devices_per_node(devices))
    except (TypeError, ValueError):  # "auto" and other Lightning spellings
        return 1


def check_num_threads(num_threads) -> None:
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 0:
        raise UserError(f"num_threads must be 0 (auto) or a positive number of CPU threads (got {num_threads!r})")


def apply_thread_policy(num_threads: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads by the policy above; returns the number set."""
    import torch

    check_num_threads(num_threads)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if num_threads > 0:
        threads = num_threads
    elif omp.isdigit() and int(omp) > 0:
        threads = int(omp)
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
