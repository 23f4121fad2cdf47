"""The simulator behind ``omnipipe simulate``: journeys, ground truth, bad records, publisher."""

from pipeline.simulate.journeys import JourneyConfig, SimEvent, iter_events
from pipeline.simulate.publisher import BadInjection, Pacer, PublishStats, publish
from pipeline.simulate.runner import SimulationPlan, run_simulation
from pipeline.simulate.truth import Truth, TruthRecorder, load_truth

__all__ = [
    "BadInjection",
    "JourneyConfig",
    "Pacer",
    "PublishStats",
    "SimEvent",
    "SimulationPlan",
    "Truth",
    "TruthRecorder",
    "iter_events",
    "load_truth",
    "publish",
    "run_simulation",
]
