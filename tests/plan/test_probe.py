"""symscale.plan.probe: hours of candidate widths from timed training steps, calibrated on measured runs."""

from __future__ import annotations

import pytest

from symscale.models.flops import reference_batch
from symscale.plan.probe import ProbedCost, probe_widths, run_overhead


def test_probe_times_real_steps_and_grows_with_width():
    probed = probe_widths("mpnn", [4, 256], {"num_layers": 1}, reference_batch())
    (n4, s4), (n256, s256) = probed[4], probed[256]
    assert n256 > 100 * n4 and 0 < s4 < s256


def test_probed_cost_is_calibrated_on_the_runs_and_interpolates():
    probed = {1: (1e3, 1e-5), 4: (1e4, 2e-5), 16: (1e5, 8e-5)}
    # the runs took 3x what the probe says (optimiser, loader, evaluations are not probed)
    runs = [{"N": 1e3, "D": 1000, "seconds": 1000 * 3e-5}, {"N": 1e4, "D": 500, "seconds": 500 * 6e-5},
            {"N": 1e5, "D": 10, "seconds": 10 * 2.4e-4 * 10}]  # an outlier: the median ignores it
    cost = ProbedCost(probed, runs, copies=2)
    assert cost.calibration == pytest.approx(3.0)
    assert cost(1e5, 3600) == pytest.approx(2 * 3600 * 3 * 8e-5 / 3600)
    assert cost.per_atom(10 ** 4.5) == pytest.approx((2e-5 * 8e-5) ** 0.5)  # log-log between probed sizes
    with pytest.raises(ValueError, match="calibrate"):
        ProbedCost(probed, [], copies=1)


def test_a_runs_overhead_beyond_training_is_added_to_every_run():
    # worker seconds beyond training (start, data, evaluations): the median over the runs that have both times
    rows = [{"wall_s": 13.0, "train_time_s": 10.0}, {"wall_s": 105.0, "train_time_s": 100.0},
            {"wall_s": 44.0, "train_time_s": 40.0}, {"wall_s": 0.0, "train_time_s": 5.0},
            {"wall_s": 9.0, "train_time_s": None}]
    assert run_overhead(rows) == pytest.approx(4.0)
    assert run_overhead([]) == 0.0 and run_overhead([{"wall_s": 1.0, "train_time_s": 2.0}]) == 0.0
    probed = {1: (1e3, 1e-5)}
    runs = [{"N": 1e3, "D": 1000, "seconds": 1000 * 1e-5}]
    plain, full = ProbedCost(probed, runs, copies=2), ProbedCost(probed, runs, copies=2, overhead=4.0)
    assert full(1e3, 1000) - plain(1e3, 1000) == pytest.approx(2 * 4.0 / 3600)    # per copy
    assert plain(1e3, 1000) == pytest.approx(2 * 1000 * 1e-5 / 3600)
