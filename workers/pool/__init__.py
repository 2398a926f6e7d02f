"""The pool: a supervisor keeping N compaction workers and one janitor alive.

Modules: ``config`` (the TOML file and its overrides), ``netfs`` (refusal of
network filesystems), ``logging`` (one stream for every process), ``child`` (one
child process and its typed events), ``watcher`` (N copies of one role, restart
policy), ``schedule`` (when each replica is due), ``roles`` (the worker's and the
janitor's whole life), ``metrics`` (Prometheus counters from the children's events),
``supervisor`` (the loop).

Layer: imports everything below it (locks, ltx, replica, replicate), never above.
"""

from __future__ import annotations

from ltxpool.pool.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    PoolConfig,
    check_replicas,
    load_config,
    with_overrides,
)
from ltxpool.pool.errors import NetworkFilesystemError
from ltxpool.pool.logging import drain_logging, setup_logging
from ltxpool.pool.metrics import PoolMetrics
from ltxpool.pool.netfs import MOUNTINFO, read_mount_table, refuse_network_fs
from ltxpool.pool.supervisor import Supervisor

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MOUNTINFO",
    "NetworkFilesystemError",
    "PoolConfig",
    "PoolMetrics",
    "Supervisor",
    "check_replicas",
    "drain_logging",
    "load_config",
    "read_mount_table",
    "refuse_network_fs",
    "setup_logging",
    "with_overrides",
]
