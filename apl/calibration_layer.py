"""Every label's calibrator (`apl.calibrators`) as one torch module: logits in, probabilities out.

The predictor (`apl.inference`) and the ONNX graph (`apl.export`) both run this module, so
a model's probabilities are the same wherever it runs. Built from elementwise operations
only (no searchsorted, no gather), so the legacy ONNX exporter traces it as it is:

- parametric labels (none, temperature, Platt): `sigmoid(scale * z + bias)`;
- isotonic labels: the piecewise-linear map through the knots (x_0, y_0) ... (x_K, y_K),
  written as a sum of clipped ramps, `y_0 + sum_k slope_k * min(max(z - x_k, 0), x_{k+1} - x_k)`,
  which is `np.interp` with both ends held; labels with fewer knots are padded with
  zero-width ramps.
"""

from __future__ import annotations

import torch
from torch import nn

from apl.calibrators import Calibration


class CalibrationLayer(nn.Module):
    """Calibrated probabilities of a (batch, labels) logit tensor."""

    scale: torch.Tensor
    bias: torch.Tensor
    isotonic: torch.Tensor
    start: torch.Tensor
    knots: torch.Tensor
    widths: torch.Tensor
    slopes: torch.Tensor

    def __init__(self, calibration: Calibration) -> None:
        super().__init__()
        labels = calibration.labels
        count = max([len(c.knots[0]) - 1 for c in labels if c.knots is not None] + [1])
        knots = torch.zeros(len(labels), count, dtype=torch.float64)
        widths = torch.zeros_like(knots)
        slopes = torch.zeros_like(knots)
        start = torch.zeros(len(labels), dtype=torch.float64)
        for j, c in enumerate(labels):
            if c.knots is None:
                continue
            xs, ys = (
                torch.tensor(c.knots[0], dtype=torch.float64),
                torch.tensor(c.knots[1], dtype=torch.float64),
            )
            n = len(xs) - 1
            start[j] = ys[0]
            if n:
                knots[j, :n], widths[j, :n] = xs[:-1], xs[1:] - xs[:-1]
                slopes[j, :n] = (ys[1:] - ys[:-1]) / widths[j, :n]
        self.register_buffer("scale", torch.tensor([c.scale for c in labels], dtype=torch.float32))
        self.register_buffer("bias", torch.tensor([c.bias for c in labels], dtype=torch.float32))
        flags = [1.0 if c.knots is not None else 0.0 for c in labels]
        self.register_buffer("isotonic", torch.tensor(flags, dtype=torch.float32))
        self.register_buffer("start", start.float())
        self.register_buffer("knots", knots.float())
        self.register_buffer("widths", widths.float())
        self.register_buffer("slopes", slopes.float())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        parametric = torch.sigmoid(z * self.scale + self.bias)
        ramps = torch.minimum(torch.relu(z.unsqueeze(-1) - self.knots), self.widths)
        piecewise = self.start + (ramps * self.slopes).sum(dim=-1)
        return self.isotonic * piecewise + (1.0 - self.isotonic) * parametric
