"""The API process's own Prometheus instruments (prometheus-client only, so any module may count).

Requests by route template, method and status, their latency, predict batch
sizes and model-cache lookups. Under ``rarefit api --workers N`` each process
writes its samples to the multiprocess directory its parent made
(``PROMETHEUS_MULTIPROC_DIR``) and a scrape of any one of them adds all up
(``service.scrape``, which also reads the job-side series from the database).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter("rarefit_http_requests", "HTTP requests answered", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "rarefit_http_request_duration_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS
)
PREDICT_BATCH = Histogram("rarefit_predict_batch_size", "images per forward pass of predict", buckets=BATCH_BUCKETS)
MODEL_CACHE = Counter(
    "rarefit_model_cache_lookups",
    "predict's model cache lookups: hit, miss (loads) or shared (waits for a load)",
    ["result"],
)
