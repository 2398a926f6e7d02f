"""What a tenant plants in its replica bounds nothing of the pool's: not the bytes it
reads, not the memory it allocates, not the TXIDs it reports (issue #13).

The tenant is a real local user (``tests.support.users``) who owns the replica
directory and plants files there with its own processes; the pool's calls run as
root in this process. Each attack has a control in the same run: with the
protection switched off, the same planted file succeeds.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from ltxpool.errors import LtxpoolError
from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header
from ltxpool.ltx import decoder as decoder_module
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica import chain_check as chain_check_module
from ltxpool.replica import merge as merge_module
from ltxpool.replica.chain_check import name_problems
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.errors import BrokenChainError
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.quarantine import quarantined_files
from ltxpool.replica.restore import restore
from ltxpool.replica.status import replica_status
from ltxpool.replicate import reconcile as reconcile_module
from ltxpool.replicate.reconcile import reconcile
from ltxpool.replicate.state import ReplicationState, new_checksum_array
from tests.support.synthetic import SyntheticStream
from tests.support.users import User, run_as

GIB = 1 << 30
MIB = 1 << 20



def no_record(txid: int) -> int | None:
    """A synthetic replica has no per-TXID record: reconcile checks the files alone."""
    return None


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _tenant_replica(shared_tmp: str, tenant: User, transactions: int) -> SyntheticStream:
    """A replica with ``transactions`` level-0 files, handed over to the tenant who owns it."""
    stream = SyntheticStream(Replica(os.path.join(shared_tmp, "replica")), seed=13, checksums=False)
    stream.run(transactions)
    for directory, _, names in os.walk(stream.replica.root):
        for name in [".", *names]:
            os.chown(os.path.join(directory, name), tenant.uid, tenant.gid, follow_symlinks=False)
    return stream


def _plant_sparse(tenant: User, stream: SyntheticStream, txid: int, commit: int, size: int) -> str:
    """The tenant copies in a valid header for TXID ``txid``, then ``truncate -s`` makes a hole to ``size``."""
    path = stream.replica.path_of(0, txid, txid)
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=1024, commit=commit, min_txid=txid, max_txid=txid)
    source = os.path.join(os.path.dirname(stream.replica.root), "header.bin")
    with open(source, "wb") as f:
        f.write(header.encode())
    os.chmod(source, 0o644)
    done = run_as(tenant, ["sh", "-c", 'cp "$0" "$1" && truncate -s "$2" "$1"', source, path, str(size)])
    assert done.returncode == 0, done.stderr
    assert os.stat(path).st_uid == tenant.uid and os.stat(path).st_blocks * 512 < MIB
    return path


@pytest.mark.parametrize("commit", [30, (1 << 32) - 1], ids=["size-beyond-header", "hole"])
def test_a_planted_sparse_file_is_refused_by_restore_compaction_and_janitor_without_reading_it(
    shared_tmp: str, tenant: User, tmp_path: Path, commit: int
) -> None:
    stream = _tenant_replica(shared_tmp, tenant, 3)
    planted = _plant_sparse(tenant, stream, 4, commit, 4 * GIB)
    cause = "exceeds what its header allows" if commit == 30 else "sparse file: a hole at byte 4096"
    before = _bytes_read()
    with pytest.raises(CorruptLTXError) as restoring:
        restore(stream.replica, tmp_path / "restored.db", check_integrity=False)
    with pytest.raises(CorruptLTXError) as compacting:
        compact_level(stream.replica, 1)
    for caught in (restoring, compacting):
        assert caught.value.path == planted and cause in caught.value.reason
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert _bytes_read() - before < 16 * MIB
    assert report.quarantined == 1 and cause in " ".join(report.problems)
    assert quarantined_files(stream.replica) == [f"0-{os.path.basename(planted)}"]
    # The pool goes on: the latest TXID is what the tenant did not plant, and it restores exactly.
    assert restore(stream.replica, tmp_path / "after.db", check_integrity=False).txid == 3
    assert (tmp_path / "after.db").read_bytes() == stream.images[3]


def test_control_without_the_size_checks_compaction_and_janitor_read_the_planted_hole_to_its_end(
    shared_tmp: str, tenant: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = _tenant_replica(shared_tmp, tenant, 3)
    size = 256 * MIB
    _plant_sparse(tenant, stream, 4, 30, size)
    monkeypatch.setattr(decoder_module, "size_problem", lambda header, size: None)
    monkeypatch.setattr(decoder_module, "first_hole", lambda fd, size: None)
    before = _bytes_read()
    with pytest.raises(CorruptLTXError, match="page index length field"):
        compact_level(stream.replica, 1)
    assert _bytes_read() - before >= size
    before = _bytes_read()
    assert janitor_pass(stream.replica, JanitorSettings(), time.time()).quarantined == 1
    assert _bytes_read() - before >= size


def _plant_claim(tenant: User, stream: SyntheticStream, txid: int, commit: int) -> str:
    """The tenant copies in a valid LTX file for TXID ``txid`` that holds page 1 and claims ``commit`` pages."""
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=stream.page_size, commit=commit, min_txid=txid,
                    max_txid=txid, timestamp=int(time.time() * 1000))
    source = os.path.join(os.path.dirname(stream.replica.root), f"claim-{commit}.ltx")
    with open(source, "wb") as f:
        encoder = Encoder(f, header)
        encoder.write_page(1, bytes(stream.page_size))
        encoder.finish()
    os.chmod(source, 0o644)
    path = stream.replica.path_of(0, txid, txid)
    done = run_as(tenant, ["cp", source, path])
    assert done.returncode == 0, done.stderr
    return path


def _peak(call: Callable[[], object]) -> tuple[int, BaseException | None]:
    """The tracemalloc peak of ``call`` and the error it raised (None: it returned)."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except LtxpoolError as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_planted_header_claiming_huge_commit_costs_replicate_and_restore_no_memory_for_its_claim(
    shared_tmp: str, tenant: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = _tenant_replica(shared_tmp, tenant, 3)
    planted = _plant_claim(tenant, stream, 4, (1 << 32) - 1)
    database = str(tmp_path / "app.db")
    peak, raised = _peak(lambda: reconcile(stream.replica, database, None, new_checksum_array(), recorded=no_record))
    assert isinstance(raised, CorruptLTXError) and raised.path == planted
    assert re.search(r"the restore chain of TXID 4 holds \d+ pages, its header claims 4294967295$", raised.reason)
    assert peak < 4 * MIB, peak
    # Replay from a saved state a TXID behind meets the same file, and falls back to the same refusal.
    saved = ReplicationState(database, txid=3, page_size=stream.page_size, commit=stream.commit)
    sums = new_checksum_array(stream.commit)
    peak, raised = _peak(lambda: reconcile(stream.replica, database, saved, sums, recorded=no_record))
    assert isinstance(raised, CorruptLTXError) and peak < 4 * MIB, peak
    # Restore's chain check: the bitmap is sized by the page numbers the files hold.
    peak, raised = _peak(lambda: restore(stream.replica, tmp_path / "restored.db", check_integrity=False))
    assert isinstance(raised, BrokenChainError) and raised.path == planted
    assert re.search(r"at least \d+ of 4294967295 pages are in no file of the chain \(first: page \d+\)$", raised.reason)
    assert peak < 4 * MIB, peak
    assert not list(tmp_path.glob("restored.db*"))


def test_control_sized_by_the_header_the_same_planted_claim_allocates_per_claimed_page(
    shared_tmp: str, tenant: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim of 2**21 pages: 16 MiB of checksums once allocated from the header, as before #13
    # (the planted 2**32-1 would be 32 GiB).
    claim = 1 << 21
    stream = _tenant_replica(shared_tmp, tenant, 3)
    _plant_claim(tenant, stream, 4, claim)
    database = str(tmp_path / "app.db")
    protected, raised = _peak(lambda: reconcile(stream.replica, database, None, new_checksum_array(), recorded=no_record))
    assert isinstance(raised, CorruptLTXError) and protected < 4 * MIB
    monkeypatch.setattr(reconcile_module, "new_checksum_array", lambda pages=0: new_checksum_array(claim))
    unprotected, raised = _peak(lambda: reconcile(stream.replica, database, None, new_checksum_array(), recorded=no_record))
    # Sized by the header, the claim was not only paid for: it was believed.
    assert raised is None
    assert unprotected >= 8 * claim > 8 * protected, (unprotected, protected)


def _rename_as(tenant: User, stream: SyntheticStream, txid: int, claimed: int) -> str:
    """The tenant renames level 0's file of TXID ``txid`` to claim TXIDs ``txid``-``claimed``."""
    target = stream.replica.path_of(0, txid, claimed)
    done = run_as(tenant, ["mv", stream.replica.path_of(0, txid, txid), target])
    assert done.returncode == 0, done.stderr
    return target


def _switch_off_name_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: every check of a name against its header says "agrees"."""
    monkeypatch.setattr(chain_check_module, "name_problems", lambda files: [])
    for module in (chain_check_module, merge_module, reconcile_module):
        monkeypatch.setattr(module, "name_problem", lambda path, header: None)


@pytest.mark.parametrize("protected", [True, False], ids=["checked", "control"])
def test_a_name_its_header_contradicts_is_a_problem_not_a_txid_for_status_restore_compaction_replicate(
    shared_tmp: str, tenant: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protected: bool
) -> None:
    stream = _tenant_replica(shared_tmp, tenant, 3)
    planted = _rename_as(tenant, stream, 3, 0xFF)
    if not protected:
        _switch_off_name_checks(monkeypatch)
    level0 = replica_status(stream.replica, time.time()).levels[0]
    outcome = restore(stream.replica, tmp_path / "allowed.db", allow_gap=True, check_integrity=False)
    compacted = compact_level(stream.replica, 1)
    database = str(tmp_path / "app.db")
    if not protected:
        # The attack, unchecked: TXID 255 everywhere, and compaction launders the name into a new file.
        assert level0.max_txid == 255 and outcome.txid == 255 and outcome.gap is None
        assert compacted is not None and compacted.max_txid == 255
        assert reconcile(stream.replica, database, None, new_checksum_array(), recorded=no_record).state.txid == 255
        return
    assert level0.max_txid == 2
    assert f"{planted}: header holds TXIDs 3-3, the file name says 3-255" in level0.problems
    with pytest.raises(BrokenChainError) as caught:
        restore(stream.replica, tmp_path / "restored.db", check_integrity=False)
    assert str(caught.value) == (
        f"{planted}: check names: header holds TXIDs 3-3, the file name says 3-255: its name is not trusted, "
        "so the restore would stop at TXID 2"
    )
    assert outcome.txid == 2 and outcome.gap is not None and planted in outcome.gap
    assert (tmp_path / "allowed.db").read_bytes() == stream.images[2]
    # Level 1 starts after the snapshot (TXID 1, #14) and stops before the misnamed file.
    assert compacted is not None and (compacted.min_txid, compacted.max_txid) == (2, 2)
    assert [f.name for f in stream.replica.list_level(1).files] == ["0000000000000002-0000000000000002.ltx"]
    with pytest.raises(CorruptLTXError, match="the file name says 3-255: the replica's newest TXID is in doubt"):
        reconcile(stream.replica, database, None, new_checksum_array(), recorded=no_record)
    # The janitor's quarantine takes it; then the replica is whole up to TXID 2 again.
    assert [p.file.path for p in name_problems(stream.replica.list_level(0).files)] == [planted]
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.quarantined == 1 and not os.path.exists(planted)
    assert replica_status(stream.replica, time.time()).levels[0].problems == []
