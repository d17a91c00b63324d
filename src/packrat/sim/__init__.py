"""A discrete-event simulator of a Packrat server: arrivals, dynamic batching, plans, policy.

It runs the server's own pure code (the batcher's admission rule, `Planning`, the plan
policies of `packrat.controller.policy`, the optimizer and the batch split) over simulated
time instead of processes, to predict latency percentiles, throughput and switches for a
profile on any number of cores, in seconds. Never imports torch.
"""

from packrat.sim.arrivals import SIM_BOUNDS, bursts, poisson_load, stepped, trace
from packrat.sim.loop import simulate
from packrat.sim.model import ChosenPlan, SimModel, choose_plan
from packrat.sim.results import Counts, SimResult
from packrat.sim.run import SimConfig, make_planning, simulate_profile
from packrat.sim.service import (
    DEFAULT_OVERHEAD_MS,
    DEFAULT_SWITCH_MS,
    ServiceModel,
    SimError,
    Timing,
)
from packrat.sim.synthetic import AmdahlFit, fit_profile, synthetic_profile

__all__ = [
    "DEFAULT_OVERHEAD_MS",
    "DEFAULT_SWITCH_MS",
    "SIM_BOUNDS",
    "AmdahlFit",
    "ChosenPlan",
    "Counts",
    "ServiceModel",
    "SimConfig",
    "SimError",
    "SimModel",
    "SimResult",
    "Timing",
    "bursts",
    "choose_plan",
    "fit_profile",
    "make_planning",
    "poisson_load",
    "simulate",
    "simulate_profile",
    "stepped",
    "synthetic_profile",
    "trace",
]
