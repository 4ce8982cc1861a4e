"""apl.search: the space a sweep searches, Optuna's proposals and pruning decisions from rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from apl.search import (
    LOSS_SEARCHABLE,
    SearchSpec,
    TrialRecord,
    candidate_space,
    importances,
    propose,
    should_prune,
)

SPACE = {
    "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
    "batch_size": {"choices": [8, 16]},
    "epochs": {"low": 2, "high": 4},
    "warmup_fraction": 0.05,
    "loss.gamma_neg": {"low": 0.0, "high": 6.0},
}


def spec(**extra: object) -> SearchSpec:
    return SearchSpec.model_validate({"trials": 6, "space": SPACE} | extra)


def test_proposals_stay_in_the_space_keep_fixed_values_and_are_reproducible() -> None:
    search = spec()
    space = search.space or {}
    history: list[TrialRecord] = []
    for number in range(6):
        params = propose(search, space, history, "sweep:0")
        assert params == propose(search, space, history, "sweep:0")  # seeded by sweep, candidate, number
        assert 1e-5 <= float(params["learning_rate"]) <= 1e-2 and params["batch_size"] in (8, 16)
        assert isinstance(params["epochs"], int) and 2 <= params["epochs"] <= 4
        assert params["warmup_fraction"] == 0.05 and 0 <= float(params["loss.gamma_neg"]) <= 6
        history.append(TrialRecord(number, params, "complete", [0.1 * number]))
    assert len({h.params["learning_rate"] for h in history}) == 6


def test_loss_parameters_are_searched_only_where_the_loss_has_them() -> None:
    assert "loss.gamma_neg" not in candidate_space(spec().space or {}, "bce")
    assert "loss.gamma_neg" in candidate_space(spec().space or {}, "apl")
    assert "learning_rate" in candidate_space(spec().space or {}, "bce")


ROBUST_SPACE = {
    "loss.lamb": {"low": 1.0, "high": 2.0},
    "loss.margin": {"low": 0.0, "high": 1.5},
    "loss.gamma": {"choices": [1.0, 2.0]},
    "loss.tau": {"low": 0.5, "high": 0.9},
    "loss.change_epoch": {"low": 1, "high": 3},
    "loss.neg_scale": {"low": 1.0, "high": 5.0, "log": True},
    "loss.map_beta": 8.0,
    "loss.tp": {"low": 1.0, "high": 8.0, "log": True},
    "loss.tn": {"low": 0.5, "high": 2.0},
    "loss.gamma_neg": {"low": 0.0, "high": 6.0},
}


@pytest.mark.parametrize(
    ("loss", "names"),
    [
        ("hill", {"loss.lamb", "loss.margin", "loss.gamma"}),
        ("splc", {"loss.tau", "loss.margin", "loss.gamma", "loss.change_epoch"}),
        ("dbl", {"loss.neg_scale", "loss.map_beta", "loss.gamma"}),
        ("twoway", {"loss.tp", "loss.tn"}),
        ("apl", {"loss.gamma_neg"}),
        ("bce", set()),
    ],
)
def test_the_new_losses_search_their_own_parameters_only(loss: str, names: set[str]) -> None:
    search = SearchSpec.model_validate({"trials": 4, "space": {**ROBUST_SPACE, **SPACE}})
    space = candidate_space(search.space or {}, loss)
    assert {name for name in space if name.startswith("loss.")} == names
    assert set(LOSS_SEARCHABLE[loss]) >= names
    history: list[TrialRecord] = []
    for number in range(4):
        params = propose(search, space, history, f"sweep:{loss}")
        assert {name for name in params if name.startswith("loss.")} == names
        if "loss.change_epoch" in names:  # a whole number of epochs
            assert isinstance(params["loss.change_epoch"], int) and 1 <= params["loss.change_epoch"] <= 3
        if "loss.tp" in names:
            assert 1.0 <= float(params["loss.tp"]) <= 8.0 and 0.5 <= float(params["loss.tn"]) <= 2.0
        history.append(TrialRecord(number, params, "complete", [0.1 * number]))


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"nope": 1}, "unknown name 'nope'"),
        ({"loss.temperature": {"low": 1, "high": 2}}, "unknown name 'loss.temperature'"),
        ({"loss.tp": {"low": 4.0, "high": 1.0}}, "empty range"),
        ({"loss.change_epoch": {"low": 2.2, "high": 2.8}}, "'loss.change_epoch' takes integers"),
        ({"learning_rate": {"low": 1e-2, "high": 1e-5}}, "empty range"),
        ({"learning_rate": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ({"epochs": {"low": 2.2, "high": 2.8}}, "takes integers"),
    ],
)
def test_a_bad_space_is_refused_naming_the_name(space: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        SearchSpec.model_validate({"space": space})


def test_the_median_pruner_stops_a_trial_below_the_finished_ones_and_spares_a_better_one() -> None:
    search = spec()
    space = search.space or {}
    done = [TrialRecord(0, {"learning_rate": 1e-3}, "complete", [0.6, 0.7, 0.8])]
    loser = TrialRecord(1, {"learning_rate": 1e-5}, "running", [0.2])
    winner = TrialRecord(1, {"learning_rate": 1e-4}, "running", [0.65])
    assert should_prune(search, space, done, loser, 3)[0] is True
    assert should_prune(search, space, done, winner, 3)[0] is False
    assert should_prune(spec(pruner="none"), space, done, loser, 3)[0] is False
    assert should_prune(search, space, [], loser, 3)[0] is False  # nothing finished to compare with


def test_hyperband_records_the_rungs_a_trial_reached_for_the_next_decision() -> None:
    search = spec(pruner="hyperband")
    space = search.space or {}
    first = TrialRecord(0, {"learning_rate": 1e-3}, "running", [0.5, 0.5, 0.5, 0.5])
    _, attrs = should_prune(search, space, [], first, 4)
    assert any(key.startswith("completed_rung_") for key in attrs)


def test_importances_need_two_complete_trials_and_a_lone_parameter_has_all_of_it() -> None:
    space = {"learning_rate": SPACE["learning_rate"]}
    search = SearchSpec.model_validate({"space": space})
    history = [
        TrialRecord(i, {"learning_rate": lr}, "complete", [v])
        for i, (lr, v) in enumerate([(1e-4, 0.3), (1e-3, 0.6)])
    ]
    assert importances(search.space or {}, history[:1]) == {}
    assert importances(search.space or {}, history) == {"learning_rate": 1.0}


def test_the_median_pruner_waits_for_a_third_of_the_epochs() -> None:
    search = spec()
    space = search.space or {}
    done = [TrialRecord(0, {"learning_rate": 1e-3}, "complete", [0.6] * 15)]
    early = TrialRecord(1, {"learning_rate": 1e-5}, "running", [0.2])
    later = TrialRecord(1, {"learning_rate": 1e-5}, "running", [0.2] * 5)
    assert should_prune(search, space, done, early, 15)[0] is False  # epoch 1 of 15: still warming up
    assert should_prune(search, space, done, later, 15)[0] is True
