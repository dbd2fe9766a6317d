"""Image processing with Pillow: sizes, formats, EXIF, watermarks, and refusals (bombs, non-images)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from actors.media.errors import InvalidMediaError
from actors.media.images import SIZES, WatermarkSpec, open_image, render, resize, upright_size

GPS_IFD = 0x8825
ORIENTATION = 0x0112
MAKE = 0x010F


def photo(
    width: int = 1200, height: int = 800, *, orientation: int | None = None, gps: bool = False
) -> bytes:
    """A JPEG 'photo' (left half red, right half blue) with optional EXIF orientation and GPS."""
    image = Image.new("RGB", (width, height), "red")
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[MAKE] = "EduCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 24.0)}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    return buffer.getvalue()


def opened(data: bytes, max_pixels: int = 50_000_000) -> Image.Image:
    return open_image(io.BytesIO(data), max_pixels=max_pixels, name="upload.jpg")


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_named_sizes_fit_their_box_and_keep_the_aspect_ratio() -> None:
    outputs = render(opened(photo(1200, 800)), ["thumbnail", "small", "medium", "original"], "webp")
    assert [(o.size_name, o.width, o.height) for o in outputs] == [
        ("thumbnail", 150, 150),
        ("small", 320, 213),
        ("medium", 800, 533),
        ("original", 1200, 800),
    ]
    for output in outputs:
        image = decoded(output.data)
        assert (image.format, image.size) == ("WEBP", (output.width, output.height))


def test_a_small_image_is_never_enlarged() -> None:
    [large, thumbnail] = render(opened(photo(200, 100)), ["large", "thumbnail"], "png")
    assert (large.width, large.height) == (200, 100)
    assert (thumbnail.width, thumbnail.height) == (100, 100)  # still square, as big as the source allows


@pytest.mark.parametrize(("fmt", "pil_format"), [("webp", "WEBP"), ("jpeg", "JPEG"), ("png", "PNG")])
def test_each_output_format_decodes_as_that_format(fmt: str, pil_format: str) -> None:
    [output] = render(opened(photo()), ["small"], fmt)
    assert decoded(output.data).format == pil_format


def test_a_transparent_png_becomes_a_jpeg_on_white() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    [output] = render(opened(buffer.getvalue()), ["original"], "jpeg")
    assert decoded(output.data).getpixel((50, 50)) == (255, 255, 255)


def test_exif_is_stripped_by_default_and_the_pixels_turned_upright() -> None:
    # Given a photo taken sideways (Orientation 6 = rotate 90° clockwise to view) with a GPS position
    source = opened(photo(1200, 800, orientation=6, gps=True))
    # When it is processed with the default settings
    [output] = render(source, ["original"], "jpeg")
    image = decoded(output.data)
    # Then it is upright (portrait), and carries no EXIF at all: no position, no camera
    assert image.size == (800, 1200) == upright_size(source)
    assert not image.getexif()


def test_exif_can_be_kept_with_the_orientation_reset() -> None:
    [output] = render(opened(photo(1200, 800, orientation=6, gps=True)), ["original"], "webp", keep_exif=True)
    image = decoded(output.data)
    exif = image.getexif()
    assert image.size == (800, 1200)
    assert exif[MAKE] == "EduCam" and exif[ORIENTATION] == 1
    assert GPS_IFD in exif


def test_a_text_watermark_is_drawn_in_its_corner_only() -> None:
    plain = decoded(render(opened(photo(800, 400)), ["original"], "png")[0].data)
    marked = decoded(
        render(
            opened(photo(800, 400)),
            ["original"],
            "png",
            watermark=WatermarkSpec(text="SkillCore", position="bottom-right", opacity=1.0),
        )[0].data
    )
    changed = [
        (x, y)
        for x in range(0, 800, 4)
        for y in range(0, 400, 4)
        if plain.getpixel((x, y)) != marked.getpixel((x, y))
    ]
    assert changed
    assert all(x > 400 and y > 200 for x, y in changed)


def test_an_image_watermark_is_scaled_and_blended() -> None:
    logo = Image.new("RGBA", (400, 400), (0, 255, 0, 255))
    [output] = render(
        opened(photo(1000, 500)),
        ["original"],
        "png",
        watermark=WatermarkSpec(image=logo, position="top-left", opacity=0.5),
    )
    image = decoded(output.data).convert("RGB")
    plain = decoded(render(opened(photo(1000, 500)), ["original"], "png")[0].data).convert("RGB")
    # Inside the logo (at most a fifth of the frame, in the top-left corner): half green, half red
    pixel = image.getpixel((40, 40))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel
    assert 100 < red < 160 and 100 < green < 160 and blue < 30
    # Outside it: untouched
    assert image.getpixel((40, 140)) == plain.getpixel((40, 140))
    assert image.getpixel((800, 300)) == plain.getpixel((800, 300))


def test_more_pixels_than_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidMediaError, match=r"1200x800 \(960,000 pixels\).*decompression bomb"):
        opened(photo(1200, 800), max_pixels=500_000)


def test_pillows_own_bomb_check_is_a_permanent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InvalidMediaError, match="decompression bomb"):
        opened(photo(200, 200))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"Lesson notes, not a picture\n" * 50, "not an image in an accepted format"),
        (photo()[:2000], "corrupt or truncated"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image in an accepted format"),
    ],
)
def test_files_that_are_not_usable_images_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidMediaError, match=problem):
        opened(data)


def test_every_named_size_has_a_box_or_is_the_original() -> None:
    image = opened(photo(2400, 1600))
    for name, size in SIZES.items():
        resized = resize(image, size)
        if size.width is None or size.height is None:
            assert resized.size == image.size, name
        else:
            assert resized.width <= size.width and resized.height <= size.height, name


def test_opening_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo(10, 10))
    assert open_image(path, max_pixels=100, name="photo.jpg").size == (10, 10)
