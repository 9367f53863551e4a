"""models.encoder.LatentEncoder: starts at G's mean w, maps into w-space, trains."""

from __future__ import annotations

import torch

from medgan_fast.models.encoder import LatentEncoder
from medgan_fast.models.stylegan2 import Generator


def test_encoder_starts_at_w_avg_and_learns_to_reconstruct():
    torch.manual_seed(0)
    g = Generator(z_dim=16, w_dim=16, img_resolution=16, img_channels=1, channel_base=256, channel_max=32,
                  mapping_layers=2).requires_grad_(False)
    g.mapping.w_avg.normal_()
    e = LatentEncoder(16, 1, g.mapping.w_avg, channel_base=256, channel_max=32)
    x = g.synthesis(g.mapping(torch.randn(4, 16), update_w_avg=False), noise_mode="const")
    w = e(x)
    assert w.shape == (4, 16)
    torch.testing.assert_close(w, g.mapping.w_avg.expand(4, -1))

    def loss():
        ws = e(x).unsqueeze(1).repeat(1, g.num_ws, 1)
        return (g.synthesis(ws, noise_mode="const") - x).square().mean()

    optimizer = torch.optim.Adam(e.parameters(), 1e-3)
    first = float(loss().detach())
    for _ in range(30):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert float(loss().detach()) < first * 0.9
