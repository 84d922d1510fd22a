"""Predictor on real exported artefacts: agreement with the eager network, the decision rule,
batching across requests, the cache, and unusable artefacts."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from service.inference import ArtifactError, InstanceError, Predictor, load_artifact
from service.inference.predictor import CoreShare
from service.storage import LocalBlobStore

BIG = 10**8


@pytest.fixture(params=["onnxruntime", "torch"])
def predictor(store: LocalBlobStore, request: pytest.FixtureRequest) -> Iterator[Predictor]:
    instance = Predictor(
        store=store, max_cache_bytes=10**9, max_batch=64, max_wait_ms=2, threads=2, runtime=request.param
    )
    yield instance
    instance.close()


def run(predictor: Predictor, row, payloads: list[bytes], names=None) -> list[dict]:
    return asyncio.run(predictor.predict(row, images=payloads, names=names, max_pixels=BIG))


def test_multiclass_predictions_match_the_eager_network(predictor, three_rgb, installed, helpers) -> None:
    row = helpers.Row(id="m3", blob_prefix=installed(three_rgb, "m3"))
    arrays = helpers.images(6, height=8, width=8, channels=3, seed=0)
    predictions = run(predictor, row, [helpers.png(a) for a in arrays])
    expected = helpers.eager(three_rgb, arrays)
    assert len(predictions) == 6
    for prediction, probs in zip(predictions, expected, strict=True):
        assert list(prediction["probabilities"]) == ["a", "b", "c"]
        got = torch.tensor(list(prediction["probabilities"].values()), dtype=torch.float64)
        assert torch.allclose(got, probs, atol=1e-5)
        assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-12)
        assert prediction["class_index"] == int(probs.argmax())
        assert prediction["label"] == three_rgb.class_names[prediction["class_index"]]


@pytest.mark.parametrize("positive_class", [0, 1])
def test_binary_models_apply_the_tuned_threshold(predictor, binary_grey, installed, helpers, positive_class) -> None:
    arrays = helpers.images(16, height=12, width=10, channels=1, seed=1)
    expected = helpers.eager(binary_grey, arrays)[:, positive_class]
    # Midway between two scores (float32 vs float64 rounding cannot flip a decision), chosen so
    # that it disagrees with argmax (0.5) for some images.
    ordered = expected.sort().values
    cut = 4 if positive_class == 0 else 11
    threshold = float(ordered[cut] + ordered[cut + 1]) / 2
    row = helpers.Row(
        id="mb", blob_prefix=installed(binary_grey, "mb", threshold=threshold, positive_class=positive_class)
    )
    predictions = run(predictor, row, [helpers.png(a) for a in arrays])
    labels = [p["class_index"] for p in predictions]
    rule = [positive_class if float(p) >= threshold else 1 - positive_class for p in expected]
    argmax = [int(p >= 0.5) if positive_class == 1 else int(p < 0.5) for p in expected]
    assert labels == rule
    assert labels != argmax  # the threshold really changed some decisions


def test_other_image_sizes_are_resized_to_the_model_input(predictor, binary_grey, installed, helpers) -> None:
    row = helpers.Row(id="mb", blob_prefix=installed(binary_grey, "mb"))
    big = helpers.images(1, height=40, width=33, channels=3, seed=5)[0]
    (prediction,) = run(predictor, row, [helpers.png(big)])
    assert set(prediction["probabilities"]) == {"normal", "pneumonia"}


def hooked(predictor: Predictor, row) -> list[int]:
    """Load the model through the predictor and record the batch size of each forward call."""
    loaded = predictor.cache.get_or_load(
        row.id,
        load=lambda: (
            (m := load_artifact(predictor.store, blob_prefix=row.blob_prefix, runtime="torch")),
            m.size_bytes,
        ),
    )
    sizes: list[int] = []
    loaded.module.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    return sizes


def test_concurrent_requests_are_batched_and_answered_individually(predictor, three_rgb, installed, helpers) -> None:
    row = helpers.Row(id="m3", blob_prefix=installed(three_rgb, "m3"))
    sizes = hooked(predictor, row)
    arrays = helpers.images(16, height=8, width=8, channels=3, seed=2)
    expected = helpers.eager(three_rgb, arrays)

    async def main() -> list[list[dict]]:
        return await asyncio.gather(
            *(predictor.predict(row, images=[helpers.png(a)], names=None, max_pixels=BIG) for a in arrays)
        )

    results = asyncio.run(main())
    assert sum(sizes) == 16 and len(sizes) < 16 and max(sizes) > 1
    for (prediction,), probs in zip(results, expected, strict=True):
        got = torch.tensor(list(prediction["probabilities"].values()), dtype=torch.float64)
        assert torch.allclose(got, probs, atol=1e-5)


def test_a_request_larger_than_max_batch_is_split(store, three_rgb, installed, helpers) -> None:
    predictor = Predictor(store=store, max_cache_bytes=10**9, max_batch=4, max_wait_ms=0, threads=1)
    try:
        row = helpers.Row(id="m3", blob_prefix=installed(three_rgb, "m3"))
        sizes = hooked(predictor, row)
        arrays = helpers.images(10, height=8, width=8, channels=3, seed=3)
        predictions = run(predictor, row, [helpers.png(a) for a in arrays])
    finally:
        predictor.close()
    assert sizes == [4, 4, 2]
    expected = helpers.eager(three_rgb, arrays)
    assert [p["class_index"] for p in predictions] == expected.argmax(dim=1).tolist()


def test_an_undecodable_image_names_its_instance(predictor, binary_grey, installed, helpers) -> None:
    row = helpers.Row(id="mb", blob_prefix=installed(binary_grey, "mb"))
    good = helpers.png(helpers.images(1, height=12, width=10, channels=1, seed=0)[0])
    with pytest.raises(InstanceError, match=r"^instance 1 \(file 'notes.txt'\): not a readable image"):
        run(predictor, row, [good, b"hello", good], names=["ok.png", "notes.txt", "ok2.png"])


def test_models_are_cached_by_artefact_bytes_and_evicted(store, binary_grey, three_rgb, installed, helpers) -> None:
    prefixes = {"mb": installed(binary_grey, "mb"), "m3": installed(three_rgb, "m3")}
    sizes = {key: store.size(f"{p}/model.onnx") + store.size(f"{p}/weights.safetensors") for key, p in prefixes.items()}
    predictor = Predictor(store=store, max_cache_bytes=max(sizes.values()) + 1, max_batch=8, max_wait_ms=0, threads=1)
    try:
        png = helpers.png(helpers.images(1, height=8, width=8, channels=3, seed=0)[0])
        run(predictor, helpers.Row(id="mb", blob_prefix=prefixes["mb"]), [png])
        assert predictor.cache.keys() == ["mb"] and predictor.cache.total_bytes == sizes["mb"]
        run(predictor, helpers.Row(id="m3", blob_prefix=prefixes["m3"]), [png])
        assert predictor.cache.keys() == ["m3"] and predictor.cache.total_bytes == sizes["m3"]
    finally:
        predictor.close()
    assert len(predictor.cache) == 0


def test_onnx_runtime_serves_the_onnx_graph_and_torch_the_program(store, three_rgb, installed, helpers) -> None:
    prefix = installed(three_rgb, "m3")
    arrays = helpers.images(3, height=8, width=8, channels=3, seed=5)
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    expected = helpers.eager(three_rgb, arrays).float()
    for runtime in ("onnxruntime", "torch"):
        loaded = load_artifact(store, blob_prefix=prefix, runtime=runtime, threads=2)
        assert loaded.runtime == runtime
        torch.testing.assert_close(torch.softmax(loaded.module(batch), dim=1), expected, rtol=1e-4, atol=1e-5)


def test_a_card_without_onnx_is_served_with_torch(store, binary_grey, installed, helpers) -> None:
    prefix = installed(binary_grey, "mb")
    with store.open_read(f"{prefix}/model_card.json") as handle:
        card = json.load(handle)
    card["onnx"] = {"file": None, "max_abs_diff": None, "error": "ConversionError: no ONNX function"}
    store.write(f"{prefix}/model_card.json", json.dumps(card).encode())
    assert load_artifact(store, blob_prefix=prefix, runtime="onnxruntime").runtime == "torch"
    row = helpers.Row(id="mb", blob_prefix=prefix)
    arrays = helpers.images(2, height=12, width=10, channels=1, seed=3)
    predictor = Predictor(store=store, max_cache_bytes=10**9, max_batch=8, max_wait_ms=0, threads=1)
    try:
        got = run(predictor, row, [helpers.png(a) for a in arrays])
    finally:
        predictor.close()
    expected = helpers.eager(binary_grey, arrays)
    for prediction, probs in zip(got, expected.tolist(), strict=True):
        assert list(prediction["probabilities"].values()) == pytest.approx(probs, abs=1e-5)


def test_a_missing_artefact_is_an_artifact_error(predictor, helpers) -> None:
    row = helpers.Row(id="gone", blob_prefix="jobs/gone/artifacts")
    with pytest.raises(ArtifactError, match="has no model_card.json"):
        run(predictor, row, [b"x"])


def test_a_malformed_card_is_an_artifact_error(predictor, store, binary_grey, installed, helpers) -> None:
    prefix = installed(binary_grey, "mb")
    with store.open_read(f"{prefix}/model_card.json") as handle:
        card = json.load(handle)
    card["input"]["channels"] = 4
    store.write(f"{prefix}/model_card.json", json.dumps(card).encode())
    row = helpers.Row(id="mb", blob_prefix=prefix)
    with pytest.raises(ArtifactError, match=r"input.channels: Input should be 1 or 3"):
        run(predictor, row, [b"x"])


def test_class_names_that_disagree_with_the_program_are_an_artifact_error(
    predictor, store, binary_grey, installed, helpers
) -> None:
    prefix = installed(binary_grey, "mb")
    card = helpers.card_for(binary_grey).model_copy(update={"class_names": ["a", "b", "c"]})
    store.write(f"{prefix}/model_card.json", card.to_json().encode())
    png = helpers.png(helpers.images(1, height=12, width=10, channels=1, seed=0)[0])
    with pytest.raises(ArtifactError, match=r"returns \(2, 2\); expected \(B, 3\) logits"):
        run(predictor, helpers.Row(id="mb", blob_prefix=prefix), [png])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "threads must be an int >= 1, got 0"),
        ({"max_batch": 0}, "max_batch must be an int >= 1, got 0"),
        ({"max_wait_ms": -5}, "max_wait_ms must be >= 0, got -5"),
        ({"runtime": "tensorrt"}, "runtime must be one of"),
    ],
)
def test_rejects_bad_settings(store: LocalBlobStore, kwargs: dict, message: str) -> None:
    values: dict[str, object] = {"max_cache_bytes": 10, "max_batch": 4, "max_wait_ms": 1.0, "threads": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Predictor(store=store, **values)  # type: ignore[arg-type]


def test_rejects_mismatched_names(predictor, helpers) -> None:
    row = helpers.Row(id="x", blob_prefix="p")
    with pytest.raises(ValueError, match="got 1 names for 2 images"):
        run(predictor, row, [b"a", b"b"], names=["only-one"])


def test_mixed_concurrent_requests_each_get_exactly_their_own_answers(store, three_rgb, installed, helpers) -> None:
    predictor = Predictor(store=store, max_cache_bytes=10**9, max_batch=4, max_wait_ms=1, threads=2)
    row = helpers.Row(id="m3", blob_prefix=installed(three_rgb, "m3"))
    rng = np.random.default_rng(11)
    requests = []
    for number in range(24):
        arrays = helpers.images(int(rng.integers(1, 7)), height=8, width=8, channels=3, seed=100 + number)
        payloads = [helpers.png(a) for a in arrays]
        bad = int(rng.integers(0, len(payloads))) if number % 5 == 0 else None
        if bad is not None:
            payloads[bad] = b"broken"
        requests.append((arrays, payloads, bad))

    async def main() -> list[object]:
        return await asyncio.gather(
            *(predictor.predict(row, images=payloads, names=None, max_pixels=BIG) for _, payloads, _ in requests),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(main())
    finally:
        predictor.close()
    for (arrays, _, bad), result in zip(requests, results, strict=True):
        if bad is not None:
            assert isinstance(result, InstanceError) and result.index == bad
            continue
        got = torch.tensor([list(p["probabilities"].values()) for p in result], dtype=torch.float64)
        assert torch.allclose(got, helpers.eager(three_rgb, arrays), atol=1e-5)


def test_forward_passes_share_the_cores_among_those_running() -> None:
    share = CoreShare(4)
    with share.claim() as alone:
        assert alone == 4  # a lone request gets every core
        with share.claim() as second, share.claim() as third:
            assert (second, third) == (2, 1)  # cores ÷ passes running when each starts, at least one
    with share.claim() as again:
        assert again == 4  # released claims give their cores back
    with pytest.raises(ValueError, match="cores"):
        CoreShare(0)
