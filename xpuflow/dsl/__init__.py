"""Steps and flows: the declarations every backend and verb reads (see :mod:`.step`, :mod:`.flow`)."""

from .flow import Flow, FlowParam, OutputRef, Task, flow
from .step import Input, Output, Param, Step, FlowError, step

__all__ = ["Flow", "FlowParam", "Input", "Output", "OutputRef", "Param", "Step", "FlowError", "Task", "flow", "step"]
