"""StatisticsInstanceNorm: plain instance norm until told otherwise; recorded statistics
reused on a crop give the crop of the whole-image result; the state_dict is
nn.InstanceNorm2d's."""

import pytest
import torch
from torch import nn

from medgan_fast.nn import StatisticsInstanceNorm, record_statistics, reuse_statistics


@pytest.mark.parametrize("affine", [False, True])
def test_plain_mode_and_state_dict_are_instance_norms(affine):
    torch.manual_seed(0)
    ours, theirs = StatisticsInstanceNorm(5, affine=affine), nn.InstanceNorm2d(5, affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(), ours.bias.uniform_()
        theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 16, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_reused_statistics_make_a_crop_match_the_whole_image():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), StatisticsInstanceNorm(4, affine=True), nn.ReLU(), nn.Conv2d(4, 2, 1),
                          StatisticsInstanceNorm(2))
    image = torch.randn(1, 3, 32, 48) * torch.linspace(0.2, 2, 48)   # statistics differ across the image
    with torch.no_grad():
        whole = model(image)
        with record_statistics(model) as layers:
            model(image)
        assert layers == 2
        with reuse_statistics(model):
            crop = model(image[..., 8:24, 30:46])
        plain = model(image[..., 8:24, 30:46])
    torch.testing.assert_close(crop, whole[..., 8:24, 30:46], rtol=1e-4, atol=1e-5)
    assert (plain - whole[..., 8:24, 30:46]).abs().mean() > 0.05   # per-crop statistics differ
    assert all(layer.mode is None and layer.recorded is None
               for layer in model.modules() if isinstance(layer, StatisticsInstanceNorm))


def test_reuse_without_a_record_is_refused():
    layer = StatisticsInstanceNorm(2)
    with reuse_statistics(layer), pytest.raises(RuntimeError, match="before any record_statistics pass"):
        layer(torch.randn(1, 2, 4, 4))
