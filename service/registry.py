"""The model registry's use case: re-fit a model's operating point on its stored val scores.

Web-free. ``PATCH /v1/models/{id}`` calls :func:`refit`: the policy is fitted
on ``scores.npz``'s val split (calibrated probabilities, so no retraining),
verified on its test split with per-class lower bounds, and published as card
revision ``n + 1``; the row (an index of the card) and the revision history
move in the same transaction. Each revision has a blob key of its own
(``card_key``): the new card is written once the conditional update has won
the row (a concurrent re-fit waits on it, then finds the revision moved) and
before the commit, and nothing reads it until the committed row names its
revision. A failed commit therefore leaves the row, the history, the artefact
row and the card they name as they were, plus an unread file the next re-fit
writes over; a commit whose answer was lost leaves the row and card agreeing.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.inference.artifact import read_card
from service.model_card import CARD_FILE, SCORES_FILE, ModelCard, OperatingPoint, card_key
from service.models import Model
from service.operating_points import SplitScores, fit_policy, point_metrics, read_scores_npz
from service.repository import leases
from service.repository import registry as repo
from service.storage import BlobStore
from service.threshold_spec import ThresholdSpec, resolve_class


class RegistryConflict(Exception):
    """The model cannot take the change now (no stored scores, or a concurrent re-fit); a 409."""


class PolicyError(ValueError):
    """The policy does not fit this model (an unknown class, a cost matrix of the wrong size); a 422."""

    def __init__(self, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field = field


def refit(session: Session, store: BlobStore, *, model: Model, policy: ThresholdSpec) -> ModelCard:
    """Fit ``policy`` on the model's stored val scores and publish the result as the next card revision."""
    card = read_card(store, blob_prefix=model.blob_prefix, revision=model.revision or 0)
    _check_policy(policy, card)
    scores = _scores(store, model=model)
    positive = card.positive_class if card.positive_class is not None else card.metrics.get("minority_class")
    point = fit_policy(policy, val=scores["val"], class_names=card.class_names, positive_class=positive)
    card_after = _next_card(card, point, test=scores.get("test"))
    if not repo.revisions(session, model_id=model.id):  # the trained operating point opens the history
        repo.record_revision(
            session, model_id=model.id, revision=card.revision, operating_point=_point(card), metrics=card.metrics
        )
    moved = repo.advance_revision(
        session,
        model=model,
        expected=card.revision,
        threshold=card_after.threshold,
        operating_point=_point(card_after),
        metrics={k: v for k, v in card_after.metrics.items() if isinstance(v, (int, float))},
    )
    if not moved:
        raise RegistryConflict(f"model {model.id} was re-fitted concurrently (revision {card.revision}); retry")
    repo.record_revision(
        session,
        model_id=model.id,
        revision=card_after.revision,
        operating_point=_point(card_after),
        metrics=card_after.metrics,
    )
    _publish(session, store, model=model, card=card_after)
    return card_after


def _check_policy(policy: ThresholdSpec, card: ModelCard) -> None:
    names = card.class_names
    if policy.class_ is not None and resolve_class(policy.class_, names) is None:
        raise PolicyError(("threshold", "class"), f"{policy.class_!r} is neither a class name nor an index of {names}")
    cost = policy.cost
    if cost is not None and (len(cost) != len(names) or any(len(row) != len(names) for row in cost)):
        k = len(names)
        raise PolicyError(("threshold", "cost"), f"needs a {k}×{k} matrix (cost[true][predicted])")


def _scores(store: BlobStore, *, model: Model) -> dict[str, SplitScores]:
    key = f"{model.blob_prefix}/{SCORES_FILE}"
    if not store.exists(key):
        raise RegistryConflict(
            f"model {model.id} has no stored {SCORES_FILE}; retrain it to re-fit its operating point"
        )
    with store.open_read(key) as handle:
        scores = read_scores_npz(handle.read())
    if "val" not in scores:
        raise RegistryConflict(f"model {model.id} has no val scores to fit an operating point on")
    return scores


def _next_card(card: ModelCard, point: OperatingPoint, *, test: SplitScores | None) -> ModelCard:
    metrics = dict(card.metrics)
    if test is not None:
        metrics.update(point_metrics(point, test, class_names=card.class_names))
        minority = metrics.get("minority_class")
        if isinstance(minority, int) and 0 <= minority < len(card.class_names):
            entry = metrics["per_class"][minority]
            metrics["minority_recall"] = entry["recall"] if entry["support"] else None
    metrics["operating_point"] = point.model_dump(mode="json")
    metrics["warnings"] = list(point.warnings)
    metrics["threshold"] = point.threshold_for(card.positive_class)
    update = {"revision": card.revision + 1, "operating_point": point.model_dump(), "metrics": metrics}
    return ModelCard.model_validate({**card.model_dump(), **update})


def _point(card: ModelCard) -> dict:
    return card.operating_point.model_dump(mode="json")


def _publish(session: Session, store: BlobStore, *, model: Model, card: ModelCard) -> None:
    key = card_key(model.blob_prefix, revision=card.revision)
    info = store.write(key, card.to_json().encode("utf-8"))
    leases.register_artifact(
        session,
        job_id=model.job_id,
        name=CARD_FILE,
        blob_key=key,
        size=info.size,
        content_type="application/json",
        sha256=info.sha256,
    )
