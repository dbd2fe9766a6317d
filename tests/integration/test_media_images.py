"""media.process_image's service: an uploaded image in storage becomes its sizes, stored, on the asset row."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from actors.media import service
from actors.media.errors import InvalidMediaError
from brokers.settings import Settings
from store.db import make_engine
from store.models import Base, MediaAsset
from store.storage import LocalStorage


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/edujobs.db")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def media(engine: Engine, tmp_path: Path) -> service.Media:
    settings = Settings(media_temp_dir=str(tmp_path / "work"), media_max_image_pixels=4_000_000)
    return service.Media(engine=engine, storage=LocalStorage(tmp_path / "storage"), settings=settings)


def upload_image(
    media: service.Media, data: bytes, key: str = "uploads/cover.jpg", asset_id: int = 1
) -> None:
    media.storage.put_bytes(key, data)
    with Session(media.engine) as session:
        session.add(MediaAsset(id=asset_id, kind="image", source_uri=key))
        session.commit()


def jpeg(width: int, height: int, colour: str = "orange") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def asset_row(media: service.Media, asset_id: int = 1) -> MediaAsset:
    with Session(media.engine) as session:
        asset = session.get(MediaAsset, asset_id)
        assert asset is not None
        session.expunge(asset)
        return asset


def test_an_uploaded_image_becomes_its_sizes(media: service.Media, tmp_path: Path) -> None:
    # Given a 1600x1200 course cover, uploaded
    upload_image(media, jpeg(1600, 1200))
    # When it is processed into three sizes as WebP
    summary = service.process_image(media, asset_id=1, sizes=["thumbnail", "small", "large"], format="webp")
    # Then each size is stored as a WebP of the right dimensions
    assert summary == {"asset_id": 1, "sizes": ["thumbnail", "small", "large"], "format": "webp"}
    assert media.storage.list("media/1/") == [
        "media/1/image/large.webp",
        "media/1/image/small.webp",
        "media/1/image/thumbnail.webp",
    ]
    expected = {"thumbnail": (150, 150), "small": (320, 240), "large": (1600, 1200)}
    for name, size in expected.items():
        with Image.open(io.BytesIO(media.storage.get_bytes(f"media/1/image/{name}.webp"))) as image:
            assert (image.format, image.size) == ("WEBP", size)
    # And the asset row lists them with their URLs and sizes
    asset = asset_row(media)
    assert (asset.status, asset.width, asset.height) == ("ready", 1600, 1200)
    entries = {r["name"]: r for r in asset.renditions}
    assert (entries["small"]["width"], entries["small"]["height"], entries["small"]["format"]) == (
        320,
        240,
        "webp",
    )
    assert entries["small"]["size_bytes"] == media.storage.size("media/1/image/small.webp")
    assert entries["small"]["url"].startswith("file://")
    assert list((tmp_path / "work").iterdir()) == []


def test_an_image_watermark_from_storage_is_applied(media: service.Media) -> None:
    upload_image(media, jpeg(800, 600, "white"))
    logo = io.BytesIO()
    Image.new("RGBA", (100, 100), (255, 0, 0, 255)).save(logo, "PNG")
    media.storage.put_bytes("brand/logo.png", logo.getvalue())
    watermark = {"image_key": "brand/logo.png", "position": "top-left", "opacity": 1.0}
    service.process_image(media, asset_id=1, sizes=["original"], format="png", watermark=watermark)
    with Image.open(io.BytesIO(media.storage.get_bytes("media/1/image/original.png"))) as image:
        assert image.convert("RGB").getpixel((40, 40)) == (255, 0, 0)
        assert image.convert("RGB").getpixel((700, 500)) == (255, 255, 255)


def test_processing_again_leaves_only_this_runs_outputs(media: service.Media) -> None:
    upload_image(media, jpeg(1000, 1000))
    service.process_image(media, asset_id=1, sizes=["small", "medium"], format="jpeg")
    service.process_image(media, asset_id=1, sizes=["small", "medium"], format="jpeg")
    assert media.storage.list("media/1/") == ["media/1/image/medium.jpg", "media/1/image/small.jpg"]
    service.process_image(media, asset_id=1, sizes=["small"], format="png")
    assert media.storage.list("media/1/") == ["media/1/image/small.png"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (jpeg(4000, 2000), "more than the 4,000,000 allowed"),
        (b"<html>not an image</html>", "not an image in an accepted format"),
    ],
)
def test_bombs_and_non_images_fail_the_asset(media: service.Media, data: bytes, problem: str) -> None:
    upload_image(media, data)
    with pytest.raises(InvalidMediaError, match=problem):
        service.process_image(media, asset_id=1, sizes=["small"])
    asset = asset_row(media)
    assert asset.status == "failed" and problem in (asset.error or "")
    assert media.storage.list("media/1/") == []


def test_exif_is_kept_when_the_setting_says_so(media: service.Media, engine: Engine, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "EduCam"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "JPEG", exif=exif.tobytes())
    upload_image(media, buffer.getvalue())
    keeping = service.Media(engine, media.storage, Settings(media_keep_exif=True))
    service.process_image(keeping, asset_id=1, sizes=["original"], format="jpeg")
    with Image.open(io.BytesIO(media.storage.get_bytes("media/1/image/original.jpg"))) as image:
        assert image.getexif()[0x010F] == "EduCam"
    service.process_image(media, asset_id=1, sizes=["original"], format="jpeg")
    with Image.open(io.BytesIO(media.storage.get_bytes("media/1/image/original.jpg"))) as image:
        assert not image.getexif()
