"""Filesystems from URIs: local paths, s3:// (with an optional custom endpoint), and any fsspec protocol.

    resolve_filesystem("s3://bucket/prefix?endpoint_override=127.0.0.1:8333&scheme=http")
    resolve_filesystem("s3://bucket/prefix")      # endpoint from AWS_ENDPOINT_URL(_S3) when set
    resolve_filesystem("gs://bucket/prefix")      # through fsspec (gcsfs must be installed)
    resolve_filesystem("/data/voc") / ("file:///data/voc")

Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), from
a profile (AWS_PROFILE, or `?profile=name` in the URI) or the instance role; a URI that carries a secret
is refused, because URIs end up in configs and logs. `redact(uri)` hides secrets in anything logged.

Writes are atomic: locally a temporary name then a rename; on object stores the whole object is built in
memory and sent in one request, which the store makes visible only once complete.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

from u2pl_ray.data.errors import DataError

# Query keys that configure the S3 client (anything else is refused, so a typo is an error).
S3_OPTIONS = (
    "endpoint_override",
    "scheme",
    "region",
    "connect_timeout",
    "request_timeout",
    "max_attempts",
    "profile",
    "allow_bucket_creation",
    "force_virtual_addressing",
)
_SECRET_WORDS = ("secret", "password", "token", "access_key", "credential", "signature", "key_id")


def redact(uri: str) -> str:
    """The URI with user info and secret-looking query values replaced by '***'."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _is_secret(k) else v) for k, v in pairs], safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def is_local(uri: str) -> bool:
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def split_query(uri: str) -> tuple[str, str]:
    """('s3://b/p', 'endpoint_override=...') — the location and its client options."""
    if "?" in uri and not is_local(uri):
        base, query = uri.split("?", 1)
        return base, query
    return uri, ""


def join_uri(base: str, *parts: str) -> str:
    """Appends path parts to a URI, keeping its query (client options) at the end."""
    location, query = split_query(base)
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_local(location):
        path = Path(location.removeprefix("file://")).expanduser()
        return str(path.joinpath(*clean))
    joined = location.rstrip("/") + ("/" + "/".join(clean) if clean else "")
    return f"{joined}?{query}" if query else joined


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI. Raises DataError naming the (redacted) URI."""
    if is_local(uri):
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        return pafs.LocalFileSystem(), str(path)
    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise DataError(
            f"credentials in a URI are refused ({redact(uri)}): use AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY in the environment or a profile (AWS_PROFILE)"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    secrets = [k for k in options if _is_secret(k)]
    if secrets:
        raise DataError(
            f"credentials in a URI are refused ({redact(uri)}, keys {secrets}): put them in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile"
        )
    path = (parts.netloc + parts.path).rstrip("/")
    if parts.scheme in ("s3", "s3a"):
        return _s3(options, uri), path
    return _fsspec(parts.scheme, options, uri), path


def _s3(options: dict[str, str], uri: str) -> pafs.S3FileSystem:
    unknown = sorted(set(options) - set(S3_OPTIONS))
    if unknown:
        raise DataError(f"unknown S3 option(s) {unknown} in {redact(uri)}; allowed: {', '.join(S3_OPTIONS)}")
    kwargs: dict[str, Any] = {}
    endpoint = options.get("endpoint_override")
    scheme = options.get("scheme")
    if endpoint is None:
        env_url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if env_url:
            env_parts = urlsplit(env_url if "://" in env_url else f"https://{env_url}")
            endpoint = env_parts.netloc
            scheme = scheme or env_parts.scheme
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        # A custom endpoint (MinIO, SeaweedFS, ...) has no region lookup; pin one unless told.
        kwargs["region"] = (
            options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
    elif options.get("region"):
        kwargs["region"] = options["region"]
    if scheme:
        kwargs["scheme"] = scheme
    try:
        kwargs["connect_timeout"] = float(options.get("connect_timeout", 5))
        kwargs["request_timeout"] = float(options.get("request_timeout", 60))
        attempts = int(options.get("max_attempts", 3))
    except ValueError as exc:
        raise DataError(f"bad S3 option value in {redact(uri)}: {exc}") from None
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)
    for flag in ("allow_bucket_creation", "force_virtual_addressing"):
        if flag in options:
            kwargs[flag] = options[flag].lower() in ("1", "true", "yes")
    if "profile" in options:
        kwargs.update(_profile_credentials(options["profile"], uri))
    return pafs.S3FileSystem(**kwargs)


def _profile_credentials(profile: str, uri: str) -> dict[str, str]:
    try:
        import botocore.session
    except ImportError:
        raise DataError(
            f"{redact(uri)} names profile '{profile}', which needs botocore; or set AWS_PROFILE instead"
        ) from None
    try:
        creds = botocore.session.Session(profile=profile).get_credentials()
    except Exception as exc:  # botocore raises ProfileNotFound and friends
        raise DataError(f"AWS profile '{profile}' (from {redact(uri)}) cannot be used: {exc}") from None
    if creds is None:
        raise DataError(f"AWS profile '{profile}' (from {redact(uri)}) has no credentials")
    frozen = creds.get_frozen_credentials()
    out = {"access_key": frozen.access_key, "secret_key": frozen.secret_key}
    if frozen.token:
        out["session_token"] = frozen.token
    return out


def _fsspec(protocol: str, options: dict[str, str], uri: str) -> pafs.FileSystem:
    import fsspec

    try:
        fs = fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:
        raise DataError(f"no filesystem for {redact(uri)}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def is_object_store(fs: pafs.FileSystem) -> bool:
    return not isinstance(fs, pafs.LocalFileSystem)


def storage_error(exc: BaseException, uri: str, action: str) -> DataError:
    """A DataError that says what went wrong in words a user can act on."""
    text = str(exc)
    hint = ""
    low = text.lower()
    # Unreachable first, and 403 only as a whole number: the endpoint's port (say 40371) is in the text too.
    if "network_connection" in low or "couldn't connect" in low or "curlcode: 7" in low or "timed out" in low:
        hint = " (endpoint unreachable: check endpoint_override / AWS_ENDPOINT_URL and the network)"
    elif (
        "access_denied" in low
        or "invalidaccesskeyid" in low
        or "signaturedoesnotmatch" in low
        or re.search(r"(?<![\d.:])403(?!\d)", text)
    ):
        hint = " (access denied: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile)"
    elif "nosuchbucket" in low or "bucket does not exist" in low:
        hint = " (the bucket does not exist)"
    return DataError(f"cannot {action} {redact(uri)}{hint}: {text}")


def read_bytes(uri: str) -> bytes:
    fs, path = resolve_filesystem(uri)
    return fs_read_bytes(fs, path, uri)


def fs_read_bytes(fs: pafs.FileSystem, path: str, uri: str | None = None) -> bytes:
    try:
        with fs.open_input_stream(path) as src:
            return src.read()
    except FileNotFoundError:
        raise DataError(f"not found: {redact(uri or path)}") from None
    except OSError as exc:
        raise storage_error(exc, uri or path, "read") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes_atomic(uri: str, data: bytes) -> None:
    fs, path = resolve_filesystem(uri)
    fs_write_atomic(fs, path, data, uri)


def write_text_atomic(uri: str, text: str) -> None:
    write_bytes_atomic(uri, text.encode("utf-8"))


def fs_write_atomic(fs: pafs.FileSystem, path: str, data: bytes, uri: str | None = None) -> None:
    """Writes `data` so that `path` never shows partial content, even if the process dies midway."""
    shown = uri or path
    try:
        parent = posixpath.dirname(path)
        if not is_object_store(fs):
            fs.create_dir(parent, recursive=True)
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
            try:
                with fs.open_output_stream(tmp) as out:
                    out.write(data)
                fs.move(tmp, path)  # rename(2): atomic within one filesystem
            finally:
                if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    fs.delete_file(tmp)
        else:
            # The object is complete in memory before the request starts; the store only makes it visible
            # when the upload completes, so a failure leaves the old object (or nothing) under `path`.
            with fs.open_output_stream(path) as out:
                out.write(data)
    except OSError as exc:
        raise storage_error(exc, shown, "write") from None


def exists(uri: str) -> bool:
    fs, path = resolve_filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise storage_error(exc, uri, "look up") from None


def ensure_bucket(uri: str) -> None:
    """Creates the bucket of an s3:// URI if it is missing (a no-op elsewhere)."""
    if urlsplit(uri).scheme not in ("s3", "s3a"):
        return
    location, query = split_query(uri)
    extra = "allow_bucket_creation=true"
    fs, path = resolve_filesystem(f"{location}?{query}&{extra}" if query else f"{location}?{extra}")
    bucket = path.split("/", 1)[0]
    try:
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
    except OSError as exc:
        raise storage_error(exc, uri, "create the bucket of") from None
