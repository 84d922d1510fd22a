"""The parse-time caps of one upload (``IngestLimits``); the HTTP body cap is ``service.api.body_limit``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings


@dataclass(frozen=True)
class IngestLimits:
    """Caps applied while parsing one upload (all positive integers)."""

    max_archive_entries: int
    max_expanded_bytes: int
    max_image_pixels: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"IngestLimits.{field.name} must be a positive int, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            max_archive_entries=settings.max_archive_entries,
            max_expanded_bytes=settings.max_expanded_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
