"""Optimisers and the learning-rate curves of every schedule, warm-up and resume included."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from workers.training.optim import make_optimizer, make_scheduler


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3))]


def _curve(name: str, *, epochs: int = 4, steps: int = 5, scores=None, **kwargs) -> list[float]:
    """The lr used by every optimiser step, stepping the schedule as the engine does."""
    optimizer = make_optimizer("sgd", _params(), lr=0.1, weight_decay=0.0, momentum=0.9)
    schedule = make_scheduler(name, optimizer, epochs=epochs, steps_per_epoch=steps, **kwargs)
    used = []
    for epoch in range(epochs):
        for _ in range(steps):
            used.append(schedule.current_lr())
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(None if scores is None else scores[epoch])
    return used


def test_make_optimizer_kinds_and_settings():
    adamw = make_optimizer("adamw", _params(), lr=0.01, weight_decay=0.05)
    adam = make_optimizer("adam", _params(), lr=0.01, weight_decay=0.05)
    sgd = make_optimizer("sgd", _params(), lr=0.01, weight_decay=0.0, momentum=0.8)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.05
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 0.05
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.8 and not sgd.defaults["nesterov"]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [("lamb", {}, "unknown optimizer 'lamb'.*adamw, adam, sgd"), ("adamw", {"lr": 0.0}, "lr")],
)
def test_make_optimizer_rejects_bad_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(name, _params(), **{"lr": 0.1, **kwargs})


def test_make_scheduler_rejects_unknown_names_and_bad_milestones():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    with pytest.raises(ValueError, match="unknown scheduler 'poly'.*cosine"):
        make_scheduler("poly", optimizer, epochs=2, steps_per_epoch=2)
    with pytest.raises(ValueError, match="milestones"):
        make_scheduler("step", optimizer, epochs=2, steps_per_epoch=2, milestones=[1.5])
    with pytest.raises(ValueError, match="warmup_epochs"):
        make_scheduler("none", optimizer, epochs=2, steps_per_epoch=2, warmup_epochs=3)


def test_none_is_constant():
    assert _curve("none") == [0.1] * 20


def test_cosine_anneals_per_step_to_zero():
    used = _curve("cosine")
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(20)]
    assert used == pytest.approx(expected)
    assert used[0] == pytest.approx(0.1) and used[-1] < 0.001


def test_linear_warmup_then_cosine():
    used = _curve("cosine", warmup_epochs=1)
    assert used[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    expected_tail = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 15)) for t in range(15)]
    assert used[5:] == pytest.approx(expected_tail)


def test_step_multiplies_at_milestone_epochs():
    used = _curve("step", epochs=4, steps=2, milestones=[0.5, 0.75], step_gamma=0.5)
    assert used == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_onecycle_matches_torch_onecycle():
    used = _curve("onecycle", warmup_epochs=1)
    reference_opt = torch.optim.SGD(_params(), lr=0.1, momentum=0.9)
    reference = OneCycleLR(reference_opt, max_lr=0.1, total_steps=20, pct_start=0.25)
    expected = []
    for _ in range(20):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        if len(expected) < 20:
            reference.step()
    assert used == pytest.approx(expected)
    assert max(used) == pytest.approx(0.1) and used.index(max(used)) == 4


def test_plateau_cuts_lr_after_patience_epochs_without_improvement():
    scores = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7]
    used = _curve("plateau", epochs=8, steps=1, scores=scores)
    # epoch 2 is the best; epochs 3-6 do not improve; after the 4th (patience 3 exceeded) lr × 0.1.
    assert used == pytest.approx([0.1] * 6 + [0.01] * 2)


def test_plateau_waits_for_the_warmup():
    used = _curve("plateau", epochs=3, steps=2, warmup_epochs=1, scores=[0.1, 0.1, 0.1])
    assert used == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("name", ["cosine", "onecycle", "plateau", "step"])
def test_state_dict_resumes_the_curve_exactly(name):
    scores = [0.3, 0.2, 0.2, 0.2, 0.2, 0.2]
    straight = _curve(name, epochs=6, steps=3, scores=scores, warmup_epochs=1)

    def build():
        optimizer = make_optimizer("sgd", _params(), lr=0.1)
        return optimizer, make_scheduler(name, optimizer, epochs=6, steps_per_epoch=3, warmup_epochs=1)

    used = []
    optimizer, schedule = build()
    for epoch in range(6):
        if epoch == 3:  # "crash": rebuild and restore both states
            saved = (optimizer.state_dict(), schedule.state_dict())
            optimizer, schedule = build()
            optimizer.load_state_dict(saved[0])
            schedule.load_state_dict(saved[1])
        for _ in range(3):
            used.append(schedule.current_lr())
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(scores[epoch])
    assert used == pytest.approx(straight)


def test_load_state_dict_refuses_another_schedule():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    cosine = make_scheduler("cosine", optimizer, epochs=2, steps_per_epoch=2)
    with pytest.raises(ValueError, match="'cosine'.*'step'"):
        make_scheduler("step", optimizer, epochs=2, steps_per_epoch=2).load_state_dict(cosine.state_dict())
