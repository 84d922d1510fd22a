"""The one decision rule: binary thresholds, one-vs-rest, Bayes cost decisions (against hand tables)."""

from __future__ import annotations

import numpy as np
import pytest

from rarefit.decision import DecisionRule, choose_threshold, decide


def labels(probs, rule) -> list[int]:
    return decide(np.asarray(probs, dtype=float), rule=rule)[0].tolist()


def test_binary_threshold_on_the_positive_class() -> None:
    one = DecisionRule.binary(positive_class=1, threshold=0.3)
    assert labels([[0.7, 0.3], [0.71, 0.29], [0.2, 0.8]], one) == [1, 0, 1]  # at the threshold: positive
    zero = DecisionRule.binary(positive_class=0, threshold=0.9)
    assert labels([[0.85, 0.15], [0.95, 0.05]], zero) == [1, 0]
    assert labels([[0.4, 0.4, 0.2], [0.2, 0.5, 0.3]], DecisionRule.argmax()) == [0, 1]  # first on ties
    assert DecisionRule.binary(positive_class=1, threshold=None) == DecisionRule.argmax()


def test_margins_say_how_far_each_decision_is_from_flipping() -> None:
    _, margins = decide(np.array([[0.7, 0.3], [0.9, 0.1]]), rule=DecisionRule.binary(positive_class=1, threshold=0.2))
    np.testing.assert_allclose(margins, [0.1, -0.1])
    _, margins = decide(np.array([[0.6, 0.3, 0.1]]), rule=DecisionRule.argmax())
    np.testing.assert_allclose(margins, [0.3])


def test_one_vs_rest_thresholds_fall_back_to_the_unthresholded_classes() -> None:
    rule = DecisionRule.one_vs_rest({2: 0.2})
    # p2 >= 0.2 claims class 2 even when it is not the argmax; otherwise argmax over classes 0 and 1.
    assert labels([[0.5, 0.3, 0.2], [0.5, 0.31, 0.19], [0.1, 0.8, 0.1]], rule) == [2, 0, 1]
    both = DecisionRule.one_vs_rest({0: 0.5, 1: 0.2})
    # both claimed: the larger excess wins (.05 vs .2, .02 vs .05, .1 vs .01); neither: argmax
    assert labels([[0.55, 0.4, 0.05], [0.52, 0.25, 0.23], [0.6, 0.21, 0.19], [0.3, 0.1, 0.6]], both) == [1, 1, 0, 2]


def test_cost_matrix_decisions_match_a_hand_computed_table() -> None:
    # C[true][predicted]: missing class 1 costs 10, a false alarm 1.
    rule = DecisionRule.bayes([[0, 1], [10, 0]])
    # expected cost of predicting 0 = 10 p1, of predicting 1 = p0: predict 1 when p1 > 1/11.
    table = [([0.95, 0.05], 0), ([0.9, 0.1], 1), ([0.5, 0.5], 1), ([0.99, 0.01], 0)]
    assert labels([p for p, _ in table], rule) == [want for _, want in table]
    three = DecisionRule.bayes([[0, 1, 4], [1, 0, 4], [8, 8, 0]])
    # p=(.5,.3,.2): costs (.3+1.6, .5+1.6, 2+1.2) = (1.9, 2.1, 3.2) -> 0; p=(.4,.2,.4): (3.4, 3.6, 2.4) -> 2
    assert labels([[0.5, 0.3, 0.2], [0.4, 0.2, 0.4]], three) == [0, 2]
    _, margins = decide(np.array([[0.5, 0.3, 0.2]]), rule=three)
    np.testing.assert_allclose(margins, [0.2])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DecisionRule(kind="vote"), "unknown decision rule 'vote'"),
        (lambda: DecisionRule.one_vs_rest({0: 1.5}), r"threshold for class 0 must be a number in \[0, 1\]"),
        (lambda: DecisionRule.bayes([[0, 1], [1]]), "K×K"),
        (lambda: DecisionRule.bayes([[0, -1], [1, 0]]), ">= 0"),
    ],
)
def test_bad_rules_are_refused(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_rule_for_other_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold for class 2, but the model has 2 classes"):
        decide(np.array([[0.5, 0.5]]), rule=DecisionRule.one_vs_rest({2: 0.5}))


def test_precision_at_least_takes_the_best_recall_reaching_it() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    is_pos = np.array([True, True, False, True, False, True])
    # precision at >= .9: 1, .8: 1, .7: .67, .6: .75, .5: .6, .4: .67 -> >= 0.75 best recall at 0.6
    assert choose_threshold(scores, is_pos, objective="precision_at_least", target=0.75).threshold == 0.6
    unmet = choose_threshold(np.array([0.9, 0.8]), np.array([False, True]), objective="precision_at_least", target=0.9)
    assert (unmet.met, unmet.threshold) == (False, 0.8)  # the best precision there is


@pytest.mark.parametrize("objective", ["max_f1", "recall_at_least", "precision_at_least"])
def test_adversarial_score_lists(objective) -> None:
    target = None if objective == "max_f1" else 0.9
    ties = choose_threshold(np.full(6, 0.5), np.array([1, 0, 1, 0, 1, 0], bool), objective=objective, target=target)
    assert ties.threshold == 0.5  # one candidate: everything or nothing
    none = choose_threshold(np.array([0.2, 0.4]), np.array([False, False]), objective=objective, target=target)
    assert (none.threshold, none.met) == (None, False) and "no samples" in none.reason
    every = choose_threshold(np.array([0.2, 0.4]), np.array([True, True]), objective=objective, target=target)
    assert every.met and every.threshold == (0.2 if objective != "precision_at_least" else 0.2)


def test_a_lower_bound_makes_the_target_harder_to_meet() -> None:
    scores = np.linspace(0, 1, 20)
    is_pos = scores > 0.3
    plain = choose_threshold(scores, is_pos, objective="recall_at_least", target=0.9)
    strict = choose_threshold(scores, is_pos, objective="recall_at_least", target=0.9, bound=lambda s, n: s / n - 0.2)
    assert plain.met and not strict.met and strict.threshold == 0.0  # the fallback: every sample positive
