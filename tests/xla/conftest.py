"""The TPU tests run in the XLA venv (torch 2.9.0 + torch_xla 2.9.0) on XLA:CPU."""

import os

os.environ.setdefault("PJRT_DEVICE", "CPU")  # the same XLA code, compiled for the CPU
