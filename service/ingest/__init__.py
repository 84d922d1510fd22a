"""Dataset ingestion: uploaded file -> safe parse -> validate -> canonical decoded arrays. Web-free.

The HTTP side (streaming the upload to a file, the body-size cap) is in
``service.api.upload`` and ``service.api.body_limit``; workers call
``load_canonical``. Every rejection is a ``DatasetRejected`` (413 / 415 / 422)
whose detail names the problem and never a server path.
"""

from service.ingest.canonical import (
    StoredDataset,
    load_canonical,
    load_masks,
    load_meta,
    load_split,
    mask_classes,
    store_canonical,
    stored_dataset_violations,
    summarize,
)
from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import ACCEPTED_FORMATS, DatasetRejected
from service.ingest.limits import IngestLimits
from service.ingest.parse import ingest_file

__all__ = [
    "ACCEPTED_FORMATS",
    "SPLITS",
    "DatasetRejected",
    "DecodedDataset",
    "IngestLimits",
    "StoredDataset",
    "ingest_file",
    "load_canonical",
    "load_masks",
    "mask_classes",
    "load_meta",
    "load_split",
    "store_canonical",
    "stored_dataset_violations",
    "summarize",
]
