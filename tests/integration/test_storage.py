"""Storage: the same behaviour from local files and from an S3 server (moto's, started for real).

Every test runs against both backends. Uploads are atomic: an upload that fails half way leaves
neither the object nor a temporary file behind.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.storage import (
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    S3Storage,
    Storage,
    StorageError,
    StorageRejectedError,
    open_storage,
    path_from_file_url,
)
from tests.media_fixtures import FakeS3, local_or_s3_storage


@pytest.fixture(scope="module")
def fake_s3() -> Iterator[FakeS3]:
    server = FakeS3().start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return local_or_s3_storage(request, tmp_path)


def test_put_then_read_back(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "lesson.mp4"
    source.write_bytes(b"\x00video" * 1000)
    stored = storage.put_file("media/7/video/mp4/720p.mp4", source)
    assert (stored.key, stored.size) == ("media/7/video/mp4/720p.mp4", 6000)
    storage.put_bytes("media/7/notes.txt", b"hello")
    assert storage.exists("media/7/notes.txt") and storage.size("media/7/notes.txt") == 5
    with storage.open("media/7/video/mp4/720p.mp4") as f:
        assert f.read() == source.read_bytes()
    assert storage.get_bytes("media/7/notes.txt") == b"hello"
    target = storage.get_file("media/7/notes.txt", tmp_path / "copy.txt")
    assert target.read_bytes() == b"hello"


def test_writing_a_key_again_replaces_the_object(storage: Storage) -> None:
    storage.put_bytes("media/1/a.txt", b"first version, longer")
    storage.put_bytes("media/1/a.txt", b"second")
    assert storage.get_bytes("media/1/a.txt") == b"second"
    assert storage.list("media/1/") == ["media/1/a.txt"]


def test_list_by_prefix_and_delete(storage: Storage) -> None:
    for key in ("media/1/video/a.mp4", "media/1/video/hls/b.ts", "media/1/image/c.webp", "media/10/d.mp4"):
        storage.put_bytes(key, b"x")
    assert storage.list("media/1/") == [
        "media/1/image/c.webp",
        "media/1/video/a.mp4",
        "media/1/video/hls/b.ts",
    ]
    assert storage.list("media/1/video/hls/") == ["media/1/video/hls/b.ts"]
    assert storage.list("media/2/") == []
    storage.delete("media/1/video/hls/b.ts")
    storage.delete("media/1/video/hls/b.ts")  # deleting what is gone is fine
    assert not storage.exists("media/1/video/hls/b.ts")
    assert storage.list("media/1/video/") == ["media/1/video/a.mp4"]


def test_a_missing_object_is_a_permanent_not_found_error(storage: Storage) -> None:
    assert not storage.exists("media/404.mp4")
    with pytest.raises(ObjectNotFoundError):
        storage.open("media/404.mp4")
    with pytest.raises(ObjectNotFoundError):
        storage.size("media/404.mp4")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "media/../../secret", "media//a", "a\\b", "media/./a"])
def test_keys_cannot_escape_the_storage(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        storage.put_bytes(key, b"x")


def test_a_failed_local_upload_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an object, and a disk that fills up during the next upload
    storage = LocalStorage(tmp_path / "storage")
    storage.put_bytes("media/1/a.mp4", b"the previous version")
    (tmp_path / "new.mp4").write_bytes(b"y" * 100_000)

    def copy_then_fail(source: Any, target: Any, length: int = 0) -> None:
        target.write(source.read(1000))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_fail)
    # When the upload fails half way
    with pytest.raises(StorageError, match=r"could not write media/1/a\.mp4: No space left on device"):
        storage.put_file("media/1/a.mp4", tmp_path / "new.mp4")
    monkeypatch.undo()
    # Then the previous version is intact and no temporary file is visible or left on disk
    assert storage.get_bytes("media/1/a.mp4") == b"the previous version"
    assert storage.list("media/") == ["media/1/a.mp4"]
    assert [p.name for p in (tmp_path / "storage/media/1").iterdir()] == ["a.mp4"]


def test_a_failed_s3_upload_leaves_no_object(fake_s3: FakeS3, tmp_path: Path) -> None:
    storage = fake_s3.storage(fake_s3.create_bucket())
    with pytest.raises(StorageError):
        storage.put_file("media/1/a.mp4", tmp_path / "missing.mp4")
    assert storage.list("media/") == []


def test_urls(tmp_path: Path, fake_s3: FakeS3) -> None:
    local = LocalStorage(tmp_path)
    assert local.url("media/1/a b.mp4") == (tmp_path / "media/1/a b.mp4").resolve().as_uri()
    cdn = LocalStorage(tmp_path, public_url="https://cdn.example.edu/files")
    assert cdn.url("media/1/a b.mp4") == "https://cdn.example.edu/files/media/1/a%20b.mp4"
    bucket = fake_s3.create_bucket()
    assert fake_s3.storage(bucket, prefix="p").url("media/1.mp4") == f"s3://{bucket}/p/media/1.mp4"


def test_s3_objects_get_their_content_type(fake_s3: FakeS3) -> None:
    bucket = fake_s3.create_bucket()
    storage = fake_s3.storage(bucket)
    storage.put_bytes("hls/master.m3u8", b"#EXTM3U\n")
    storage.put_bytes("thumbs/01.jpg", b"\xff\xd8")
    client: Any = storage.client
    assert (
        client.head_object(Bucket=bucket, Key="hls/master.m3u8")["ContentType"]
        == "application/vnd.apple.mpegurl"
    )
    assert client.head_object(Bucket=bucket, Key="thumbs/01.jpg")["ContentType"] == "image/jpeg"


def test_a_missing_bucket_is_a_permanent_error(fake_s3: FakeS3) -> None:
    with pytest.raises(StorageRejectedError, match="does not exist"):
        fake_s3.storage(f"no-such-bucket-{uuid.uuid4().hex[:8]}").put_bytes("a.txt", b"x")


def test_an_unreachable_s3_endpoint_is_a_transient_error() -> None:
    storage = S3Storage("bucket", endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s")
    with pytest.raises(StorageError, match="unreachable"):
        storage.put_bytes("a.txt", b"x")


def test_storage_urls_from_settings(tmp_path: Path) -> None:
    assert isinstance(open_storage("file:var/storage"), LocalStorage)
    absolute = open_storage(f"file://{tmp_path}/store")
    assert isinstance(absolute, LocalStorage) and absolute.root == (tmp_path / "store").resolve()
    s3 = open_storage("s3://lessons/edujobs", endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("lessons", "edujobs/")
    assert path_from_file_url("file:///srv/a%20b.mp4") == Path("/srv/a b.mp4")
    with pytest.raises(ValueError, match="names no bucket"):
        open_storage("s3:///prefix")
