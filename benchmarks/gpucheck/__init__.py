"""The pieces of `benchmarks/gpu_check.py`: one module per section, plus wheels, timing and the report.

Nothing here imports `apl` (and so pydantic) at module import time: the entry script first
makes carried wheels importable (`gpucheck.wheels`), then runs the sections.
"""
