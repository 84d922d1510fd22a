"""Spec combinations that are accepted but are likely a mistake: ``warnings`` on jobs and experiments.

Each warning is ``{"code", "message", "fields"}``; ``fields`` are the dotted
spec paths involved. They are computed from the spec alone, so a job's
warnings need no storage and read the same on every GET.
"""

from __future__ import annotations

from service.spec import JobSpec

_REBALANCING_SAMPLERS = ("weighted", "sqrt", "oversample", "undersample")
_PRIOR_LOSSES = ("balanced_softmax", "logit_adjusted")


def spec_warnings(spec: JobSpec) -> list[dict]:
    loss, found = spec.loss, []
    if loss.class_weights != "none" and spec.sampler.type in _REBALANCING_SAMPLERS:
        found.append(
            _warning(
                "double_rebalancing",
                f"loss.class_weights {loss.class_weights!r} and sampler.type {spec.sampler.type!r} both correct "
                "for imbalance; together they count it twice and over-weight the minority classes "
                "(use one, or defer the weights with loss.reweight_from_epoch)",
                ["loss.class_weights", "sampler.type"],
            )
        )
    if loss.type in _PRIOR_LOSSES and spec.sampler.type in _REBALANCING_SAMPLERS:
        found.append(
            _warning(
                "double_rebalancing",
                f"loss.type {loss.type!r} adds the class prior to the logits and sampler.type "
                f"{spec.sampler.type!r} re-balances the batches; together they count the imbalance twice "
                "(use sampler.type 'random' with this loss)",
                ["loss.type", "sampler.type"],
            )
        )
    if loss.type == "cross_entropy" and loss.alpha is not None:
        found.append(_warning("alpha_unused", "loss.alpha applies only to the focal loss", ["loss.alpha", "loss.type"]))
    if loss.reweight_from_epoch is not None and loss.class_weights == "none":
        found.append(
            _warning(
                "reweight_without_weights",
                "loss.reweight_from_epoch defers class weights, but loss.class_weights is 'none'",
                ["loss.reweight_from_epoch", "loss.class_weights"],
            )
        )
    return found


def _warning(code: str, message: str, fields: list[str]) -> dict:
    return {"code": code, "message": message, "fields": fields}
