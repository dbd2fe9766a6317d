"""Contracts of the media domain: lesson videos and images (queue ``media``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts.registry import Contract, register

RenditionName = Literal["1080p", "720p", "480p", "360p", "240p"]
ImageSizeName = Literal["thumbnail", "small", "medium", "large", "original"]
Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


@register("media.process_video", queue="media", priority="normal")
class ProcessVideo(Contract):
    """Transcode an uploaded video into the rendition ladder, HLS, thumbnails and optional MP3."""

    asset_id: int = Field(gt=0, description="The media asset (kind video) to process.")
    renditions: list[RenditionName] | None = Field(
        default=None,
        min_length=1,
        description="Rungs to make (never above the source's size); default: every rung that fits.",
    )
    hls: bool = Field(default=True, description="Also write HLS (a master and one variant per rendition).")
    thumbnails: int = Field(default=5, ge=0, le=20, description="How many thumbnails, spread evenly.")
    extract_audio: bool = Field(default=False, description="Also write the audio track as MP3.")


class Watermark(Contract):
    """A text or an image (a storage key) drawn over every output."""

    text: str | None = Field(default=None, min_length=1, max_length=100)
    image_key: str | None = Field(default=None, min_length=1, max_length=1024)
    position: Position = "bottom-right"
    opacity: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Watermark:
        if (self.text is None) == (self.image_key is None):
            raise ValueError("give exactly one of text or image_key")
        return self


@register("media.process_image", queue="media", priority="normal")
class ProcessImage(Contract):
    """Resize an uploaded image to named sizes, convert it, optionally watermark it."""

    asset_id: int = Field(gt=0, description="The media asset (kind image) to process.")
    sizes: list[ImageSizeName] = Field(
        min_length=1, max_length=5, description="thumbnail (150x150 crop), small, medium, large, original."
    )
    format: Literal["webp", "jpeg", "png"] = Field(default="webp", description="Output format.")
    watermark: Watermark | None = None
