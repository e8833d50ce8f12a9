"""OSS keys from a catalogue reference, and the access check run before every spawn.

Keys live only in memory and in the 0600 file s3fs reads; they never enter a message,
a log line, the spawner state, the container's environment or labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..spec import Mount


class StorageError(RuntimeError):
    """A storage problem a member can read: names the storage entry, never a key."""


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"Keys(access_key={self.access_key!r}, secret_key=***)"


def _parse_file(text: str) -> Keys | None:
    """``ACCESS:SECRET`` (s3fs passwd format) or AWS credentials-file lines."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        if "=" in line:
            k, _, v = line.partition("=")
            values[k.strip().lower()] = v.strip()
        elif ":" in line and "access" not in values:
            parts = line.split(":")
            if len(parts) == 2:  # bucket:ACCESS:SECRET lines are not supported: one entry, one pair
                values["access"], values["secret"] = parts[0].strip(), parts[1].strip()
    access = values.get("aws_access_key_id") or values.get("access")
    secret = values.get("aws_secret_access_key") or values.get("secret")
    return Keys(access, secret) if access and secret else None


def local_keys(mount: Mount, environ: Mapping[str, str] | None = None) -> Keys:
    """The keys of an OSS mount on one machine: from ``credentials.file`` or ``credentials.env``."""
    environ = os.environ if environ is None else environ
    ref = mount.credentials
    who = f"storage {mount.storage!r}"
    if ref is None or not (ref.file or ref.env):
        raise StorageError(f"{who} has its credentials only as a Kubernetes Secret; on one machine the "
                           "catalogue entry needs credentials.file or credentials.env")
    problems = []
    if ref.file:
        path = Path(ref.file)
        try:
            keys = _parse_file(path.read_text())
        except OSError as exc:
            problems.append(f"cannot read credentials file {ref.file} ({exc.strerror})")
        else:
            if keys:
                return keys
            problems.append(f"credentials file {ref.file} holds no ACCESS_KEY:SECRET_KEY line "
                            "nor aws_access_key_id/aws_secret_access_key")
    if ref.env:
        access, secret = environ.get(f"{ref.env}_ACCESS_KEY_ID"), environ.get(f"{ref.env}_SECRET_ACCESS_KEY")
        if access and secret:
            return Keys(access, secret)
        problems.append(f"the hub's environment lacks {ref.env}_ACCESS_KEY_ID / {ref.env}_SECRET_ACCESS_KEY")
    raise StorageError(f"{who}: " + "; ".join(problems))


def bucket_and_prefix(mount: Mount) -> tuple[str, str]:
    bucket, _, prefix = mount.source.partition("/")
    return bucket, prefix.strip("/")


def check_oss(mount: Mount, keys: Keys, *, timeout: float = 10) -> None:
    """Blocking (run it in a thread): the bucket exists and the prefix is listable with these keys.
    Raises StorageError naming the storage, the URL and the cause."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = bucket_and_prefix(mount)
    client = boto3.session.Session().client(
        "s3", endpoint_url=mount.endpoint, region_name=mount.region or "us-east-1",
        aws_access_key_id=keys.access_key, aws_secret_access_key=keys.secret_key,
        config=Config(connect_timeout=min(timeout, 5), read_timeout=timeout, retries={"max_attempts": 1},
                      s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    where = f"storage {mount.storage!r} ({mount.url} at {mount.endpoint})"
    try:
        client.head_bucket(Bucket=bucket)
        client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        reason = {"403": "access denied: the credentials are wrong or lack permission",
                  "AccessDenied": "access denied: the credentials are wrong or lack permission",
                  "InvalidAccessKeyId": "the access key is unknown to the storage",
                  "SignatureDoesNotMatch": "the secret key does not match the access key",
                  "404": "the bucket does not exist", "NoSuchBucket": "the bucket does not exist",
                  }.get(code, f"the storage answered {code}")
        raise StorageError(f"{where}: {reason}") from None
    except BotoCoreError as exc:
        raise StorageError(f"{where}: cannot reach the storage ({type(exc).__name__})") from None
    finally:
        client.close()


async def check_oss_async(mount: Mount, keys: Keys, *, timeout: float = 10) -> None:
    """``check_oss`` off the event loop with an overall deadline, for both backends."""
    import asyncio
    try:
        await asyncio.wait_for(asyncio.to_thread(check_oss, mount, keys, timeout=timeout), timeout * 2 + 5)
    except asyncio.TimeoutError:
        raise StorageError(f"storage {mount.storage!r} ({mount.url} at {mount.endpoint}): "
                           "the access check timed out") from None
