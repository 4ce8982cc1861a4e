"""One prepared check for a GPU machine: loss kernels, training, serving and the gpu tests.

Run on the device machine (an H200; at most about 8 minutes), from the repository root:

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_check.py --out $OUT/gpu.json

with `.gpu-wheels` in the run's `carry`. That python3 has torch, torchvision, timm,
transformers, safetensors and scikit-learn but no pydantic, which `apl.spec` needs; the
wheels travel in `.gpu-wheels/` (git-ignored, 2.8 MB) and the script unpacks the ones that
fit the interpreter into a temporary folder when pydantic is missing. Fetch them once on
the development machine (the device's python3 was 3.12 when this was written; check with
`python3 -V` there and change --python-version if it differs):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .gpu-wheels pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
      typing-inspection==0.4.5 typing-extensions==4.16.0

It prints one Markdown table (what docs/gpu.md shows) and writes the JSON report:

- loss: forward + backward of the apl, asl and bce presets, BCE-with-logits and timm's
  AsymmetricLossMultiLabel at 256x1000, 4096x1000 and 4096x9605 in fp32 and bf16 (medians of
  CUDA-event timings, first-call compile times, kernel profiles), values and gradients
  against the float64 CPU reference;
- training: steps/s of minilm-l6, mobilenetv2-100 and efficientnet-lite0 (random weights)
  in fp32 and bf16 autocast through `apl.training.train`, the loop body alone and the input
  pipeline alone; a short bf16 run whose loss must fall and stay finite;
- serving: the `apl` predictor on the device, one input per call against batches of 32;
- gpu tests: `pytest -m gpu` over the suite's GPU test files.

`--device cpu --quick` runs every section with tiny shapes in seconds; `make test` does that
(tests/benchmarks/test_gpu_check.py) so the script cannot rot without a GPU. The exit status
is 0 when every check passed (goals missed are reported, not failures).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the gpucheck package beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # apl, without PYTHONPATH too

from gpucheck.main import main

if __name__ == "__main__":
    sys.exit(main())
