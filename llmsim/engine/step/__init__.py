"""The step latency model: one engine loop with KV-cache blocks, like vLLM v1's.

``block_pool`` (blocks, LRU free queue, prefix-cache names), ``kv_cache`` (blocks per
sequence, lookups, allocation), ``step_scheduler`` (one step's batch, preemption),
``costs`` (a step's duration), ``step_engine`` (the clock-free state machine) and
``step_loop`` (the asyncio driver).
"""

from llmsim.engine.step.block_pool import BlockPool, KVBlock
from llmsim.engine.step.costs import StepCosts
from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence
from llmsim.engine.step.plan import Chunk, StepPlan, StepResult
from llmsim.engine.step.step_engine import StepEngine, StepObserver, num_kv_blocks
from llmsim.engine.step.step_loop import StepLoop
from llmsim.engine.step.step_scheduler import StepScheduler
from llmsim.engine.step.virtual import Sample, VirtualRun, virtual_sequence

__all__ = [
    "BlockPool",
    "Chunk",
    "KVBlock",
    "KVCacheManager",
    "Sample",
    "StepCosts",
    "StepEngine",
    "StepLoop",
    "StepObserver",
    "StepPlan",
    "StepResult",
    "StepScheduler",
    "StepSequence",
    "VirtualRun",
    "num_kv_blocks",
    "virtual_sequence",
]
