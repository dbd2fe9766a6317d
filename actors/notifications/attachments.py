"""Email attachments: files read from storage, under the prefix meant for them only.

Storage holds far more than attachments: database backups (personal data, token hashes),
reports, archives, media. Whoever may enqueue an email chooses its recipient, so an attachment
key is a read of storage on their behalf; it is confined to ``attachments/``
(``contracts.notifications.ATTACHMENTS_PREFIX``). The contract refuses other keys when a message is
sent; the worker checks again here before it reads anything, whatever path the message took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from actors.notifications.errors import AttachmentNotAllowedError, AttachmentTooLargeError
from actors.notifications.providers.sendgrid import Attachment
from contracts.notifications import ATTACHMENTS_PREFIX, check_attachable
from store.storage import InvalidKeyError, Storage, check_key, get_storage

#: SendGrid refuses messages over 30 MB; base64 adds a third.
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024


def load_attachments(attachments: Sequence[Mapping[str, str]]) -> list[Attachment]:
    """Read attachments from storage; a key outside ``attachments/``, a missing file or too large
    a total is permanent. Every key is checked before any file is read."""
    for item in attachments:
        check_attachment_key(item["storage_key"])
    storage = get_storage()
    files, total = [], 0
    for item in attachments:
        check_stays_local(storage, item["storage_key"])
        content = storage.get_bytes(item["storage_key"])  # ObjectNotFoundError is permanent
        total += len(content)
        if total > MAX_ATTACHMENT_BYTES:
            raise AttachmentTooLargeError(
                f"attachments exceed {MAX_ATTACHMENT_BYTES >> 20} MiB: send a download link instead"
            )
        mime = item.get("mime_type") or "application/octet-stream"
        files.append(Attachment(filename=item["filename"], content=content, mime_type=mime))
    return files


def check_attachment_key(key: str) -> None:
    """Raise ``AttachmentNotAllowedError`` unless ``key`` is a plain key under ``attachments/``
    that does not climb out of it (``attachments/../backups/db``) and that storage accepts."""
    try:
        check_attachable(key)
        check_key(key)
    except (ValueError, InvalidKeyError) as e:
        raise AttachmentNotAllowedError(str(e)) from None


def check_stays_local(storage: Storage, key: str) -> None:
    """On local storage, refuse a key under ``attachments/`` that is a symbolic link (or lies in a
    linked directory) leading out of it, e.g. to ``backups/``: whoever can write there could
    otherwise attach what the prefix exists to keep out."""
    path, prefix = storage.local_path(key), storage.local_path(ATTACHMENTS_PREFIX.rstrip("/"))
    if path is None or prefix is None:
        return  # S3 has no links: a key is the object
    if not path.resolve().is_relative_to(prefix.resolve()):
        raise AttachmentNotAllowedError(f"{key!r} is not attachable: it links outside {ATTACHMENTS_PREFIX}")
