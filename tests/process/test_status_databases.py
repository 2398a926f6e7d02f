"""``ltxpool status --config``: every database of the pool's ``[[databases]]``, real replicas, real pool.

Five databases in one ``dir`` entry, four replicated with ``ltxpool replicate --once``:

* ``a.db`` replicated, its state carrying ``seen_at``/``durable_at`` (lag 0.25 s) and
  written since, but within its interval (30 s) plus a second: not late (the control);
* ``b.db`` deleted afterwards: its replica is kept, "source gone";
* ``c.db`` with a planted ``problem.json``: failing, its reason shown (and the lag its
  ``replicate --once`` recorded);
* ``d.db`` whose ``durable_at`` is old and which was written 100 s ago, after it: lagging;
* ``e.db`` never replicated.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ltxpool.pool.config import load_config
from ltxpool.pool.metrics import PoolMetrics
from ltxpool.replica.layout import Replica
from tests.process.test_supervisor import Pool
from tests.support.helpers import run_ltxpool
from tests.support.users import User, run_as

INTERVAL = 30.0
REASON = "stat database: permission denied (planted by the test)"


def _database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()


def _add_times(replica: Path, seen_at: float, durable_at: float) -> None:
    path = replica / ".ltxpool-replicate" / "state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "seen_at": seen_at, "durable_at": durable_at}))


def _backdate(database: Path, when: float) -> None:
    for path in (database, Path(f"{database}-wal")):
        if path.exists():
            os.utime(path, (when, when))


@pytest.fixture(scope="module")
def pool_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("databases")
    dbs, replicas = top / "dbs", top / "ltx"
    dbs.mkdir()
    replicas.mkdir()
    for name in "abcde":
        _database(dbs / f"{name}.db")
    for name in "abcd":
        done = run_ltxpool("replicate", str(dbs / f"{name}.db"), str(replicas / f"{name}.db"), "--once")
        assert done.returncode == 0, done.stderr
    now = time.time()
    _add_times(replicas / "a.db", now - 300.25, now - 300.0)
    _backdate(dbs / "a.db", now - 5)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dbs / 'b.db'}{suffix}").unlink(missing_ok=True)
    (replicas / "c.db" / ".ltxpool-replicate" / "problem.json").write_text(
        json.dumps({"reason": REASON, "since": now - 60, "pid": 4242}))
    _add_times(replicas / "d.db", now - 201, now - 200)
    _backdate(dbs / "d.db", now - 100)
    config = top / "ltxpool.toml"
    config.write_text(f'[[databases]]\ndir = "dbs"\nreplica_root = "ltx"\ninterval = {INTERVAL}\n')
    return {"config": config, "dbs": dbs, "replicas": replicas}


def _summary(stdout: str) -> dict[str, str]:
    block = stdout.split("\n\n")[0]
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(":") for line in block.splitlines() if not line.startswith(("pool:", " ")))}


def _rows(stdout: str) -> list[list[str]]:
    table = stdout.split("\n\n")[1].splitlines()
    assert table[0].split() == ["STATE", "DATABASE", "REPLICA", "TXID", "LAG", "ORPHANS", "QUARANTINED", "LAST_ERROR"]
    return [line.split("  ") for line in table[1:] if not line.startswith("(")]


def _names(rows: list[list[str]]) -> list[str]:
    return [os.path.basename(next(cell for cell in row if cell.strip().endswith(".db")).strip()) for row in rows]


def test_summary_counts_each_state_exactly_and_the_table_lists_the_worst_first(pool_config: dict[str, Path]) -> None:
    done = run_ltxpool("status", "--config", str(pool_config["config"]), timeout=60)
    assert done.returncode == 0, done.stderr
    assert _summary(done.stdout) == {
        "databases": "5", "replicated": "1", "never replicated yet": "1", "lagging": "1", "failing": "1",
        "source gone": "1", "unreadable": "0", "with orphans": "0", "with quarantined files": "0",
        "lag": "max 1.7m, p99 1.7m (3 databases with a known lag)",
    }
    rows = _rows(done.stdout)
    assert _names(rows) == ["c.db", "d.db", "e.db", "b.db", "a.db"]
    states = [row[0].strip() for row in rows]
    assert states == ["failing", "lagging", "never replicated yet", "source gone", "replicated"]
    assert rows[0][-1].startswith(REASON + " (for 1.0m")
    assert rows[3][-1] == "the database is gone: no such file"
    assert os.path.isfile(Replica(pool_config["replicas"] / "b.db").path_of(9, 1, 1)), "the replica is kept"


def test_top_shows_that_many_rows_worst_first(pool_config: dict[str, Path]) -> None:
    done = run_ltxpool("status", "--config", str(pool_config["config"]), "--top", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    assert _names(_rows(done.stdout)) == ["c.db", "d.db"]
    assert done.stdout.rstrip().endswith("(2 of 5 databases shown, worst first; --top N or --all for more)")
    every = run_ltxpool("status", "--config", str(pool_config["config"]), "--all", timeout=60)
    assert len(_rows(every.stdout)) == 5


def test_json_gives_each_database_its_state_txid_lag_and_last_error(pool_config: dict[str, Path]) -> None:
    done = run_ltxpool("status", "--config", str(pool_config["config"]), "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) >= {"summary", "databases", "replicas", "resources"}
    assert document["summary"]["failing"] == 1 and document["summary"]["source_gone"] == 1
    by_name = {os.path.basename(entry["database"]): entry for entry in document["databases"]}
    dbs, replicas = pool_config["dbs"], pool_config["replicas"]
    a, b, c, d, e = (by_name[f"{name}.db"] for name in "abcde")
    assert (a["state"], a["txid"], a["replica"], a["interval"]) == ("replicated", 1, str(replicas / "a.db"), INTERVAL)
    assert a["last_lag_seconds"] == pytest.approx(0.25) and a["lag_seconds"] == pytest.approx(0.25)
    assert a["last_error"] is None and a["database"] == str(dbs / "a.db")
    assert (b["state"], b["txid"], b["note"]) == ("source gone", 1, "the database is gone: no such file")
    assert (c["state"], c["last_error"]) == ("failing", REASON)
    assert 0 <= c["last_lag_seconds"] < 30, "replicate --once records its step's lag too"
    assert c["error_since"] == pytest.approx(time.time() - 60, abs=30)
    assert d["state"] == "lagging" and d["lag_seconds"] == pytest.approx(100, abs=20)
    assert d["last_lag_seconds"] == pytest.approx(1.0)
    assert (e["state"], e["txid"], e["lag_seconds"]) == ("never replicated yet", None, None)
    assert a["health"]["quarantined"] == 0 and [level["level"] for level in a["health"]["levels"]] == [0, 1, 2, 3, 9]


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def test_prometheus_has_only_the_state_label_unless_asked_for_one_series_per_database(
    pool_config: dict[str, Path],
) -> None:
    totals = run_ltxpool("status", "--config", str(pool_config["config"]), "--prometheus", timeout=60)
    assert totals.returncode == 0, totals.stderr
    samples = _samples(totals.stdout)
    assert {label for _, labels, _ in samples for label in labels} == {"state"}
    by_state = {labels["state"]: value for name, labels, value in samples if name == "ltxpool_databases"}
    assert by_state == {"failing": 1, "unreadable": 0, "lagging": 1, "never replicated yet": 1, "source gone": 1,
                        "replicated": 1}
    assert dict((name, value) for name, labels, value in samples if not labels)[
        "ltxpool_databases_lag_max_seconds"] == pytest.approx(100, abs=20)

    each = _samples(run_ltxpool("status", "--config", str(pool_config["config"]), "--prometheus",
                                "--per-database", timeout=60).stdout)
    failing = {os.path.basename(labels["database"]): value for name, labels, value in each
               if name == "ltxpool_database_failing"}
    assert failing == {"a.db": 0, "b.db": 0, "c.db": 1, "d.db": 0, "e.db": 0}
    txids = {os.path.basename(labels["database"]) for name, labels, _ in each if name == "ltxpool_database_txid"}
    assert txids == {"a.db", "b.db", "c.db", "d.db"}, "e.db has no TXID yet"


def _pool_resources(stdout: str) -> list[dict[str, object]]:
    pools: list[dict[str, object]] = json.loads(stdout)["resources"]["pools"]
    return pools


def test_status_reports_the_running_pools_supervisor_and_children(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "replica")
    os.makedirs(replica.root)
    pool = Pool(tmp_path, [replica])
    try:
        pool.pid_of("janitor")
        time.sleep(0.5)
        done = run_ltxpool("status", "--config", str(pool.config), "--json", timeout=60)
        assert done.returncode == 0, done.stderr
        (found,) = _pool_resources(done.stdout)
        processes = found["processes"]
        assert isinstance(processes, list)
        assert sorted(p["role"] for p in processes) == ["janitor", "supervisor", "worker-0", "worker-1"]
        assert processes[0]["pid"] == pool.process.pid
        for process in processes:
            assert process["rss_bytes"] > 0 and process["open_files"] > 0 and process["unreadable"] == []
            assert process["inotify_watches"] == 0 and process["open_files_limit"] > 0
        table = run_ltxpool("status", "--config", str(pool.config), timeout=60).stdout
        assert f"  supervisor pid {pool.process.pid}: rss " in table

        other = tmp_path / "other.toml"
        other.write_text("")
        control = run_ltxpool("status", "--config", str(other), "--json", timeout=60)
        assert _pool_resources(control.stdout) == [], "a pool of another config file is not this one's"
    finally:
        pool.stop()


def test_a_pool_another_user_cannot_read_is_reported_unreadable_not_a_crash(
    shared_tmp: str, nobody: User, ltxpool_for_others: list[str],
) -> None:
    top = Path(shared_tmp)
    replica = Replica(top / "replica")
    os.makedirs(replica.root)
    pool = Pool(top, [replica])
    try:
        pool.pid_of("janitor")
        done = run_as(nobody, [*ltxpool_for_others, "status", "--config", str(pool.config), "--json"])
        assert done.returncode == 0, done.stderr
        (found,) = _pool_resources(done.stdout)
        processes = found["processes"]
        assert isinstance(processes, list) and processes[0]["pid"] == pool.process.pid
        for process in processes:
            assert process["rss_bytes"] > 0, "VmRSS is readable by everyone"
            assert process["open_files"] is None and process["inotify_watches"] is None
            assert process["unreadable"] == ["open files: Permission denied"]
        assert found["open_files"] is None
    finally:
        pool.stop()


@pytest.mark.parametrize("per_database", [False, True], ids=["totals", "per-database"])
def test_the_pools_metrics_have_one_series_per_database_only_when_configured(
    pool_config: dict[str, Path], per_database: bool,
) -> None:
    config = load_config(str(pool_config["config"]))
    server = PoolMetrics().serve(0, "127.0.0.1", lambda: [], 3600.0, databases=lambda: config.databases,
                                 per_database=per_database)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30) as response:
            samples = _samples(response.read().decode())
    finally:
        server.close()
    states = {labels["state"]: value for name, labels, value in samples if name == "ltxpool_databases"}
    assert states["failing"] == 1 and sum(states.values()) == 5
    per = {os.path.basename(labels["database"]) for name, labels, _ in samples if name == "ltxpool_database_failing"}
    assert per == ({"a.db", "b.db", "c.db", "d.db", "e.db"} if per_database else set())


def test_the_pools_database_metrics_are_gathered_again_only_when_old_against_their_cost(
    pool_config: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scrapes in a row reuse one gathering (its cost bounded to 1/DUTY of a core); control:
    with DUTY 0 every scrape reads every replica again."""
    from ltxpool.pool import status_report

    gatherings = []
    real = status_report.database_statuses

    def counted(*args: Any, **kwargs: Any) -> Any:
        gatherings.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(status_report, "database_statuses", counted)
    config = load_config(str(pool_config["config"]))
    for duty, expected in ((status_report.DatabaseCollector.DUTY, 1), (0.0, 3)):
        gatherings.clear()
        monkeypatch.setattr(status_report.DatabaseCollector, "DUTY", duty)
        collector = status_report.DatabaseCollector(lambda: config.databases, min_age=0.0 if duty == 0 else 60.0)
        for _ in range(3):
            names = {family.name for family in collector.collect()}
        assert "ltxpool_database_status_age_seconds" in names and len(gatherings) == expected
