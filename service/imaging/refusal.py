"""Why bytes are not a usable image: one exception and the shared wording of its reasons.

Reasons read after "image X is ..." (upload) or "instance N: ..." (predict),
name no server path and are capped in length.
"""

from __future__ import annotations


class ImageRefused(ValueError):
    """Bytes that are not a usable image; ``str()`` is the client-safe reason."""


def oversized(*, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{width}x{height} = {width * height} pixels, over the limit of {max_pixels} pixels "
        "(a decompression bomb or an oversized image)"
    )


def short(exc: BaseException) -> str:
    # Decoder messages are short and path-free (we decode from memory); cap them anyway.
    text = str(exc) or type(exc).__name__
    return text[:200]
