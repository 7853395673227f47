"""Filesystems from URIs: local and a real S3 server (SeaweedFS), atomic writes, redaction, failures."""

import os
import time

import pyarrow.fs as pafs
import pytest

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import (
    exists,
    fs_write_atomic,
    join_uri,
    read_text,
    redact,
    resolve_filesystem,
    write_bytes_atomic,
    write_text_atomic,
)


def test_redact_hides_user_info_and_secret_query_values():
    assert redact("s3://AKIA:hunter2@bucket/p?endpoint_override=h:1") == "s3://***@bucket/p?endpoint_override=h:1"
    out = redact("s3://b/p?secret_key=abc&session_token=xyz&region=eu-west-1")
    assert "abc" not in out and "xyz" not in out and "region=eu-west-1" in out
    assert redact("/plain/path") == "/plain/path"


def test_join_uri_keeps_client_options_last():
    base = "s3://b/data?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join_uri(base, "val", "part-00000.parquet") == (
        "s3://b/data/val/part-00000.parquet?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    assert join_uri("/tmp/x", "a/", "/b") == "/tmp/x/a/b"


def test_local_paths_and_atomic_writes_leave_no_temporary_files(tmp_path):
    fs, path = resolve_filesystem(str(tmp_path / "d"))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "d")
    uri = str(tmp_path / "d" / "sub" / "f.txt")
    write_text_atomic(uri, "one")
    write_text_atomic(uri, "two")
    assert read_text(uri) == "two" and exists(uri)
    assert sorted(os.listdir(tmp_path / "d" / "sub")) == ["f.txt"]
    assert resolve_filesystem("file://" + uri)[1] == uri


def test_failed_local_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):  # the write itself fails after the temporary file was opened
        fs_write_atomic(pafs.LocalFileSystem(), str(target), object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize(
    "uri", ["s3://AKIA:secret@bucket/x", "s3://bucket/x?secret_key=abc", "s3://bucket/x?access_key=AKIA&secret_key=abc"]
)
def test_credentials_in_uris_are_refused_without_echoing_them(uri):
    with pytest.raises(DataError, match="credentials in a URI are refused") as info:
        resolve_filesystem(uri)
    message = str(info.value)
    assert "abc" not in message and "AKIA" not in message and ":secret@" not in message


def test_unknown_s3_option_is_an_error():
    with pytest.raises(DataError, match="endpoint_overide"):
        resolve_filesystem("s3://bucket/x?endpoint_overide=h:1")


@pytest.mark.s3
def test_s3_round_trip_with_endpoint_in_uri_and_from_environment(s3_env):
    s3_env.make_bucket("fs-test")
    uri = s3_env.uri("fs-test", "a/b.txt")  # endpoint in the URI, credentials from the environment
    write_text_atomic(uri, "hello")
    assert read_text(uri) == "hello"
    assert read_text("s3://fs-test/a/b.txt") == "hello"  # endpoint from AWS_ENDPOINT_URL
    fs, path = resolve_filesystem(uri)
    assert isinstance(fs, pafs.S3FileSystem) and path == "fs-test/a/b.txt"
    assert not exists(s3_env.uri("fs-test", "a/missing.txt"))


@pytest.mark.s3
def test_s3_wrong_credentials_name_the_uri_and_the_cause(s3_env, monkeypatch):
    s3_env.make_bucket("fs-test")
    write_text_atomic(s3_env.uri("fs-test", "c.txt"), "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(DataError) as info:
        read_text(s3_env.uri("fs-test", "c.txt"))
    message = str(info.value)
    assert "access denied" in message and "s3://fs-test/c.txt" in message
    assert "not-the-secret" not in message


@pytest.mark.s3
def test_unreachable_endpoint_fails_fast_with_a_clear_error(s3_env):
    from fixtures_s3 import free_ports

    port = free_ports(1)[0]  # nothing listens there
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        write_bytes_atomic(f"s3://fs-test/x?endpoint_override=127.0.0.1:{port}&scheme=http&max_attempts=2", b"x")
    assert time.monotonic() - started < 20  # bounded retries
    assert "endpoint unreachable" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


def test_fsspec_protocols_go_through_pyarrow():
    uri = "memory://u2pl-fs-test/dir/f.txt"
    write_text_atomic(uri, "via fsspec")
    assert read_text(uri) == "via fsspec" and exists(uri)
    fs, path = resolve_filesystem(uri)
    assert isinstance(fs, pafs.PyFileSystem) and path == "u2pl-fs-test/dir/f.txt"
    with pytest.raises(DataError, match="no filesystem for nosuchproto://"):
        resolve_filesystem("nosuchproto://x/y")


@pytest.mark.s3
def test_server_stop_and_start_keep_the_same_endpoint_and_data(s3_env):
    s3_env.make_bucket("fs-restart")
    uri = s3_env.uri("fs-restart", "kept.txt")
    write_text_atomic(uri, "still here")
    endpoint = s3_env.endpoint
    s3_env.stop(grace_s=2)
    try:
        assert not s3_env.running
        with pytest.raises(DataError, match="endpoint unreachable"):
            read_text(uri + "&max_attempts=1")
    finally:
        s3_env.start()  # the server is shared by the session: later tests need it back
    assert s3_env.endpoint == endpoint and read_text(uri) == "still here"


def test_a_port_with_403_in_it_is_not_access_denied():
    from u2pl_ray.data.fs import storage_error

    unreachable = OSError(
        "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect "
        "to server; Details: Failed to connect to 127.0.0.1:40371 after 0 ms"
    )
    assert "endpoint unreachable" in str(storage_error(unreachable, "s3://b/k", "read"))
    denied = OSError("AWS Error ACCESS_DENIED during HeadObject operation: HTTP response code 403")
    assert "access denied" in str(storage_error(denied, "s3://b/k", "read"))
    forbidden = OSError("HeadObject failed with HTTP status 403 Forbidden (endpoint 10.0.0.1:4030)")
    assert "access denied" in str(storage_error(forbidden, "s3://b/k", "read"))
    port_only = OSError("unexpected reply from 10.0.0.1:4031")
    assert "access denied" not in str(storage_error(port_only, "s3://b/k", "read"))
