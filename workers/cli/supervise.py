"""``ltxpool supervise``: run the pool (N compaction workers and a janitor) until stopped."""

from __future__ import annotations

import argparse
import errno

from ltxpool.cli.argtypes import port, positive_int, positive_seconds, seconds
from ltxpool.discovery import database_folders
from ltxpool.pool.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    PoolConfig,
    check_replicas,
    load_config,
    with_overrides,
)
from ltxpool.pool.errors import ConfigError
from ltxpool.pool.logging import drain_logging, setup_logging
from ltxpool.pool.metrics import PoolMetrics
from ltxpool.pool.netfs import MOUNTINFO, read_mount_table, refuse_network_fs
from ltxpool.pool.supervisor import Supervisor

NAME = "supervise"
HELP = (
    "Run the pool: N workers (replicating the config's [[databases]], compacting every replica) and one "
    "janitor, restarted when they die. "
    "SIGTERM/SIGINT stop it gracefully (exit 0), a second SIGINT at once, SIGHUP reloads --config. "
    "Refuses replicas on network filesystems."
)






def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replicas", nargs="*", metavar="REPLICA",
                        help="replica root directories (replace the config file's list)")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (see README: Operating the pool)")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="compaction workers (default 2)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json lines on stderr")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    parser.add_argument("--allow-network-fs", action="store_true", default=None,
                        help="run even if a replica is on NFS/CIFS/Ceph/... (flock may not protect anything)")
    parser.add_argument("--metrics-port", type=port, metavar="P", help="serve Prometheus metrics on this port")
    parser.add_argument("--metrics-address", metavar="ADDR", help="address for --metrics-port (default 127.0.0.1)")
    parser.add_argument("--grace", type=seconds, metavar="SECONDS",
                        help="on SIGTERM, how long children may finish their work before SIGKILL (default 10)")
    parser.add_argument("--janitor-interval", type=positive_seconds, metavar="SECONDS",
                        help="pause between janitor rounds (default 60)")
    parser.add_argument("--poll-interval", type=positive_seconds, metavar="SECONDS",
                        help="how often workers look for new level-0 files (default 1)")
    parser.add_argument("--hang-timeout", type=positive_seconds, metavar="SECONDS",
                        help="kill and restart a child busy on one item this long (default 900)")
    parser.add_argument("--mount-table", metavar="FILE",
                        help=f"diagnostic: judge filesystems from this mountinfo/mounts file instead of {MOUNTINFO}")


def prepare(args: argparse.Namespace) -> PoolConfig:
    """The checked configuration: file, then flags, then replicas and filesystems."""
    config = load_config(args.config) if args.config else PoolConfig()
    config = with_overrides(
        config,
        replicas=tuple(args.replicas),
        workers=args.workers,
        log_format=args.log_format,
        log_level=args.log_level,
        allow_network_fs=args.allow_network_fs,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        grace=args.grace,
        janitor_interval=args.janitor_interval,
        poll_interval=args.poll_interval,
        hang_timeout=args.hang_timeout,
        mount_table=args.mount_table,
    )
    check_replicas(config, args.config or "<command line>")
    if not config.allow_network_fs:
        refuse_network_fs([*config.replicas, *database_folders(config.databases)],
                          read_mount_table(config.mount_table or MOUNTINFO))
    return config


def run(args: argparse.Namespace) -> int:
    config = prepare(args)
    metrics = PoolMetrics()
    supervisor = Supervisor(config, metrics, (lambda: prepare(args)) if args.config else None)
    # Logging first, so the metrics server's warning (bound beyond loopback) is a pool log line.
    setup_logging(config.log_format, config.log_level)
    try:
        if config.metrics_port is not None:
            try:
                metrics.serve(config.metrics_port, config.metrics_address, lambda: supervisor.config.replicas,
                              config.janitor.foreign_temp_age)
            except OSError as exc:
                raise ConfigError(f"{config.metrics_address}:{config.metrics_port}", "metrics_port",
                                  exc.errno or errno.EINVAL, exc.strerror or str(exc)) from exc
        return supervisor.run()
    finally:
        drain_logging()
