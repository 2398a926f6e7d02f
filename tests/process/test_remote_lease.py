"""One writer per prefix: the lease, proven against a real S3 server, with its controls."""

from __future__ import annotations

import json

import pytest

from ltxpool.remote import (
    ConditionalWritesUnsupported,
    LeaseHeld,
    LeaseLost,
    Owner,
    acquire_lease,
    lease_key,
    make_client,
    release_lease,
    renew_lease,
)
from tests.support.s3_faults import faulty_proxy
from tests.support.s3_server import S3

HOST_A = Owner("host-a", 101, "aaaa")
HOST_B = Owner("host-b", 202, "bbbb")


def test_the_second_pool_is_refused_naming_the_holder(s3: S3):
    target = s3.target("db")
    first = acquire_lease(make_client(target), target, owner=HOST_A)
    with pytest.raises(LeaseHeld) as caught:
        acquire_lease(make_client(target), target, owner=HOST_B)
    assert caught.value.holder == HOST_A.id
    assert "host-a" in str(caught.value) and "pid 101" in str(caught.value)
    assert json.loads(s3.body(lease_key(target)))["owner"] == HOST_A.id, "the holder's lease is untouched"
    assert release_lease(make_client(target), first)
    assert acquire_lease(make_client(target), target, owner=HOST_B).owner == HOST_B


def test_control_without_the_condition_the_second_writer_overwrites_the_lease(s3: S3):
    """What the lease's If-None-Match prevents: a plain PUT replaces the holder's lease silently."""
    target = s3.target("db")
    client = make_client(target)
    acquire_lease(client, target, owner=HOST_A)
    client.put_object(Bucket=s3.bucket, Key=lease_key(target), Body=json.dumps({"owner": HOST_B.id}).encode())
    assert json.loads(s3.body(lease_key(target)))["owner"] == HOST_B.id


def test_a_restart_of_the_holder_takes_its_own_lease_back(s3: S3):
    target = s3.target("db")
    acquire_lease(make_client(target), target, owner=HOST_A)
    again = acquire_lease(make_client(target), target, owner=HOST_A)
    assert again.owner == HOST_A


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost_it(s3: S3):
    target = s3.target("db")
    old = acquire_lease(make_client(target), target, owner=HOST_A, ttl=10, clock=lambda: 1000.0)
    new = acquire_lease(make_client(target), target, owner=HOST_B, ttl=10, clock=lambda: 2000.0)
    assert new.owner == HOST_B
    with pytest.raises(LeaseLost, match="host-b:202:bbbb"):
        renew_lease(make_client(target), old)
    assert not release_lease(make_client(target), old), "releasing a lease that is not ours deletes nothing"
    assert json.loads(s3.body(lease_key(target)))["owner"] == HOST_B.id
    renewed = renew_lease(make_client(target), new)
    assert renewed.etag != new.etag


def test_a_store_that_ignores_if_none_match_is_refused(s3: S3):
    """moto behind a proxy that drops If-None-Match: a store without conditional writes."""
    with faulty_proxy(s3.server.port, strip=("If-None-Match",)) as proxy:
        target = s3.target("db", endpoint=proxy.endpoint)
        with pytest.raises(ConditionalWritesUnsupported, match="replaced an existing object"):
            acquire_lease(make_client(target), target, owner=HOST_A)
    assert lease_key(target) not in s3.keys("db/"), "no lease was written where it protects nothing"
    assert not [key for key in s3.keys("db/") if "probe" in key], "the probe object is removed"
    # Control: the same store without the proxy honours the condition.
    assert acquire_lease(make_client(s3.target("db")), s3.target("db"), owner=HOST_A).owner == HOST_A
