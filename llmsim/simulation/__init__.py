"""Serving workloads run through the step engine in virtual time, without a server.

The core under ``python -m llmsim.simulation``: a workload (requests with prompt and output
lengths and send times, :mod:`.workload`) is driven through one
:class:`~llmsim.engine.step.step_engine.StepEngine` (:mod:`.driver`), which yields one record
per request; :mod:`.stats` summarises them the way vLLM's serving benchmark does, and
:mod:`.benchmark_run` reads that benchmark's result files and compares.
"""

from llmsim.simulation.driver import RequestRecord, Simulation
from llmsim.simulation.stats import Summary, summarize
from llmsim.simulation.workload import Request, poisson_send_times

__all__ = ["Request", "RequestRecord", "Simulation", "Summary", "poisson_send_times", "summarize"]
