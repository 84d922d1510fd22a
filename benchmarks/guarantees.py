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
lower bound the guarantee rested on. Without ``--scores`` a quick simple_cnn model is
trained on the CPU through the job path (spec → plan → fit → decisions).

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
from service.operating_points import SplitScores, fit_policy, point_metrics, read_scores_npz, scores_npz
from service.spec import JobSpec, ThresholdSpec

CLASS_NAMES = ["0", "1"]  # PneumoniaMNIST: 0 normal, 1 pneumonia


def trained_scores(*, data: Path, epochs: int, seed: int) -> dict[str, SplitScores]:
    """Val/test scores of a quick simple_cnn model, made the way a job makes them."""
    from workers.lifecycle.decisions import make_decisions
    from workers.lifecycle.plan import build_training
    from workers.training.engine import fit

    arrays, names = common.load_npz(data)
    spec = JobSpec.model_validate(
        {"dataset_id": "benchmark", "model": {"arch": "simple_cnn"}, "epochs": epochs, "seed": seed}
    )
    kwargs = build_training(spec, dataset_arrays=arrays, class_names=names, device="cpu", init_state=None)
    result = fit(**kwargs)
    labels = {split: arrays[split][1] for split in ("val", "test")}
    return make_decisions(result, spec=spec, class_names=names, labels=labels).scores


def resplit_coverage(
    scores: dict[str, SplitScores], *, resplits: int, target: float, confidence: float, positive: int, seed: int
) -> dict[str, float]:
    pooled = SplitScores(
        np.concatenate([scores["val"].probs, scores["test"].probs]),
        np.concatenate([scores["val"].labels, scores["test"].labels]),
    )
    n_val = len(scores["val"].labels)
    policy = ThresholdSpec(
        strategy="recall_at_least", value=target, class_=positive, guarantee=True, confidence=confidence
    )
    rng = np.random.default_rng(seed)
    below_target = below_bound = unmet = population_below = 0
    recalls, bounds = [], []
    for _ in range(resplits):
        order = rng.permutation(len(pooled.labels))
        val = SplitScores(pooled.probs[order[:n_val]], pooled.labels[order[:n_val]])
        test = SplitScores(pooled.probs[order[n_val:]], pooled.labels[order[n_val:]])
        point = fit_policy(policy, val=val, class_names=CLASS_NAMES, positive_class=positive)
        unmet += point.guarantee_met is not True
        val_bound = point_metrics(point, val, class_names=CLASS_NAMES)["per_class"][positive]["recall_lower_bound"]
        recall = point_metrics(point, test, class_names=CLASS_NAMES)["per_class"][positive]["recall"]
        below_target += recall < target
        population = point_metrics(point, pooled, class_names=CLASS_NAMES)["per_class"][positive]["recall"]
        population_below += population < target
        below_bound += recall < val_bound
        recalls.append(recall)
        bounds.append(val_bound)
    return {
        "population_below_target": population_below / resplits,
        "below_target": below_target / resplits,
        "below_val_bound": below_bound / resplits,
        "guarantee_unmet": unmet / resplits,
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
    markdown = "\n".join(
        [
            f"commit `{common.commit()}`; scores: {source}; class {args.positive} (pneumonia), "
            f"`recall_at_least` {args.target}, `guarantee: true`, confidence {args.confidence}, "
            f"{args.resplits} random val/test resplits of the pooled val+test scores (val part = val size).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| resplits whose pooled (population) recall < target {args.target} | "
            f"{found['population_below_target']:.1%} |",
            f"| resplits whose test recall < target {args.target} | {found['below_target']:.1%} |",
            f"| resplits whose test recall < the val lower bound | {found['below_val_bound']:.1%} |",
            f"| resplits where the guarantee could not be met on val | {found['guarantee_unmet']:.1%} |",
            f"| median test recall at the chosen threshold | {found['median_test_recall']:.4f} |",
            f"| median val lower bound | {found['median_val_bound']:.4f} |",
            f"| val positives per resplit (mean) | {found['val_positives']:.0f} |",
        ]
    )
    common.publish("guarantees-cpu", markdown, args=args, module="benchmarks.guarantees", argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
