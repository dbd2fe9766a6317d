"""The media contracts: what producers may send to media.process_video and media.process_image."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import ContractError, get_contract


def test_media_actors_run_on_the_media_queue() -> None:
    for name in ("media.process_video", "media.process_image"):
        contract = get_contract(name)
        assert (contract.queue, contract.priority) == ("media", "normal")


def test_a_video_request_gets_its_defaults() -> None:
    assert get_contract("media.process_video").validate({"asset_id": 7}) == {
        "asset_id": 7,
        "renditions": None,
        "hls": True,
        "thumbnails": 5,
        "extract_audio": False,
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"asset_id": 0}, "asset_id"),
        ({"asset_id": 1, "renditions": ["4k"]}, "renditions.0"),
        ({"asset_id": 1, "renditions": []}, "renditions"),
        ({"asset_id": 1, "thumbnails": 50}, "thumbnails"),
        ({"asset_id": 1, "codec": "vp9"}, "codec"),
    ],
)
def test_bad_video_requests_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError, match=rf"{field}: "):
        get_contract("media.process_video").validate(payload)


def test_an_image_request_with_a_text_watermark() -> None:
    payload = {"asset_id": 3, "sizes": ["thumbnail", "large"], "watermark": {"text": "SkillCore"}}
    assert get_contract("media.process_image").validate(payload) == {
        "asset_id": 3,
        "sizes": ["thumbnail", "large"],
        "format": "webp",
        "watermark": {"text": "SkillCore", "image_key": None, "position": "bottom-right", "opacity": 0.5},
    }


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"asset_id": 3, "sizes": []}, "sizes: "),
        ({"asset_id": 3, "sizes": ["huge"]}, "sizes.0: "),
        ({"asset_id": 3, "sizes": ["small"], "format": "gif"}, "format: "),
        ({"asset_id": 3, "sizes": ["small"], "watermark": {}}, "exactly one of text or image_key"),
        (
            {"asset_id": 3, "sizes": ["small"], "watermark": {"text": "a", "image_key": "logo.png"}},
            "exactly one of text or image_key",
        ),
        (
            {"asset_id": 3, "sizes": ["small"], "watermark": {"text": "a", "opacity": 2}},
            "watermark.opacity: ",
        ),
    ],
)
def test_bad_image_requests_say_what_is_wrong(payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(ContractError, match=problem):
        get_contract("media.process_image").validate(payload)
