"""Peak memory of the running process, for the benchmarks that measure it.

``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``: getrusage's
``ru_maxrss`` would carry the parent's high-water mark into a forked child.
"""

from __future__ import annotations

__all__ = ["reset_peak_rss", "peak_growth_mib"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Start the high-water mark afresh; return the RSS now (KiB), the baseline to measure from."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kib("VmRSS")


def peak_growth_mib(baseline_kib: int) -> float:
    """How far the peak RSS rose above ``baseline_kib`` since the reset."""
    return (_status_kib("VmHWM") - baseline_kib) / 1024
