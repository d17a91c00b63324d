"""One simulation from a profile: the server's planning on T cores, its batching, a load.

    table = load_profile("bert_latency.csv").latency_table()
    config = SimConfig(cores=16, policy="auto", batching=BatchingConfig(max_batch_size=32))
    result = simulate_profile(table, config, poisson_load(rate_rps=100, duration_s=600))

The cores are numbered on a synthetic single-socket machine of T cores (as `packrat plan`
does for machines larger than this one): placement decides only which plans have the same
instances, not how fast they run.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

from packrat.controller.batching import BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.planning import Planning
from packrat.optimizer.chunks import chunked
from packrat.optimizer.table import LatencyTable
from packrat.progress import Progress
from packrat.sim.loop import simulate
from packrat.sim.model import SimModel, choose_plan
from packrat.sim.results import SimResult
from packrat.sim.service import ServiceModel, SimError, Timing
from packrat.topology import synthetic_topology
from packrat.workload.schedule import OpenLoop


@dataclass(frozen=True)
class SimConfig:
    """The simulated server.

    cores: T, the cores the model may use (any number: the machine is synthetic).
    policy: "auto", "follow", "fixed", "fat", "single" or a plan such as "<2,1,4>"
        (`choose_plan`); estimator: the settings of "follow"'s estimator.
    batching: the batcher's settings, as `packrat serve` takes them.
    timing: per-batch overhead, switch cost and noise. seed: of the noise.
    interpolate: plan and split with the profile interpolated to every batch size, as the
        server does; False keeps the profiled batch sizes only (the paper's optimizer; much
        faster to plan for large batches on many cores).
    chunks: instances run their share of a batch as consecutive chunks where the interpolated
        profile says that is faster, as the server does (`optimizer.chunks`); False plans
        whole shares only, as the paper does. Only with `interpolate` (chunks and their
        remainders may be any size).
    max_workers: simulate workers that cannot move (OpenVINO's): at most this many, one per
        (threads, cores), with each batch on the fastest plan they can run, as the server
        keeps them (`Planning.max_layouts`); None: workers that move (any optimal plan).
    """

    cores: int
    _: KW_ONLY  # every other field by name: several share defaults' types
    policy: str = "auto"
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    timing: Timing = field(default_factory=Timing)
    seed: int = 0
    interpolate: bool = True
    chunks: bool = True
    max_workers: int | None = None

    def __post_init__(self) -> None:
        for name in ("cores", "max_workers"):
            value = getattr(self, name)
            if name == "max_workers" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SimError(f"SimConfig.{name} must be an int >= 1, got {value!r}")


def make_planning(table: LatencyTable, config: SimConfig) -> Planning:
    """The server's `Planning` for `table` on `config.cores` synthetic cores (in chunks where
    the server would run them: the service times are then the chunked ones too). Planning is
    the slow part of a simulation with many cores and large batches: share one between
    simulations of the same table, cores, largest batch and interpolation."""
    if config.interpolate:
        table = table.interpolated()
        if config.chunks:
            table, _ = chunked(table)
    topology = synthetic_topology(sockets=1, cores_per_socket=config.cores)
    return Planning(topology, table, config.batching.max_batch_size, config.max_workers)


def simulate_profile(
    table: LatencyTable | Planning,
    config: SimConfig,
    load: OpenLoop,
    progress: Progress | None = None,
) -> SimResult:
    """Serve `load` as `packrat serve --policy/--fat/--plan` would on `config.cores` cores
    with a model profiled as `table` (or a `make_planning` of it, to reuse)."""
    planning = table if isinstance(table, Planning) else make_planning(table, config)
    if planning.cores != config.cores:
        raise SimError(f"the planning is for {planning.cores} cores, not {config.cores}")
    if planning.max_batch_size != config.batching.max_batch_size:
        raise SimError(
            f"the planning is for batches up to {planning.max_batch_size}, "
            f"not {config.batching.max_batch_size}"
        )
    if planning.table is None:
        raise SimError("a simulation needs a latency profile")
    chosen = choose_plan(planning, config.policy, config.estimator)
    service = ServiceModel(planning.table, config.timing, config.seed)
    model = SimModel(chosen, service, config.timing.switch_ms / 1000.0)
    return simulate(load, model, config.batching, progress)
