"""The one error ingestion raises for a bad upload, and safe display of names from it."""

from __future__ import annotations

ACCEPTED_FORMATS = ".npz (MedMNIST layout), .zip, .tar.gz / .tgz or .tar (ImageFolder or labels.csv)"
_MAX_NAME_CHARS = 200


class DatasetRejected(Exception):
    """An upload the service will not accept; the route maps it to problem+json.

    ``status_code`` is 413 (too large), 415 (unknown format) or 422 (bad
    content); ``detail`` names the problem (file, class, split or limit) and
    never contains a server path.
    """

    def __init__(self, status_code: int, detail: str) -> None:
        if status_code not in (413, 415, 422):
            raise ValueError(f"status_code must be 413, 415 or 422, got {status_code!r}")
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    def __repr__(self) -> str:
        return f"DatasetRejected({self.status_code}, {self.detail!r})"


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, undecodable bytes) escaped."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def safe_name(name: str) -> str:
    """A member name fit for an error message: control characters and undecodable
    bytes escaped (``ascii()`` style), long names shortened, quoted."""
    shown = printable(name)
    if len(shown) > _MAX_NAME_CHARS:
        shown = shown[: _MAX_NAME_CHARS - 3] + "..."
    return f"'{shown}'"


def mib(num_bytes: int) -> str:
    """``1048576`` -> ``'1048576 bytes (1.0 MiB)'`` for limit messages."""
    return f"{num_bytes} bytes ({num_bytes / 2**20:.1f} MiB)"
