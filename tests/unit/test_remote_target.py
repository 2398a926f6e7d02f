"""The off-host copy's names and targets: Litestream 0.5.17's S3 keys, config and URLs."""

from __future__ import annotations

import pickle

import pytest

from ltxpool.remote import (
    LeaseHeld,
    RemoteConfigError,
    RemoteTarget,
    level_prefix,
    object_key,
    parse_key,
    parse_remote,
    parse_remote_url,
)
from ltxpool.replica.layout import LEVELS

TARGET = RemoteTarget("bucket", "db")


def test_keys_are_litestream_0517s_s3_keys_level_as_four_hex_digits():
    # s3/replica_client.go: key := c.Path + "/" + fmt.Sprintf("%04x/%s", level, filename)
    assert object_key(TARGET, 0, 1, 1) == "db/0000/0000000000000001-0000000000000001.ltx"
    assert object_key(TARGET, 9, 1, 0x2a) == "db/0009/0000000000000001-000000000000002a.ltx"
    assert object_key(RemoteTarget("b", "a/b"), 3, 0x10, 0xff) == "a/b/0003/0000000000000010-00000000000000ff.ltx"
    assert level_prefix(TARGET, 9) == "db/0009/"


def test_a_key_parses_back_to_its_level_and_txids():
    for level in LEVELS:
        for txids in ((1, 1), (2, 0xFFFF_FFFF_FFFF), (0x1234, 0x5678)):
            assert parse_key(TARGET, object_key(TARGET, level, *txids)) == (level, *txids)


@pytest.mark.parametrize("key", [
    "db/9/0000000000000001-0000000000000001.ltx",          # the file replica's decimal level
    "db/000A/0000000000000001-0000000000000001.ltx",       # upper-case hex
    "db/0000/0000000000000002-0000000000000001.ltx",       # backwards
    "db/0000/0000000000000000-0000000000000001.ltx",       # TXID 0
    "db/0000/x/0000000000000001-0000000000000001.ltx",     # deeper
    "other/0000/0000000000000001-0000000000000001.ltx",    # another prefix
    "dbx/0000/0000000000000001-0000000000000001.ltx",
    "db/.ltxpool-lease",
])
def test_a_key_that_is_no_ltx_object_of_the_prefix_does_not_parse(key):
    assert parse_key(TARGET, key) is None


def test_config_table_gives_a_target():
    target = parse_remote({"url": "s3://my-bucket/dbs/app/", "endpoint": "http://127.0.0.1:9000",
                           "region": "eu-west-1"}, "databases.remote")
    assert target == RemoteTarget("my-bucket", "dbs/app", "http://127.0.0.1:9000", "eu-west-1", True)
    assert parse_remote({"url": "s3://b/p"}, "remote") == RemoteTarget("b", "p", None, "us-east-1", False)
    assert parse_remote({"url": "s3://b/p", "endpoint": "https://s3.example", "force_path_style": False},
                        "remote").force_path_style is False


@pytest.mark.parametrize(("table", "step", "reason"), [
    ({}, "remote.url", "is required"),
    ({"url": "file:///x"}, "remote.url", "s3://bucket/prefix"),
    ({"url": "s3://bucket"}, "remote.url", "needs a prefix"),
    ({"url": "s3://bucket/"}, "remote.url", "needs a prefix"),
    ({"url": "s3://bucket/a/../b"}, "remote.url", "'..'"),
    ({"url": "s3://bucket/p?endpoint=x"}, "remote.url", "no query"),
    ({"url": "s3://key:secret@bucket/p"}, "remote.url", "credentials"),
    ({"url": "s3://b/p", "endpoint": "ftp://h"}, "remote.endpoint", "http"),
    ({"url": "s3://b/p", "endpoint": "http://k:s@h"}, "remote.endpoint", "credentials"),
    ({"url": "s3://b/p", "region": 3}, "remote.region", "region"),
    ({"url": "s3://b/p", "force_path_style": "yes"}, "remote.force_path_style", "true or false"),
    ({"url": "s3://b/p", "secret_access_key": "s"}, "remote.secret_access_key", "never read from the config"),
    ({"url": "s3://b/p", "bucket": "b"}, "remote.bucket", "unknown key"),
])
def test_a_bad_config_names_the_dotted_key(table, step, reason):
    with pytest.raises(RemoteConfigError) as caught:
        parse_remote(table, "remote", "/etc/ltxpool.toml")
    assert caught.value.step == step and reason in caught.value.reason
    assert caught.value.path == "/etc/ltxpool.toml"
    assert "secret" not in str(caught.value).replace("secret_access_key", "")


def test_the_url_litestream_restore_takes_gives_the_same_target():
    url = "s3://bucket/db?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true"
    assert parse_remote_url(url) == RemoteTarget("bucket", "db", "http://127.0.0.1:9000", "us-east-1", True)
    # As Litestream: a custom endpoint means path style; no scheme is http for a local host.
    assert parse_remote_url("s3://b/p?endpoint=localhost:9000") == RemoteTarget(
        "b", "p", "http://localhost:9000", "us-east-1", True)
    assert parse_remote_url("s3://b/p?endpoint=s3.example.com&forcePathStyle=false").endpoint == "https://s3.example.com"
    assert parse_remote_url("s3://b/p?endpoint=s3.example.com&forcePathStyle=false").force_path_style is False
    assert parse_remote_url("s3://b//a//b/") == RemoteTarget("b", "a/b")
    with pytest.raises(RemoteConfigError, match="unknown URL parameter"):
        parse_remote_url("s3://b/p?accessKey=x")


def test_a_url_with_credentials_is_refused_without_repeating_them():
    with pytest.raises(RemoteConfigError) as caught:
        parse_remote_url("s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/db")
    assert "wJalrXUtnFEMI" not in str(caught.value) and "AKIDEXAMPLE" not in str(caught.value)


def test_lease_held_pickles_with_its_holder():
    error = LeaseHeld("s3://b/db/.ltxpool-lease", "acquire lease", None, "held by h:1:ab", holder="h:1:ab")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.step, copy.reason, copy.holder) == (error.path, error.step, error.reason, "h:1:ab")
    assert isinstance(copy, LeaseHeld)
