"""Media: lesson videos (ffmpeg: rendition ladder, HLS, thumbnails, MP3) and images (Pillow)."""

from actors.media import actors  # noqa: F401  (declares the actors)
