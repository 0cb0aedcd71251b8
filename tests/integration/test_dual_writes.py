"""`syncline demo dual-writes`: dual writes leave the cache and the index different from the
database, deterministically; syncline leaves none different."""

from __future__ import annotations

from pathlib import Path

from syncline.demo.dual_writes import SCENARIOS, STORES, predicted, run_dual_writes, schedule


def test_schedule_forces_divergence_whatever_the_seed() -> None:
    for seed in range(50):
        counts = predicted(schedule(seed, clients=2, keys=3, rounds=2), keys=3)
        assert all(n > 0 for n in counts.values()), (seed, counts)


def test_dual_writes_diverge_and_syncline_does_not(tmp_path: Path) -> None:
    seed, clients, keys, rounds = 11, 4, 12, 3
    result = run_dual_writes(tmp_path / "dw", clients=clients, keys=keys, rounds=rounds, seed=seed)
    expected = predicted(schedule(seed, clients, keys, rounds), keys)
    for scenario in SCENARIOS:
        for store in STORES:
            dual = result.count(scenario, "dual", store)
            assert dual > 0, (scenario, store, result)
            # the interleaving is driven, not hoped for: exactly what the schedule implies
            assert dual == expected[(scenario, store)], (scenario, store, result, expected)
            assert result.count(scenario, "syncline", store) == 0, (scenario, store, result)
    assert result.crashes > 0
