"""Dataset ingestion: upload -> safe parse -> validate -> canonical decoded arrays.

The route calls ``ingest_upload``; workers call ``load_canonical``. Every
rejection is a ``DatasetRejected`` (413 / 415 / 422) whose detail names the
problem and never a server path.
"""

from service.ingest.canonical import (
    StoredDataset,
    load_canonical,
    load_masks,
    load_meta,
    mask_classes,
    store_canonical,
    summarize,
)
from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import ACCEPTED_FORMATS, DatasetRejected
from service.ingest.limits import BodySizeLimitMiddleware, IngestLimits
from service.ingest.parse import ingest_file
from service.ingest.upload import IngestResult, ingest_upload, save_upload

__all__ = [
    "ACCEPTED_FORMATS",
    "SPLITS",
    "BodySizeLimitMiddleware",
    "DatasetRejected",
    "DecodedDataset",
    "IngestLimits",
    "IngestResult",
    "StoredDataset",
    "ingest_file",
    "ingest_upload",
    "load_canonical",
    "load_masks",
    "mask_classes",
    "load_meta",
    "save_upload",
    "store_canonical",
    "summarize",
]
