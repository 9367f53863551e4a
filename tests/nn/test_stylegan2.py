"""StyleGAN2's layers and networks (medgan_fast.nn.stylegan2, medgan_fast.models.stylegan2):
given stylegan2-ada-pytorch's weights they compute its function (images, logits and every
parameter's gradient), and the layers keep their documented shapes and invariances."""

from __future__ import annotations

import re

import pytest
import torch
from stylegan2_peer import peer_modules

from medgan_fast.models.stylegan2 import Discriminator, Generator
from medgan_fast.nn.stylegan2 import MinibatchStd, downsample2d, upsample2d

SMALL = {"img_resolution": 16, "channel_base": 256, "channel_max": 64}  # 64, 32, 16 channels at 4, 8, 16 px


def peer_name(name: str, resolution: int) -> str:
    """Our parameter name -> stylegan2-ada's (blocks by resolution, fc layers by index)."""
    name = re.sub(r"^mapping\.layers\.(\d+)\.", lambda m: f"mapping.fc{m[1]}.", name)
    name = re.sub(r"^synthesis\.blocks\.(\d+)\.", lambda m: f"synthesis.b{4 * 2 ** int(m[1])}.", name)
    name = re.sub(r"^blocks\.(\d+)\.", lambda m: f"b{resolution // 2 ** int(m[1])}.", name)
    return re.sub(r"^epilogue\.", "b4.", name)


def load_peer_weights(ours: torch.nn.Module, peer: torch.nn.Module, resolution: int) -> None:
    theirs = {k: v for k, v in peer.state_dict().items() if not k.endswith("resample_filter")}
    mapped = {peer_name(k, resolution): k for k in ours.state_dict()}
    assert set(mapped) == set(theirs), (set(mapped) ^ set(theirs))
    ours.load_state_dict({ours_name: theirs[name] for name, ours_name in mapped.items()})


def double_peer(peer: torch.nn.Module) -> torch.nn.Module:
    """The peer in float64, but for its FIR filters: its resampling asserts they are float32."""
    peer = peer.double()
    for module in peer.modules():
        if isinstance(getattr(module, "resample_filter", None), torch.Tensor):
            module.resample_filter = module.resample_filter.float()
    return peer


def gradients(module, out):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(out.dtype)
    out.backward(upstream)
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("channels", [1, 3])
def test_generator_matches_stylegan2_ada(channels):
    networks, _, _ = peer_modules()
    torch.manual_seed(0)
    peer = networks.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=channels,
                              mapping_kwargs={"num_layers": 2},
                              synthesis_kwargs={"channel_base": 256, "channel_max": 64, "conv_clamp": 256,
                                                "num_fp16_res": 0})
    ours = Generator(z_dim=32, w_dim=32, img_channels=channels, mapping_layers=2, **SMALL)
    load_peer_weights(ours, peer, 16)
    peer.mapping.w_avg.normal_()  # a non-zero w_avg and noise strengths: those paths are compared too
    ours.mapping.w_avg.copy_(peer.mapping.w_avg)
    for module in (ours, peer):
        for name, p in module.named_parameters():
            if name.endswith("noise_strength"):
                p.data.fill_(0.3)
    z = torch.randn(4, 32)
    # The peer's mapping network runs in float32 only (it casts z).
    for psi, cutoff in ((1.0, None), (0.7, None), (0.5, 3)):
        torch.testing.assert_close(ours.mapping(z, psi, cutoff, update_w_avg=False),
                                   peer.mapping(z, None, psi, cutoff, skip_w_avg_update=True))
    ws = peer.mapping(z, None, 1.0, skip_w_avg_update=True).detach().double()
    ours, peer = ours.double(), double_peer(peer)
    mine = ours.synthesis(ws, noise_mode="const")
    theirs = peer.synthesis(ws, noise_mode="const")
    assert mine.shape == (4, channels, 16, 16)
    # The peer sums its images in float32 (whatever its dtype): float32 tolerances here.
    torch.testing.assert_close(mine.float(), theirs, rtol=1e-4, atol=1e-5)
    grads_ours, grads_peer = gradients(ours.synthesis, mine), gradients(peer.synthesis, theirs)
    for name, grad in grads_ours.items():
        torch.testing.assert_close(grad, grads_peer[peer_name("synthesis." + name, 16)[len("synthesis."):]],
                                   rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_matches_stylegan2_ada(channels):
    networks, _, _ = peer_modules()
    torch.manual_seed(0)
    peer = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=channels, channel_base=256,
                                  channel_max=64, conv_clamp=256, num_fp16_res=0)
    ours = Discriminator(img_channels=channels, **SMALL)
    load_peer_weights(ours, peer, 16)
    img = torch.randn(8, channels, 16, 16)
    mine, theirs = ours(img), peer(img, None)  # float32: the peer's blocks cast to it
    assert mine.shape == (8, 1)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    grads_ours, grads_peer = gradients(ours, mine), gradients(peer, theirs)
    for name, grad in grads_ours.items():
        torch.testing.assert_close(grad, grads_peer[peer_name(name, 16)], rtol=1e-4, atol=1e-5, msg=name)


def test_features_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    d = Discriminator(img_channels=1, **SMALL)
    img = torch.randn(4, 1, 16, 16)
    together = d.features(img)
    alone = torch.cat([d.features(img[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    assert together.shape == (4, 64)
    # with groups of 4 (training) the first image's features do depend on the others
    assert not torch.allclose(d.features(img, 4)[0], d.features(torch.cat([img[:1], -img[1:]]), 4)[0])


def test_minibatch_std_is_the_group_std():
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    y = MinibatchStd(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 3, 3)
    groups = x.reshape(4, 2, 2, 3, 3, 3)  # [G, N/G, F, C/F, H, W]
    expected = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [N/G, F]
    torch.testing.assert_close(y[1, 6:, 0, 0], expected[1])
    torch.testing.assert_close(y[5, 6:, 2, 1], expected[1])  # image 5 is in the group of image 1
    with pytest.raises(ValueError, match="multiple of the minibatch-std group size"):
        MinibatchStd(4)(torch.randn(6, 2, 2, 2))


def test_resampling_matches_stylegan2_ada():
    _, _, upfirdn2d = peer_modules()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(upsample2d(x), upfirdn2d.upsample2d(x, f, impl="ref"))
    torch.testing.assert_close(downsample2d(x), upfirdn2d.downsample2d(x, f, impl="ref"))


def test_shapes_and_noise_modes():
    torch.manual_seed(0)
    g = Generator(z_dim=16, w_dim=16, img_channels=1, mapping_layers=2, **SMALL)
    z = torch.randn(2, 16)
    assert g.num_ws == 6  # 1 + 2 + 2 convolutions, and the last ToRGB
    a, b = g(z, noise_mode="const"), g(z, noise_mode="const")
    torch.testing.assert_close(a, b)
    for p in g.parameters():
        if p.dim() == 0:
            p.data.fill_(1.0)  # noise strengths
    assert not torch.allclose(g(z), g(z))
    with pytest.raises(ValueError, match="noise_mode"):
        g(z, noise_mode="fixed")
    with pytest.raises(ValueError, match="power of 2"):
        Generator(img_resolution=48)
