"""seam_ratio: 1 for an image without seams, well above 1 for tiles pasted with offsets."""

import pytest
import torch

from medgan_fast.data.tiles import tile_edges
from medgan_fast.metrics.seams import seam_ratio


def test_a_smooth_image_scores_one_and_offset_tiles_score_higher():
    torch.manual_seed(0)
    image = torch.rand(3, 200, 300) * 0.1
    rows, columns = tile_edges(200, 64, 0), tile_edges(300, 64, 0)
    assert rows == [63, 127, 135, 191] and columns[:2] == [63, 127]
    assert seam_ratio(image, rows, columns) == pytest.approx(1.0, abs=0.1)
    pasted = image.clone()
    pasted[:, :, 64:128] += 0.5   # one tile column brighter
    assert seam_ratio(pasted, rows, columns) > 2


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"expected \(C, H, W\)"):
        seam_ratio(torch.zeros(8, 8), [1], [1])
    with pytest.raises(ValueError, match="no tile edges"):
        seam_ratio(torch.zeros(1, 8, 8), [], [])
    with pytest.raises(ValueError, match=r"expected lines in \[0, 6\]"):
        seam_ratio(torch.zeros(1, 8, 8), [7], [])
