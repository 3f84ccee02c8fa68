"""Training side of edge-ad: networks, distillation, EfficientAD training and ONNX export.

Everything here needs PyTorch (``pip install 'edge-ad[train]'``); the runtime never imports
this package, so ``import edge_sdk`` stays free of torch. Import the submodules directly,
e.g. ``from edge_sdk.training.networks import teacher``.
"""

from __future__ import annotations

import os
import sys

# PyTorch's OpenMP threads spin while they wait for work. Beside another training run on a
# 2-core machine that made an eigendecomposition 12x slower and a student pass 1.26x; idle,
# sleeping costs nothing measurable (benchmarks/omp_wait.py). GNU OpenMP reads this once,
# when torch loads: it applies when this package is imported first; a user's setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
