"""The OSS access check and credential references, against a real S3 server."""

import time

import pytest

from spawner_ext.spec import Mount, OssCredentials
from spawner_ext.storage.credentials import Keys, StorageError, check_oss, local_keys

from .conftest import BUCKET, READONLY_BUCKET


def oss(s3, source=BUCKET, endpoint=None, **cred):
    return Mount(type="oss", source=source, mount_path="/mnt/data", storage="data", endpoint=endpoint or s3.endpoint,
                 credentials=OssCredentials(**(cred or {"env": "T"})))


def test_good_keys_pass(s3):
    check_oss(oss(s3), Keys(*s3.member))
    check_oss(oss(s3, f"{READONLY_BUCKET}/shared"), Keys(*s3.member))


@pytest.mark.parametrize("source,keys,reason", [
    (BUCKET, ("DSWMEMBERKEY", "wrong-secret"), "secret key does not match"),
    (BUCKET, ("NOSUCHKEY", "x"), "access key is unknown"),
    ("no-such-bucket", None, "bucket does not exist"),
])
def test_bad_access_is_refused_with_a_reason(s3, source, keys, reason):
    with pytest.raises(StorageError) as err:
        check_oss(oss(s3, source), Keys(*(keys or s3.admin)))
    text = str(err.value)
    assert "storage 'data'" in text and f"oss://{source}" in text, text
    assert reason in text or "access denied" in text, text
    assert "wrong-secret" not in text and s3.admin[1] not in text


def test_unreachable_endpoint_fails_fast():
    m = Mount(type="oss", source="b", mount_path="/mnt/x", storage="far", endpoint="http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach the storage"):
        check_oss(m, Keys("a", "b"), timeout=2)
    assert time.monotonic() - start < 10


def test_keys_from_file_and_environment(tmp_path):
    s3fs_style = tmp_path / "a"
    s3fs_style.write_text("AK1:SK1\n")
    aws_style = tmp_path / "b"
    aws_style.write_text("[default]\naws_access_key_id = AK2\naws_secret_access_key = SK2\n")
    m = lambda **c: Mount(type="oss", source="b", mount_path="/m", storage="x", credentials=OssCredentials(**c))
    assert local_keys(m(file=str(s3fs_style))) == Keys("AK1", "SK1")
    assert local_keys(m(file=str(aws_style))) == Keys("AK2", "SK2")
    env = {"DSW_X_ACCESS_KEY_ID": "AK3", "DSW_X_SECRET_ACCESS_KEY": "SK3"}
    assert local_keys(m(env="DSW_X"), env) == Keys("AK3", "SK3")
    assert local_keys(m(file=str(tmp_path / "missing"), env="DSW_X"), env) == Keys("AK3", "SK3")  # falls back
    assert "SK3" not in repr(Keys("AK3", "SK3"))
    with pytest.raises(StorageError, match="only as a Kubernetes Secret"):
        local_keys(m(secret="oss-x"))
    with pytest.raises(StorageError, match="cannot read credentials file"):
        local_keys(m(file=str(tmp_path / "missing")))
    with pytest.raises(StorageError, match="lacks DSW_Y_ACCESS_KEY_ID"):
        local_keys(m(env="DSW_Y"), env)
