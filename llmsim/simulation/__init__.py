"""Serving workloads run through the step engine in virtual time, without a server.

``llmsim simulate`` runs a workload (:mod:`.synthetic`, or a trace, dataset or recording from
:mod:`.traces`) through several step engines behind a router (:mod:`.cluster`,
:mod:`.routers`) on one virtual clock; :mod:`.recorder` and :mod:`.results` summarise it in
bounded memory, :mod:`.run` ties one run together and :mod:`.search` answers sweeps and SLO
searches. ``python -m llmsim.simulation replay`` drives one
:class:`~llmsim.engine.step.step_engine.StepEngine` (:mod:`.driver`) with the lengths and
rates of published vLLM benchmark runs; :mod:`.stats` summarises them the way vLLM's serving
benchmark does, and :mod:`.benchmark_run` reads that benchmark's result files and compares.
"""

from llmsim.simulation.cluster import Cluster, Outcome
from llmsim.simulation.driver import RequestRecord, Simulation
from llmsim.simulation.run import Result, Setup, simulate
from llmsim.simulation.stats import Summary, summarize
from llmsim.simulation.workload import Request, poisson_send_times

__all__ = [
    "Cluster",
    "Outcome",
    "Request",
    "RequestRecord",
    "Result",
    "Setup",
    "Simulation",
    "Summary",
    "poisson_send_times",
    "simulate",
    "summarize",
]
