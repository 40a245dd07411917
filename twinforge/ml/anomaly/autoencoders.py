"""An autoencoder and a memory-augmented autoencoder (MemAE, Gong et al. 2019) in
PyTorch, exported to ONNX with the per-sample reconstruction error as their output."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from twinforge.ml.torch_export import to_onnx


class _Autoencoder(nn.Module):
    def __init__(self, features: int, memory: int = 0, latent: int = 4) -> None:
        super().__init__()
        hidden = max(8, 2 * features)
        self.encoder = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )
        # MemAE: the latent code is rebuilt from a few learnt prototypes of normal
        # samples, so an anomaly cannot be reconstructed by a decoder that generalizes.
        self.memory = nn.Parameter(torch.randn(memory, latent) * 0.5) if memory else None
        self.shrink = 1.0 / memory if memory else 0.0

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.encoder(x)
        weights = None
        if self.memory is not None:
            weights = torch.softmax(z @ self.memory.T, dim=1)
            # Hard shrinkage: only the prototypes that matter take part.
            weights = (
                torch.relu(weights - self.shrink)
                * weights
                / (torch.abs(weights - self.shrink) + 1e-12)
            )
            weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-12)
            z = weights @ self.memory
        return self.decoder(z), weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reconstruction, _ = self.forward_parts(x)
        return ((x - reconstruction) ** 2).mean(dim=1, keepdim=True)


def fit_autoencoder(
    x: np.ndarray, *, memory: bool, seed: int, quick: bool = False
) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    """Train on ``x`` (scaled to [0, 1]); the ONNX model and the native scorer."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # small models: threads cost more than they save here
    model = _Autoencoder(x.shape[1], memory=20 if memory else 0)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    epochs = 8 if quick else 30
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(data), generator=generator).split(256):
            sample = data[batch]
            reconstruction, weights = model.forward_parts(sample)
            loss = ((sample - reconstruction) ** 2).mean()
            if weights is not None:  # sparse addressing: entropy of the memory weights
                loss = loss + 2e-4 * (-weights * torch.log(weights + 1e-12)).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()

    def native(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return to_onnx(model, data[:2]), native
