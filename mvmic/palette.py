"""The class colours of segmentation panels, shared by every task and module that draws masks."""

from __future__ import annotations

import torch

# A colour per class for image panels (background black).
PALETTE = (
    torch.tensor(
        [[0, 0, 0], [0, 200, 0], [220, 40, 40], [40, 90, 230], [230, 200, 30], [200, 40, 200]]
    )
    / 255.0
)
