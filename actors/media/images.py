"""Images with Pillow: open safely, orient, resize to named sizes, watermark, encode.

Opening is guarded: only the formats a browser or camera produces are accepted (never EPS or other
formats that hand the file to outside programs), a frame larger than the pixel limit is refused
before it is decoded (a decompression bomb: a small file that would decode to gigabytes), and a
file Pillow cannot identify or decode is refused. Each refusal is an ``InvalidMediaError``.

EXIF is stripped by default (it carries GPS positions and device serial numbers): the pixels are
rotated upright first (``exif_transpose``), so nothing depends on the Orientation tag. With
``keep_exif`` the EXIF block is kept, its orientation reset to "upright". ICC colour profiles are
always kept, or colours would shift.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from actors.media.errors import InvalidMediaError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageSize:
    name: str
    width: int | None  # None: the source's size
    height: int | None
    crop: bool = False  # fill the box exactly (centre crop) rather than fit inside it


SIZES = {
    size.name: size
    for size in (
        ImageSize("thumbnail", 150, 150, crop=True),
        ImageSize("small", 320, 320),
        ImageSize("medium", 800, 800),
        ImageSize("large", 1600, 1600),
        ImageSize("original", None, None),
    )
}

FORMATS = {"webp": ("WEBP", "webp"), "jpeg": ("JPEG", "jpg"), "png": ("PNG", "png")}


@dataclass(frozen=True)
class WatermarkSpec:
    text: str | None = None
    image: Image.Image | None = None
    position: str = "bottom-right"
    opacity: float = 0.5


@dataclass(frozen=True)
class EncodedImage:
    size_name: str
    width: int
    height: int
    format: str  # webp | jpeg | png
    extension: str
    data: bytes


def open_image(source: Path | IO[bytes], *, max_pixels: int, name: str = "image") -> Image.Image:
    """Open, check and decode an image; raise ``InvalidMediaError`` naming the problem."""
    try:
        image = Image.open(source, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise InvalidMediaError(f"{name} is a decompression bomb (far more pixels than allowed)") from None
    except UnidentifiedImageError:
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise InvalidMediaError(f"{name} is not an image in an accepted format ({accepted})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise InvalidMediaError(
            f"{name} is {width}x{height} ({width * height:,} pixels), more than the {max_pixels:,} "
            "allowed (EDUJOBS_MEDIA_MAX_IMAGE_PIXELS): refused as a possible decompression bomb"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as e:
        image.close()
        raise InvalidMediaError(f"{name} is corrupt or truncated: {e}") from None
    return image


def upright(image: Image.Image) -> Image.Image:
    """The image rotated as its EXIF Orientation says, in RGB or RGBA."""
    turned = ImageOps.exif_transpose(image) or image
    has_alpha = turned.mode in ("RGBA", "LA", "PA") or (turned.mode == "P" and "transparency" in turned.info)
    wanted = "RGBA" if has_alpha else "RGB"
    return turned if turned.mode == wanted else turned.convert(wanted)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The image's size once turned as its EXIF Orientation says (5 to 8 swap width and height)."""
    width, height = image.size
    return (height, width) if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8) else (width, height)


def resize(image: Image.Image, size: ImageSize) -> Image.Image:
    """Fit (or, for ``crop`` sizes, fill) the size's box; never enlarge."""
    if size.width is None or size.height is None:
        return image.copy()
    if size.crop:
        scale = min(1.0, image.width / size.width, image.height / size.height)
        box = (max(1, round(size.width * scale)), max(1, round(size.height * scale)))
        return ImageOps.fit(image, box, method=Image.Resampling.LANCZOS)
    result = image.copy()
    result.thumbnail((size.width, size.height), Image.Resampling.LANCZOS)
    return result


POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


def apply_watermark(image: Image.Image, spec: WatermarkSpec) -> Image.Image:
    """Draw ``spec`` (text or image) over ``image`` at its position and opacity."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    margin = max(2, round(min(base.size) * 0.03))
    alpha = round(255 * max(0.0, min(1.0, spec.opacity)))
    if spec.image is not None:
        mark = spec.image.convert("RGBA")
        mark.thumbnail((max(1, base.width // 5), max(1, base.height // 5)), Image.Resampling.LANCZOS)
        mark.putalpha(mark.getchannel("A").point(lambda value: value * alpha // 255))
        overlay.alpha_composite(mark, _place(base.size, mark.size, spec.position, margin))
    elif spec.text:
        font = ImageFont.load_default(size=max(10, base.width // 24))
        draw = ImageDraw.Draw(overlay)
        stroke = max(1, base.width // 400)
        left, top, right, bottom = draw.textbbox((0, 0), spec.text, font=font, stroke_width=stroke)
        x, y = _place(base.size, (round(right - left), round(bottom - top)), spec.position, margin)
        draw.text(
            (x - round(left), y - round(top)),
            spec.text,
            font=font,
            fill=(255, 255, 255, alpha),
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, alpha),
        )
    composed = Image.alpha_composite(base, overlay)
    return composed if image.mode == "RGBA" else composed.convert(image.mode)


def _place(canvas: tuple[int, int], item: tuple[int, int], position: str, margin: int) -> tuple[int, int]:
    (cw, ch), (w, h) = canvas, item
    if position == "center":
        return max(0, (cw - w) // 2), max(0, (ch - h) // 2)
    vertical, _, horizontal = position.partition("-")
    x = margin if horizontal == "left" else cw - w - margin
    y = margin if vertical == "top" else ch - h - margin
    return max(0, x), max(0, y)


def encode(image: Image.Image, fmt: str, *, exif: bytes | None = None, icc: bytes | None = None) -> bytes:
    """``image`` as WebP, JPEG or PNG bytes, with the given EXIF block and ICC profile (or none)."""
    pil_format, _ = FORMATS[fmt]
    options: dict[str, object] = {}
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    if pil_format == "JPEG":
        if image.mode == "RGBA":  # JPEG has no transparency: flatten onto white
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        options |= {"quality": 85, "optimize": True, "progressive": True}
    elif pil_format == "WEBP":
        options |= {"quality": 80, "method": 4}
    else:
        options |= {"optimize": True}
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def kept_exif(image: Image.Image) -> bytes | None:
    """The source's EXIF block with its orientation reset (the pixels are already upright)."""
    source = image.getexif()
    if not source:
        return None
    exif = Image.Exif()  # a copy: the source's own Exif object is what exif_transpose reads
    exif.load(source.tobytes())
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    return exif.tobytes()


def render(
    source: Image.Image,
    sizes: Sequence[str],
    fmt: str,
    *,
    watermark: WatermarkSpec | None = None,
    keep_exif: bool = False,
) -> list[EncodedImage]:
    """Every requested size of ``source`` (an opened image), encoded as ``fmt``."""
    exif = kept_exif(source) if keep_exif else None
    icc = source.info.get("icc_profile")
    image = upright(source)
    outputs = []
    for name in sizes:
        resized = resize(image, SIZES[name])
        if watermark is not None:
            resized = apply_watermark(resized, watermark)
        data = encode(resized, fmt, exif=exif, icc=icc if isinstance(icc, bytes) else None)
        outputs.append(EncodedImage(name, resized.width, resized.height, fmt, FORMATS[fmt][1], data))
    return outputs
