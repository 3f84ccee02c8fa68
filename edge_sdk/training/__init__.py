"""Training side of edge-ad: networks, distillation, EfficientAD training and ONNX export.

Everything here needs PyTorch (``pip install 'edge-ad[train]'``); the runtime never imports
this package, so ``import edge_sdk`` stays free of torch. Import the submodules directly,
e.g. ``from edge_sdk.training.networks import teacher``.
"""

from __future__ import annotations
