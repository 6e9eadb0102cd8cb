"""The simulation engine: generation, timing and scheduling, with no HTTP in sight.

May import ``settings`` only, and never aiohttp: the engine runs and is tested without a server.
"""

from llmsim.engine.admission import AdmissionError
from llmsim.engine.answer import Answer, ToolCall
from llmsim.engine.engine import PAUSE_MODES, Engine, RequestGroup
from llmsim.engine.lora import Adapter, AdapterExistsError, AdapterNotFoundError
from llmsim.engine.observer import EngineObserver, FanOutObserver, NullObserver
from llmsim.engine.pacer import TokenSink
from llmsim.engine.request import (
    ContextLengthError,
    GenerationRequest,
    PromptInput,
    Target,
    UnknownModelError,
)
from llmsim.engine.scheduler import QueueFullError, Scheduler
from llmsim.engine.sequence import Sequence, State
from llmsim.engine.timing import TimingOverride

__all__ = [
    "PAUSE_MODES",
    "Adapter",
    "AdapterExistsError",
    "AdapterNotFoundError",
    "AdmissionError",
    "Answer",
    "ContextLengthError",
    "Engine",
    "EngineObserver",
    "FanOutObserver",
    "GenerationRequest",
    "NullObserver",
    "PromptInput",
    "QueueFullError",
    "RequestGroup",
    "Scheduler",
    "Sequence",
    "State",
    "Target",
    "TimingOverride",
    "TokenSink",
    "ToolCall",
    "UnknownModelError",
]
