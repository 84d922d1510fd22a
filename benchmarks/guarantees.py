"""Coverage of the recall guarantee: does ``recall_at_least`` with ``guarantee: true`` keep its promise?

The stored scores of one model (``scores.npz``: calibrated val and test
probabilities) are pooled and split again at random, ``--resplits`` times,
into a val part (the size of PneumoniaMNIST's val split) and a test part. On
each resplit the operating point is fitted on the val part exactly as a job
does (``service.operating_points.fit_policy``), then verified on the test part.
Reported: how often the recall on the whole pool (the population the val
part was drawn from) falls below the target, which the guarantee bounds by
1 - confidence; and, with the test part's own sampling error on top, how
often the realised test recall falls below the target and below the val
lower bound the guarantee rested on. The test part is a second finite sample
of the pool, so the latter rate exceeds 1 - confidence even for a valid
bound; the same rates for one fixed, unselected threshold show how much.
Without ``--scores`` a quick simple_cnn model is trained on the CPU through
the job path (spec → plan → fit → decisions).

    python -m benchmarks.guarantees --epochs 3
    python -m benchmarks.guarantees --scores path/to/scores.npz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import common
from service.model_card import OperatingPoint
from service.operating_points import SplitScores, fit_policy, point_metrics, read_scores_npz, scores_npz
from service.spec import JobSpec
from service.threshold_spec import ThresholdSpec

CLASS_NAMES = ["0", "1"]  # PneumoniaMNIST: 0 normal, 1 pneumonia


def trained_scores(*, data: Path, epochs: int, seed: int) -> dict[str, SplitScores]:
    """Val/test scores of a quick simple_cnn model, made the way a job makes them."""
    from workers.lifecycle.decisions import make_decisions
    from workers.lifecycle.plan import build_training

    arrays, names = common.load_npz(data)
    spec = JobSpec.model_validate(
        {"dataset_id": "benchmark", "model": {"arch": "simple_cnn"}, "epochs": epochs, "seed": seed}
    )
    plan = build_training(spec, dataset_arrays=arrays, class_names=names, device="cpu", init_state=None)
    result = plan.fit()
    labels = {split: arrays[split][1] for split in ("val", "test")}
    return make_decisions(result, spec=spec, class_names=names, labels=labels).scores


def resplit_coverage(
    scores: dict[str, SplitScores], *, resplits: int, target: float, confidence: float, positive: int, seed: int
) -> dict[str, float]:
    """Miss rates over ``resplits`` random val/test resplits of the pooled scores (see the module docstring).

    Besides the fitted operating point, a *fixed* threshold (the one the policy
    picks on the whole pool, so no resplit selects it) is bounded on each val
    part: the miss rates of an unselected bound, against the pool and against
    the test part, separate the test part's sampling error from the selection.
    """
    pooled = SplitScores(
        np.concatenate([scores["val"].probs, scores["test"].probs]),
        np.concatenate([scores["val"].labels, scores["test"].labels]),
    )
    n_val = len(scores["val"].labels)
    policy = ThresholdSpec(
        strategy="recall_at_least", value=target, class_=positive, guarantee=True, confidence=confidence
    )
    fixed = fit_policy(policy, val=pooled, class_names=CLASS_NAMES, positive_class=positive)

    def recall_and_bound(point: OperatingPoint, split: SplitScores) -> tuple[float, float]:
        entry = point_metrics(point, split, class_names=CLASS_NAMES)["per_class"][positive]
        return entry["recall"], entry["recall_lower_bound"]

    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(
        (
            "population_below_target",
            "population_below_val_bound",
            "below_target",
            "below_val_bound",
            "guarantee_unmet",
            "fixed_population_below_val_bound",
            "fixed_below_val_bound",
        ),
        0,
    )
    recalls, bounds = [], []
    for _ in range(resplits):
        order = rng.permutation(len(pooled.labels))
        val = SplitScores(pooled.probs[order[:n_val]], pooled.labels[order[:n_val]])
        test = SplitScores(pooled.probs[order[n_val:]], pooled.labels[order[n_val:]])
        point = fit_policy(policy, val=val, class_names=CLASS_NAMES, positive_class=positive)
        counts["guarantee_unmet"] += point.guarantee_met is not True
        _, val_bound = recall_and_bound(point, val)
        recall, _ = recall_and_bound(point, test)
        population, _ = recall_and_bound(point, pooled)
        counts["population_below_target"] += population < target
        counts["population_below_val_bound"] += population < val_bound
        counts["below_target"] += recall < target
        counts["below_val_bound"] += recall < val_bound
        _, fixed_bound = recall_and_bound(fixed, val)
        counts["fixed_population_below_val_bound"] += recall_and_bound(fixed, pooled)[0] < fixed_bound
        counts["fixed_below_val_bound"] += recall_and_bound(fixed, test)[0] < fixed_bound
        recalls.append(recall)
        bounds.append(val_bound)
    return {
        **{name: count / resplits for name, count in counts.items()},
        "median_test_recall": float(np.median(recalls)),
        "median_val_bound": float(np.median(bounds)),
        "val_positives": float(np.mean(scores["val"].labels == positive) * n_val),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--scores", type=Path, default=None, help="a model's scores.npz (default: train one)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the quick simple_cnn model")
    parser.add_argument("--save-scores", type=Path, default=None, help="keep the trained model's scores.npz here")
    parser.add_argument("--resplits", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--positive", type=int, default=1, help="the class the recall target is for")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.resplits = 1, 20
    if args.scores is not None:
        scores = read_scores_npz(args.scores.read_bytes())
        source = f"`{args.scores}`"
    else:
        scores = trained_scores(data=args.data, epochs=args.epochs, seed=args.seed)
        if args.save_scores is not None:
            args.save_scores.write_bytes(scores_npz(scores))
        source = f"simple_cnn, {args.epochs} epochs on the CPU, seed {args.seed}, calibrated (temperature)"
    found = resplit_coverage(
        scores,
        resplits=args.resplits,
        target=args.target,
        confidence=args.confidence,
        positive=args.positive,
        seed=args.seed,
    )
    pct = {name: f"{value:.1%}" for name, value in found.items()}
    markdown = "\n".join(
        [
            f"commit `{common.commit()}`; scores: {source}; class {args.positive} (pneumonia), "
            f"`recall_at_least` {args.target}, `guarantee: true`, confidence {args.confidence}, "
            f"{args.resplits} random val/test resplits of the pooled val+test scores (val part = val size).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| **the guarantee**: resplits whose pooled (population) recall < target {args.target} "
            f"(bounded by {1 - args.confidence:.0%}) | {pct['population_below_target']} |",
            f"| resplits whose pooled recall < the val lower bound at the chosen threshold | "
            f"{pct['population_below_val_bound']} |",
            f"| resplits whose test recall < target {args.target} | {pct['below_target']} |",
            f"| resplits whose test recall < the val lower bound at the chosen threshold | {pct['below_val_bound']} |",
            f"| fixed threshold (fitted once on the pool): pooled recall < its val lower bound | "
            f"{pct['fixed_population_below_val_bound']} |",
            f"| fixed threshold (fitted once on the pool): test recall < its val lower bound | "
            f"{pct['fixed_below_val_bound']} |",
            f"| resplits where the guarantee could not be met on val | {pct['guarantee_unmet']} |",
            f"| median test recall at the chosen threshold | {found['median_test_recall']:.4f} |",
            f"| median val lower bound | {found['median_val_bound']:.4f} |",
            f"| val positives per resplit (mean) | {found['val_positives']:.0f} |",
            "",
            "What the guarantee promises is the first row: the recall of the population the val part was drawn "
            "from (here the pool of stored scores) is below the target in at most 1 - confidence of the "
            "resplits. A test-split recall is not that population recall: it is a second finite sample with its "
            "own binomial noise, so it falls below a valid val lower bound more often than 1 - confidence, even "
            "for a threshold no resplit selected (the fixed-threshold rows; with val and test of equal size about "
            "P(Z < -z/sqrt(2)) = 12 % at 0.95 for a normal approximation, about 10 % with the exact bound: "
            "`tests/rarefit/test_guarantee_coverage.py` simulates it on a known population). The val bound at the "
            "chosen threshold is, moreover, read at a threshold picked because that bound cleared the target, so "
            "it is a guarantee for the target, not for its own value. The pool holds each val part too (val is "
            "close to half of it), so the pooled rows run below 1 - confidence: a finite population shares the "
            "val part's luck; the simulation test checks the bound against an infinite population as well.",
        ]
    )
    common.publish("guarantees-cpu", markdown, args=args, module="benchmarks.guarantees", argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
