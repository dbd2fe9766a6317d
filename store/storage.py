"""File storage: where media outputs, reports and archives go, local files or S3-compatible.

``open_storage(url)`` reads ``EDUJOBS_STORAGE_URL``: ``file:var/storage`` (relative to the working
directory), ``file:///srv/edujobs`` or ``s3://BUCKET/PREFIX`` (boto3, any S3-compatible endpoint).
Objects are addressed by keys such as ``media/7/video/720p.mp4``.

Uploads are atomic: a local file is written under a hidden temporary name in its final directory,
flushed to disk and renamed over the key (``os.replace``), and an S3 object only appears once its
(possibly multipart) upload completes, so nobody ever reads half an object. Writing a key again
replaces it, which is what makes retried jobs idempotent.

Errors::

    StorageError                   (TransientError) the storage failed; retrying may help
    ObjectNotFoundError            (PermanentError) no object under that key
    InvalidKeyError                (PermanentError) a key that is empty, absolute or climbs out (..)
    StorageRejectedError           (PermanentError) the storage refused the request (S3 4xx)
"""

from __future__ import annotations

import functools
import mimetypes
import os
import shutil
import time
import urllib.parse
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from contracts.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from brokers.settings import Settings

TEMP_MARKER = ".part-"
CHUNK = 1024 * 1024

mimetypes.add_type("application/vnd.apple.mpegurl", ".m3u8")
mimetypes.add_type("video/mp2t", ".ts")
mimetypes.add_type("image/webp", ".webp")


class StorageError(TransientError):
    """Raised when the storage fails in a way a later attempt may not (I/O error, S3 5xx, network)."""


class ObjectNotFoundError(PermanentError):
    """Raised when no object exists under a key."""


class InvalidKeyError(PermanentError):
    """Raised when a key is empty, absolute, has empty or ``..`` segments, or a backslash."""


class StorageRejectedError(PermanentError):
    """Raised when the storage refuses a request for a reason retrying cannot fix (S3 4xx)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    url: str


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing describes it: its key, size and when it was last written (epoch s)."""

    key: str
    size: int
    modified: float


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``InvalidKeyError``."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidKeyError(f"invalid storage key {key!r}: expected a relative path like media/7/a.mp4")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is a key or nothing, and may end with ``/``."""
    if prefix:
        check_key(prefix.rstrip("/") or "/")
    return prefix


def content_type_of(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class Storage(ABC):
    """What every storage backend offers."""

    @abstractmethod
    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> StoredObject:
        """Upload the file at ``path`` under ``key`` (atomically), replacing any object there."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key`` (atomically), replacing any object there."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A readable binary file of the object (close it, or use ``with``)."""

    @abstractmethod
    def url(self, key: str) -> str:
        """Where users fetch the object: ``EDUJOBS_STORAGE_PUBLIC_URL`` + key when set."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted."""

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, with size and modification time, in no
        particular order, as the listing goes (nothing is held: for stores of any size)."""

    def local_path(self, key: str) -> Path | None:
        """The object's path on this machine, for tools that read files (ffmpeg); None if remote."""
        return None

    def get_file(self, key: str, path: Path) -> Path:
        """Download the object to ``path`` (a new file) and return it."""
        with self.open(key) as source, path.open("wb") as target:
            shutil.copyfileobj(source, target, CHUNK)
        return path

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as source:
            return source.read()

    def remove_stale_temp_files(
        self, *, older_than_seconds: float, now: float | None = None, dry_run: bool = False
    ) -> int:
        """Remove the temporary files of uploads abandoned longer than ``older_than_seconds`` ago
        (by a process killed mid-upload); return how many (with ``dry_run``, how many would go,
        removing none). Nothing to do where uploads leave none."""
        return 0


class LocalStorage(Storage):
    """Objects as files under a root directory."""

    def __init__(self, root: Path | str, *, public_url: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.public_url = public_url.rstrip("/") + "/" if public_url else None

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> StoredObject:
        with self._atomic(key) as target, Path(path).open("rb") as source:
            shutil.copyfileobj(source, target, CHUNK)
        return self._stored(key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        with self._atomic(key) as target:
            target.write(data)
        return self._stored(key)

    @contextmanager
    def _atomic(self, key: str) -> Iterator[IO[bytes]]:
        final = self.path(key)
        temp = final.with_name(f".{final.name}{TEMP_MARKER}{uuid.uuid4().hex}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with temp.open("wb") as target:
                yield target
                target.flush()
                os.fsync(target.fileno())
            os.replace(temp, final)
        except OSError as e:
            raise StorageError(f"could not write {key}: {e.strerror or e}") from e
        finally:
            temp.unlink(missing_ok=True)

    def _stored(self, key: str) -> StoredObject:
        return StoredObject(key, self.size(key), self.url(key))

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {key} in {self.root}") from None
        except OSError as e:
            raise StorageError(f"could not read {key}: {e.strerror or e}") from e

    def url(self, key: str) -> str:
        if self.public_url:
            return self.public_url + urllib.parse.quote(check_key(key))
        return self.path(key).as_uri()

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            return
        except OSError as e:
            raise StorageError(f"could not delete {key}: {e.strerror or e}") from e
        # Prune the directories the key leaves empty, so that deleted outputs leave no trace.
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key} in {self.root}") from None

    def remove_stale_temp_files(
        self, *, older_than_seconds: float, now: float | None = None, dry_run: bool = False
    ) -> int:
        # A killed process never reaches ``_atomic``'s ``finally``; its temporary file stays hidden
        # (``list`` skips it) but takes space. One still being written has a fresh modification time.
        cutoff = (time.time() if now is None else now) - older_than_seconds
        removed = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not (name.startswith(".") and TEMP_MARKER in name):
                    continue
                path = Path(directory, name)
                try:
                    if path.lstat().st_mtime < cutoff:
                        if not dry_run:
                            path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # its upload finished or failed meanwhile
                except OSError as e:
                    raise StorageError(f"could not remove {path}: {e.strerror or e}") from e
        return removed

    def list(self, prefix: str = "") -> list[str]:
        return sorted(path.relative_to(self.root).as_posix() for path in self._walk(prefix))

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for path in self._walk(prefix):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # deleted since the walk saw it
            yield ObjectInfo(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)

    def _walk(self, prefix: str) -> Iterator[Path]:
        check_prefix(prefix)
        # Walk only the directory the prefix names, not the whole store.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for directory, _, files in os.walk(base):
            for name in files:
                if name.startswith(".") and TEMP_MARKER in name:
                    continue  # an upload in progress (or abandoned by a killed process)
                path = Path(directory, name)
                if path.relative_to(self.root).as_posix().startswith(prefix):
                    yield path


class S3Storage(Storage):
    """Objects in an S3 bucket (AWS, MinIO, Ceph, moto...) under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        public_url: str | None = None,
    ) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.public_url = public_url.rstrip("/") + "/" if public_url else None
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}
            ),
        )

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> StoredObject:
        extra = {"ContentType": content_type or content_type_of(key)}
        with self._translated(key):
            self.client.upload_file(str(path), self.bucket, self._name(key), ExtraArgs=extra)
        return StoredObject(key, Path(path).stat().st_size, self.url(key))

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        with self._translated(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._name(key),
                Body=data,
                ContentType=content_type or content_type_of(key),
            )
        return StoredObject(key, len(data), self.url(key))

    def open(self, key: str) -> IO[bytes]:
        with self._translated(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        body: IO[bytes] = response["Body"]
        return body

    def get_file(self, key: str, path: Path) -> Path:
        with self._translated(key):
            self.client.download_file(self.bucket, self._name(key), str(path))
        return path

    def url(self, key: str) -> str:
        if self.public_url:
            return self.public_url + urllib.parse.quote(check_key(key))
        return f"s3://{self.bucket}/{self._name(key)}"

    def delete(self, key: str) -> None:
        with self._translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        with self._translated(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.scan(prefix))

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        with self._translated(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        item["Key"][len(self.prefix) :],
                        int(item["Size"]),
                        item["LastModified"].timestamp(),
                    )

    @contextmanager
    def _translated(self, key: str) -> Iterator[None]:
        """Turn botocore's errors into storage errors (nothing above this sees an SDK exception)."""
        from boto3.exceptions import S3UploadFailedError  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            detail = f"{code or status}: {error.get('Message', '') or e}"
            if code == "NoSuchBucket":
                raise StorageRejectedError(f"bucket {self.bucket} does not exist") from None
            if code in ("404", "NoSuchKey", "NotFound") or status == 404:
                raise ObjectNotFoundError(f"no object {key} in s3://{self.bucket}/{self.prefix}") from None
            if 400 <= status < 500 and status not in (408, 429):
                raise StorageRejectedError(f"S3 refused {key}: {detail}") from None
            raise StorageError(f"S3 failed on {key}: {detail}") from None
        except S3UploadFailedError as e:
            raise StorageError(f"S3 upload of {key} failed: {e}") from None
        except BotoCoreError as e:
            raise StorageError(f"S3 unreachable for {key}: {e}") from None
        except OSError as e:  # the local side of a transfer (the file to upload, the download target)
            raise StorageError(f"S3 transfer of {key} failed: {e.strerror or e}") from e


def open_storage(
    url: str,
    *,
    public_url: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Storage:
    """The storage at ``url``: ``file:PATH``, ``file:///ABSOLUTE/PATH`` or ``s3://BUCKET/PREFIX``."""
    if url.startswith("s3://"):
        parsed = urllib.parse.urlsplit(url)
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket: expected s3://BUCKET/PREFIX")
        return S3Storage(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            public_url=public_url,
        )
    if url.startswith("file:"):
        return LocalStorage(path_from_file_url(url), public_url=public_url)
    raise ValueError(f"unsupported storage URL {url!r}: expected file:PATH or s3://BUCKET/PREFIX")


def path_from_file_url(url: str) -> Path:
    """``file:relative/path`` or ``file:///absolute/path`` (percent-escapes decoded) as a path."""
    rest = url.removeprefix("file:")
    if rest.startswith("//"):
        netloc, _, path = rest[2:].partition("/")
        if netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} names a host; expected file:///ABSOLUTE/PATH")
        return Path("/" + urllib.parse.unquote(path))
    return Path(urllib.parse.unquote(rest))


def storage_from_settings(settings: Settings) -> Storage:
    secret = settings.s3_secret_access_key
    return open_storage(
        settings.storage_url,
        public_url=settings.storage_public_url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
    )


@functools.cache
def get_storage() -> Storage:
    """The configured storage (``EDUJOBS_STORAGE_URL``), built once per process."""
    from brokers.settings import get_settings

    return storage_from_settings(get_settings())
