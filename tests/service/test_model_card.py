"""The model card reads the format-1 cards that models trained before format 2 carry."""

from __future__ import annotations

import numpy as np

from rarefit.decision import decide
from service.model_card import PROGRAM_FILE, ModelCard

VERSION_1 = {
    "format_version": 1,
    "arch": "simple_cnn",
    "class_names": ["normal", "pneumonia"],
    "input": {"height": 28, "width": 28, "channels": 1, "layout": "NCHW", "dtype": "float32", "range": [0, 1]},
    "normalization": {"mean": [0.5], "std": [0.25]},
    "threshold": 0.3,
    "positive_class": 0,
    "metrics": {"accuracy": 0.9},
    "best_epoch": 3,
    "job_id": "0" * 32,
    "spec": {"threshold": {"strategy": "max_f1"}},
}


def test_a_format_1_card_keeps_its_threshold_rule():
    card = ModelCard.model_validate(VERSION_1)
    assert card.operating_point.threshold_for(0) == 0.3
    assert PROGRAM_FILE in card.files and card.onnx.file is None
    # The format-1 rule: the positive class when its probability reaches the threshold, else the other.
    probs = np.array([[0.31, 0.69], [0.29, 0.71], [0.3, 0.7]])
    labels, _ = decide(probs, rule=card.operating_point.decision_rule())
    assert labels.tolist() == [0, 1, 0]


def test_a_format_1_card_without_threshold_decides_by_argmax():
    card = ModelCard.model_validate({**VERSION_1, "threshold": None})
    assert card.operating_point.rule == "argmax"
    labels, _ = decide(np.array([[0.31, 0.69]]), rule=card.operating_point.decision_rule())
    assert labels.tolist() == [1]


def test_a_card_written_before_pixel_depth_reads_as_8_bit_and_16_is_kept():
    assert ModelCard.model_validate(VERSION_1).input.pixel_bits == 8
    wide = ModelCard.model_validate({**VERSION_1, "input": {**VERSION_1["input"], "pixel_bits": 16}})
    assert wide.input.pixel_bits == 16
    assert ModelCard.model_validate_json(wide.to_json()).input.pixel_bits == 16
