"""Untrusted image bytes -> pixels, one decoder for dataset upload and for predict.

Both sides call :func:`decode_pixels`, so a served image reaches the model as
the same values a training image did. See docs/images.md for the formats and
the normalisation of each.
"""

from service.imaging.decoder import ACCEPTED_FORMATS, ImageRefused, decode_pixels

__all__ = ["ACCEPTED_FORMATS", "ImageRefused", "decode_pixels"]
