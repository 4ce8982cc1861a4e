"""Each process's share of the cores: processes side by side must not oversubscribe them."""

from __future__ import annotations

import pytest

from apl.threads import available_cores, share_of_cores, torch_threads_for


def test_the_cores_are_divided_among_the_processes_and_never_below_one() -> None:
    assert share_of_cores(1, cores=8) == 8
    assert share_of_cores(2, cores=8) == 4
    assert share_of_cores(3, cores=8) == 2
    assert share_of_cores(4, cores=2) == 1
    assert share_of_cores(0, cores=2) == 2
    assert 1 <= share_of_cores(1) == available_cores()


def test_a_configured_count_wins_and_an_operators_omp_num_threads_is_left_to_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert torch_threads_for(2, configured=3) == 3
    assert torch_threads_for(2, configured=None) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert torch_threads_for(1, configured=None) == available_cores()
    assert torch_threads_for(available_cores() * 2, configured=None) == 1
