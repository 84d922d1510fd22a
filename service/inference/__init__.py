"""Hosted inference: model cache (LRU by bytes), image decoding, micro-batching predictor.

Loads only the exported artefact with torch; never imports ``workers``.
"""

from service.inference.artifact import ArtifactError, LoadedModel, load_artifact, read_card
from service.inference.batcher import MicroBatcher
from service.inference.cache import ModelCache
from service.inference.decode import ALLOWED_FORMATS, InstanceError, decode_batch, decode_image
from service.inference.predictor import DecisionError, ModelRef, Predictor, probabilities

__all__ = [
    "ALLOWED_FORMATS",
    "ArtifactError",
    "InstanceError",
    "LoadedModel",
    "MicroBatcher",
    "ModelCache",
    "ModelRef",
    "DecisionError",
    "Predictor",
    "decode_batch",
    "decode_image",
    "load_artifact",
    "probabilities",
    "read_card",
]
