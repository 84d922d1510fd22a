"""The floor for hosted inference: the smallest FastAPI endpoint that serves the same exported model.

No auth, no database, no cache, no micro-batching, no thread pool: the request
is decoded with Pillow and the ``torch.export`` program runs inline on the
event loop (``torch.export.load(path).module()``), answering the same JSON
shape as ``POST /v1/models/{id}/predict``. Whatever rarefit adds on top shows
up as the gap to this. torch runs single-threaded by default (``--threads``):
one small image gains nothing from intra-op parallelism, and idle OpenMP
threads spinning on a busy machine cost more than they give.

    python -m benchmarks.floor_app --model model.pt2 --port 8765 --classes 0 1
"""

from __future__ import annotations

import argparse
import base64
import io
from collections.abc import Sequence

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image


def create_floor_app(
    *, model_path: str, class_names: Sequence[str], threshold: float | None = None, positive_class: int | None = None
) -> FastAPI:
    module = torch.export.load(model_path).module()
    names = [str(n) for n in class_names]
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            blobs = [await item.read() for item in form.getlist("files")]
        else:
            blobs = [base64.b64decode(item["b64"]) for item in (await request.json())["instances"]]
        batch = torch.from_numpy(np.stack([_decode(blob) for blob in blobs]))
        with torch.inference_mode():
            probs = torch.softmax(module(batch.permute(0, 3, 1, 2).float().div_(255.0)), dim=1).tolist()
        return JSONResponse({"predictions": [_prediction(p, names, threshold, positive_class) for p in probs]})

    return app


def _decode(blob: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(blob))
    array = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _prediction(probs: list[float], names: list[str], threshold: float | None, positive: int | None) -> dict:
    if threshold is not None and positive is not None and len(probs) == 2:
        index = positive if probs[positive] >= threshold else 1 - positive
    else:
        index = int(np.argmax(probs))
    return {"label": names[index], "class_index": index, "probabilities": dict(zip(names, probs, strict=True))}


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="minimal predict endpoint (benchmark floor)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--positive-class", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    app = create_floor_app(
        model_path=args.model, class_names=args.classes, threshold=args.threshold, positive_class=args.positive_class
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
