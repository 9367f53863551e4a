"""Connected components: label, label_batch, component_stats, crop_windows, component_masks,
crop_components. Kernel vs reference vs scikit-image (label, regionprops), OpenCV
(connectedComponentsWithStats: counts and the partition; its numbering differs) and
NumPy/SciPy oracles for the windows and patches.

Labels and counts compare exactly; centroids through the dtype tolerance table.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.measure as skmeasure
import skimage.morphology as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medgan_fast import emulation
from medgan_fast.ops.components import (
    component_masks, component_masks_reference, component_stats, component_stats_reference, crop_components,
    crop_windows, crop_windows_reference, label, label_batch, label_batch_reference, label_reference,
)
from medgan_fast.ops.morphology import disk

IMPLS = ["kernel", "reference"]


# ---------------------------------------------------------------------------------------
# Inputs

def make_mask(kind: str, shape, density: float, seed: int) -> np.ndarray:
    """Random masks of several textures: uniform noise (many tiny components, near the
    percolation threshold at ~0.5-0.6), smoothed blobs (large components with holes and
    bays), and random horizontal/vertical runs (long thin components)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random(shape) < density
    if kind == "blobs":
        field = ndi.gaussian_filter(rng.random(shape), sigma=rng.uniform(0.7, 2.5), mode="wrap")
        return field > np.quantile(field, 1 - density) if field.size else field.astype(bool)
    mask = np.zeros(shape, bool)  # "runs"
    if mask.size == 0:
        return mask
    for _ in range(int(density * 40) + 1):
        axis = int(rng.integers(0, len(shape)))
        start = [int(rng.integers(0, s)) for s in shape]
        length = int(rng.integers(1, shape[axis] + 1))
        index = list(start)
        index[axis] = slice(start[axis], start[axis] + length)
        mask[tuple(index)] = True
    return mask


def spiral(n: int) -> np.ndarray:
    """A 1-pixel-wide square spiral with 1-pixel gaps between turns: one path of about n²/2
    pixels from the corner to the centre (a worst case for label-propagation passes)."""
    m = np.zeros((n, n), bool)
    r, c, dr, dc = 0, 0, 0, 1
    m[r, c] = True

    def free(rr, cc):
        return 0 <= rr < n and 0 <= cc < n and not m[rr, cc]

    def can_step(dr, dc):
        nr, nc = r + dr, c + dc
        ahead = (nr + dr, nc + dc)
        return free(nr, nc) and not (0 <= ahead[0] < n and 0 <= ahead[1] < n and m[ahead])

    while True:
        if not can_step(dr, dc):
            dr, dc = dc, -dr  # turn right
            if not can_step(dr, dc):
                return m
        r, c = r + dr, c + dc
        m[r, c] = True


def serpentine(h: int, w: int) -> np.ndarray:
    """Boustrophedon: full even rows joined alternately at the right and the left end."""
    m = np.zeros((h, w), bool)
    m[::2] = True
    for i, row in enumerate(range(1, h, 2)):
        m[row, w - 1 if i % 2 == 0 else 0] = True
    return m


def comb(h: int, w: int, spine: str) -> np.ndarray:
    """Teeth every other column (row) joined only by a spine at the bottom (right): every
    tooth starts a new provisional label that merges late in raster order."""
    m = np.zeros((h, w), bool)
    if spine == "bottom":
        m[:, ::2] = True
        m[-1] = True
    else:
        m[::2] = True
        m[:, -1] = True
    return m


def staircase(n: int, anti: bool) -> np.ndarray:
    """A diagonal of single pixels: n components with connectivity 1, one with 2."""
    m = np.eye(n, dtype=bool)
    return m[:, ::-1].copy() if anti else m


def sk_label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    labels, count = skmeasure.label(mask, connectivity=connectivity, return_num=True, background=0)
    return labels, int(count)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def run_label(mask: torch.Tensor, connectivity, impl: str):
    if impl == "reference":
        return label_reference(mask, connectivity)
    return label(mask, connectivity, impl=impl)


def check_label(mask_np: np.ndarray, connectivity: int, device, impl: str, *, with_cv2: bool = True):
    """label(mask) equals skimage.measure.label exactly (ids and count) and, in 2-D, has the
    same partition and count as cv2.connectedComponentsWithStats."""
    mask = torch.from_numpy(np.ascontiguousarray(mask_np)).to(device)
    labels, count = run_label(mask, connectivity, impl)
    assert isinstance(count, int)
    assert labels.dtype == torch.int32 and labels.shape == mask.shape and labels.device == mask.device
    expected, expected_count = sk_label(mask_np.astype(bool), connectivity)
    assert count == expected_count, f"count {count} != skimage {expected_count}"
    np.testing.assert_array_equal(as_numpy(labels), expected.astype(np.int32))
    if with_cv2 and mask_np.ndim == 2 and mask_np.size:
        check_cv2_partition(as_numpy(labels), count, mask_np, connectivity)
    return labels, count


def check_cv2_partition(ours: np.ndarray, count: int, mask_np: np.ndarray, connectivity: int):
    n, theirs, _, _ = cv2.connectedComponentsWithStats(mask_np.astype(np.uint8), connectivity=4 * connectivity,
                                                       ltype=cv2.CV_32S)
    assert count == n - 1, f"count {count} != cv2 {n - 1}"
    fg = ours > 0
    np.testing.assert_array_equal(fg, theirs > 0)
    if count:
        pairs = np.unique(np.stack([ours[fg], theirs[fg]]), axis=1)
        # A bijection between our ids and cv2's: same partition, different numbering.
        assert pairs.shape[1] == count
        assert len(np.unique(pairs[0])) == count and len(np.unique(pairs[1])) == count


# ---------------------------------------------------------------------------------------
# label: random masks (hypothesis) against skimage and cv2

MASK_KINDS = ["uniform", "blobs", "runs"]


@settings(max_examples=60)
@given(kind=st.sampled_from(MASK_KINDS), h=st.integers(1, 64), w=st.integers(1, 140),
       density=st.sampled_from([0.05, 0.3, 0.5, 0.6, 0.8, 0.97]), connectivity=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_label_2d_random_matches_skimage_and_cv2(device, kind, h, w, density, connectivity, seed):
    mask_np = make_mask(kind, (h, w), density, seed)
    labels, count = check_label(mask_np, connectivity, device, "kernel")
    reference, reference_count = check_label(mask_np, connectivity, device, "reference", with_cv2=False)
    assert count == reference_count and torch.equal(labels, reference)


@settings(max_examples=40)
@given(kind=st.sampled_from(MASK_KINDS), shape=st.tuples(st.integers(1, 10), st.integers(1, 16), st.integers(1, 40)),
       density=st.sampled_from([0.1, 0.3, 0.5, 0.8]), connectivity=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**32 - 1))
def test_label_3d_random_matches_skimage(device, kind, shape, density, connectivity, seed):
    mask_np = make_mask(kind, shape, density, seed)
    labels, count = check_label(mask_np, connectivity, device, "kernel")
    reference, reference_count = check_label(mask_np, connectivity, device, "reference")
    assert count == reference_count and torch.equal(labels, reference)


@pytest.mark.parametrize("impl", IMPLS)
def test_label_default_connectivity_is_full(device, impl):
    for mask_np in [staircase(9, anti=False), staircase(9, anti=True), np.eye(4, dtype=bool)[None].repeat(3, 0)]:
        mask = torch.from_numpy(np.ascontiguousarray(mask_np)).to(device)
        labels, count = run_label(mask, None, impl)
        expected, expected_count = sk_label(mask_np, mask_np.ndim)
        assert count == expected_count
        np.testing.assert_array_equal(as_numpy(labels), expected)


def test_label_docstring_example(device):
    labels, count = label(torch.tensor([[1, 0, 1], [0, 0, 1]], device=device), impl="kernel")
    assert count == 2 and labels.tolist() == [[1, 0, 2], [0, 0, 2]]


# ---------------------------------------------------------------------------------------
# label: edge cases

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (0, 3, 3), (3, 0, 2), (2, 2, 0)])
def test_label_empty(device, impl, shape):
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    labels, count = run_label(mask, 1, impl)
    assert count == 0 and labels.shape == shape and labels.dtype == torch.int32 and labels.device == mask.device


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 64), (3, 130), (1, 1, 1), (4, 5, 70)])
def test_label_all_false_all_true(device, impl, shape):
    for connectivity in range(1, len(shape) + 1):
        labels, count = run_label(torch.zeros(shape, dtype=torch.bool, device=device), connectivity, impl)
        assert count == 0 and not labels.any()
        labels, count = run_label(torch.ones(shape, dtype=torch.bool, device=device), connectivity, impl)
        assert count == 1 and (labels == 1).all() and labels.dtype == torch.int32


@pytest.mark.parametrize("impl", IMPLS)
def test_label_one_pixel(device, impl):
    for shape in [(1, 1), (1, 1, 1), (9, 70), (3, 4, 5)]:
        for position in [(0,) * len(shape), tuple(s - 1 for s in shape), tuple(s // 2 for s in shape)]:
            mask = torch.zeros(shape, dtype=torch.bool, device=device)
            mask[position] = True
            labels, count = run_label(mask, 1, impl)
            assert count == 1 and labels[position] == 1 and int(labels.sum()) == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (1, 63), (1, 64), (1, 65), (1, 257), (2, 1), (257, 1), (33, 17)])
def test_label_lines_and_odd_sizes(device, rng, impl, shape):
    for density in [0.3, 0.6]:
        mask_np = rng.random(shape) < density
        for connectivity in [1, 2]:
            check_label(mask_np, connectivity, device, impl)
    alternating = np.zeros(shape, bool)
    alternating.flat[::2] = True
    check_label(alternating, 1, device, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_label_non_contiguous(device, rng, impl):
    base_np = rng.random((3, 50, 61)) < 0.55
    base = torch.from_numpy(base_np).to(device)
    views = {
        "transposed": base[0].t(),
        "strided": base[1, ::2, ::3],
        "permuted volume": base.permute(2, 1, 0),
        "expanded": base[2, :1].expand(7, 61),
        "sliced volume": base[:, 3:40, 5:60],
    }
    for name, view in views.items():
        before = view.clone()
        for connectivity in range(1, view.dim() + 1):
            labels, count = run_label(view, connectivity, impl)
            expected, expected_count = sk_label(np.ascontiguousarray(as_numpy(view)), connectivity)
            assert count == expected_count, name
            np.testing.assert_array_equal(as_numpy(labels), expected, err_msg=name)
        assert torch.equal(view, before), f"{name}: input modified"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64], ids=str)
def test_label_non_bool_masks(device, rng, impl, dtype):
    """Nonzero is foreground, whatever the dtype (negative values and fractions too)."""
    values = rng.choice(np.array([0, 0, 0, 1, 2, 255]), size=(31, 45)).astype(np.float64)
    if dtype.is_floating_point:
        values[values == 2] = 0.25
    if dtype in (torch.int32, torch.int64, torch.float32, torch.float64):
        values[values == 255] = -3
    mask = torch.from_numpy(values).to(dtype).to(device)
    labels, count = run_label(mask, 1, impl)
    expected, expected_count = sk_label(values != 0, 1)
    assert count == expected_count
    np.testing.assert_array_equal(as_numpy(labels), expected)


# ---------------------------------------------------------------------------------------
# label: many components and long propagation paths

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("connectivity", [1, 2])
def test_label_more_than_65535_components_grid(device, impl, connectivity):
    """90,000 isolated pixels at even (row, col): ids exceed 16 bits; raster order means the
    pixel (2i, 2j) carries 300 i + j + 1."""
    mask_np = np.zeros((600, 600), bool)
    mask_np[::2, ::2] = True
    labels, count = check_label(mask_np, connectivity, device, impl)
    assert count == 90_000
    expected = np.arange(1, 90_001, dtype=np.int32).reshape(300, 300)
    np.testing.assert_array_equal(as_numpy(labels)[::2, ::2], expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_label_checkerboard(device, impl):
    """Checkerboard: 180,000 components with connectivity 1, exactly one with connectivity 2."""
    rows, cols = np.indices((600, 600))
    mask_np = (rows + cols) % 2 == 0
    _, count = check_label(mask_np, 1, device, impl)
    assert count == 180_000
    labels, count = check_label(mask_np, 2, device, impl)
    assert count == 1 and as_numpy(labels)[mask_np].min() == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_label_more_than_65535_components_3d(device, impl):
    mask_np = np.zeros((60, 100, 100), bool)
    mask_np[::2, ::2, ::2] = True  # 75,000 isolated voxels
    for connectivity in [1, 3]:
        labels, count = check_label(mask_np, connectivity, device, impl)
        assert count == 75_000


@pytest.mark.parametrize("impl", IMPLS)
def test_label_spiral_is_one_component(device, impl):
    mask_np = spiral(512)
    assert mask_np.sum() > 512 * 512 // 2 - 1024  # a path of ~131k pixels
    for connectivity in [1, 2]:
        labels, count = check_label(mask_np, connectivity, device, impl)
        assert count == 1
        np.testing.assert_array_equal(as_numpy(labels), mask_np.astype(np.int32))
        # the gaps between the turns form a second spiral
        check_label(~mask_np, connectivity, device, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_label_serpentine_and_combs(device, impl):
    for name, mask_np in {
        "serpentine": serpentine(511, 300),
        "serpentine-transposed": serpentine(300, 511).T,
        "comb-bottom": comb(300, 401, "bottom"),
        "comb-right": comb(401, 300, "right"),
        "comb-top": comb(300, 401, "bottom")[::-1],
        "comb-left": comb(401, 300, "right")[:, ::-1],
    }.items():
        for connectivity in [1, 2]:
            labels, count = check_label(mask_np, connectivity, device, impl)
            assert count == 1, name
            np.testing.assert_array_equal(as_numpy(labels), mask_np.astype(np.int32), err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_label_staircases_and_rings(device, impl):
    for anti in [False, True]:
        mask_np = staircase(700, anti)
        _, count = check_label(mask_np, 1, device, impl)
        assert count == 700
        _, count = check_label(mask_np, 2, device, impl)
        assert count == 1
    rings = np.zeros((101, 101), bool)
    for k in range(0, 51, 2):  # concentric square rings, 1-pixel gaps: numbered outside in
        rings[k:101 - k, k:101 - k] = True
        rings[k + 1:100 - k, k + 1:100 - k] = False
    labels, count = check_label(rings, 2, device, impl)
    assert count == 26
    np.testing.assert_array_equal(as_numpy(labels).diagonal()[:51:2], np.arange(1, 27))


@pytest.mark.parametrize("impl", IMPLS)
def test_label_3d_serpentine(device, impl):
    """Even slices hold a serpentine, alternately rotated by 180 degrees so each starts where
    the previous one ends; odd slices hold only the one connecting voxel: a single 3-D path."""
    d, h, w = 11, 41, 50  # h odd: the serpentine runs from (0, 0) to (h - 1, w - 1)
    vol = np.zeros((d, h, w), bool)
    flat = serpentine(h, w)
    assert flat[0, 0] and flat[-1, -1]
    for z in range(0, d, 2):
        vol[z] = flat if z % 4 == 0 else flat[::-1, ::-1]
    separate = vol.copy()
    for z in range(1, d, 2):
        vol[z][(h - 1, w - 1) if z % 4 == 1 else (0, 0)] = True
    for connectivity in [1, 2, 3]:
        labels, count = check_label(vol, connectivity, device, impl)
        assert count == 1
        np.testing.assert_array_equal(as_numpy(labels), vol.astype(np.int32))
        _, count = check_label(separate, connectivity, device, impl)
        assert count == (d + 1) // 2


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("density", [0.2, 0.55, 0.9])
def test_label_larger_random_images(device, kind, density):
    """Larger images than hypothesis draws: many row blocks, long runs, deep merge chains."""
    mask_np = make_mask(kind, (257, 300), density, 17)
    for connectivity in [1, 2]:
        check_label(mask_np, connectivity, device, "kernel")
    vol = make_mask(kind, (23, 31, 45), density, 18)
    for connectivity in [1, 2, 3]:
        check_label(vol, connectivity, device, "kernel", with_cv2=False)


@pytest.mark.parametrize("num_threads", [1, 3, 16], indirect=True)
def test_label_independent_of_thread_count(device, assert_close, num_threads):
    """The CPU kernel splits rows into 4 x threads blocks and unites across block borders
    afterwards: with 16 threads a small image or a volume has blocks of one or two rows,
    shorter than a 3-D neighbour's reach (one plane back)."""
    for shape, kind, density in [((40, 70), "uniform", 0.6), ((9, 5, 30), "uniform", 0.5), ((6, 3, 8), "blobs", 0.5),
                                 ((64, 1), "runs", 0.5)]:
        mask_np = make_mask(kind, shape, density, sum(shape))
        for connectivity in range(1, len(shape) + 1):
            labels, count = check_label(mask_np, connectivity, device, "kernel", with_cv2=False)
            stats = component_stats(labels, count, impl="kernel")
            for got, want in zip(stats, component_stats_reference(labels, count)):
                assert_close(got, want)
    masks_np = make_mask("uniform", (5, 7, 33), 0.55, 3)
    labels, counts = label_batch(torch.from_numpy(masks_np).to(device), 2, impl="kernel")
    for i in range(5):
        expected, expected_count = sk_label(masks_np[i], 2)
        assert int(counts[i]) == expected_count
        np.testing.assert_array_equal(as_numpy(labels[i]), expected)
    spiral_np = spiral(64)
    check_label(spiral_np, 1, device, "kernel")
    check_label(comb(64, 65, "bottom"), 1, device, "kernel")


# ---------------------------------------------------------------------------------------
# label_batch

@settings(max_examples=40)
@given(kind=st.sampled_from(MASK_KINDS), n=st.integers(1, 5), h=st.integers(1, 40), w=st.integers(1, 90),
       density=st.sampled_from([0.1, 0.5, 0.6, 0.9]), connectivity=st.sampled_from([1, 2, None]),
       seed=st.integers(0, 2**32 - 1))
def test_label_batch_equals_per_image(device, kind, n, h, w, density, connectivity, seed):
    masks_np = make_mask(kind, (n, h, w), density, seed)
    masks = torch.from_numpy(masks_np).to(device)
    labels, counts = label_batch(masks, connectivity, impl="kernel")
    assert labels.dtype == torch.int32 and labels.shape == masks.shape and labels.device == masks.device
    assert counts.dtype == torch.int64 and counts.shape == (n,) and counts.device == masks.device
    for i in range(n):
        single, count = label(masks[i], connectivity, impl="kernel")
        assert int(counts[i]) == count
        assert torch.equal(labels[i], single), f"image {i}"
        expected, expected_count = sk_label(masks_np[i], connectivity or 2)
        assert count == expected_count
        np.testing.assert_array_equal(as_numpy(single), expected)
    reference, reference_counts = label_batch_reference(masks, connectivity)
    assert torch.equal(labels, reference) and torch.equal(counts, reference_counts)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_label_batch_edges(device, rng, impl):
    fn = label_batch_reference if impl == "reference" else lambda m, c=None: label_batch(m, c, impl=impl)
    # batch of one
    mask = torch.from_numpy(rng.random((1, 33, 70)) < 0.5).to(device)
    labels, counts = fn(mask, 1)
    single, count = label(mask[0], 1, impl="reference")
    assert counts.tolist() == [count] and torch.equal(labels[0], single)
    # empty batch and empty images
    for shape in [(0, 5, 5), (3, 0, 4), (2, 4, 0)]:
        labels, counts = fn(torch.zeros(shape, dtype=torch.bool, device=device), 2)
        assert labels.shape == shape and labels.dtype == torch.int32
        assert counts.dtype == torch.int64 and counts.tolist() == [0] * shape[0]
    # all false, all true, a grid of > 65,535 components next to a spiral
    masks_np = np.zeros((4, 512, 512), bool)
    masks_np[1] = True
    masks_np[2, ::2, ::2] = True
    masks_np[3] = spiral(512)
    labels, counts = fn(torch.from_numpy(masks_np).to(device), 1)
    assert counts.tolist() == [0, 1, 256 * 256, 1]
    for i in range(4):
        np.testing.assert_array_equal(as_numpy(labels[i]), sk_label(masks_np[i], 1)[0])
    # non-contiguous and non-bool
    base = torch.from_numpy(rng.integers(0, 3, (40, 30, 3))).to(device)
    view = base.permute(2, 0, 1)
    labels, counts = fn(view, 2)
    for i in range(3):
        expected, expected_count = sk_label(as_numpy(view[i]) != 0, 2)
        assert int(counts[i]) == expected_count
        np.testing.assert_array_equal(as_numpy(labels[i]), expected)


# ---------------------------------------------------------------------------------------
# component_stats against regionprops

def check_stats_against_regionprops(stats, labels_np: np.ndarray, count: int, assert_close):
    ndim = labels_np.ndim
    assert stats.area.dtype == torch.int64 and stats.area.shape == (count,)
    assert stats.bbox.dtype == torch.int64 and stats.bbox.shape == (count, 2 * ndim)
    assert stats.centroid.dtype == torch.float64 and stats.centroid.shape == (count, ndim)
    area, bbox, centroid = as_numpy(stats.area), as_numpy(stats.bbox), as_numpy(stats.centroid)
    present = set()
    for region in skmeasure.regionprops(labels_np):
        k = region.label - 1
        present.add(k)
        assert area[k] == region.area, f"label {region.label}"
        np.testing.assert_array_equal(bbox[k], np.asarray(region.bbox), err_msg=f"label {region.label}")
        assert_close(torch.from_numpy(centroid[k]), torch.tensor(region.centroid, dtype=torch.float64),
                     msg=f"label {region.label}")
    for k in sorted(set(range(count)) - present):  # documented empty rows
        assert area[k] == 0
        np.testing.assert_array_equal(bbox[k], list(labels_np.shape) + [0] * ndim)
        assert np.isnan(centroid[k]).all()


def run_stats(labels, count, impl):
    return component_stats_reference(labels, count) if impl == "reference" else component_stats(labels, count,
                                                                                                  impl=impl)


@settings(max_examples=40)
@given(kind=st.sampled_from(MASK_KINDS), shape=st.one_of(st.tuples(st.integers(1, 50), st.integers(1, 90)),
                                                         st.tuples(*[st.integers(1, 12)] * 3)),
       density=st.sampled_from([0.1, 0.5, 0.9]), seed=st.integers(0, 2**32 - 1))
def test_component_stats_matches_regionprops(device, assert_close, kind, shape, density, seed):
    mask_np = make_mask(kind, shape, density, seed)
    labels, count = label(torch.from_numpy(mask_np).to(device), impl="reference")
    stats = component_stats(labels, count, impl="kernel")
    check_stats_against_regionprops(stats, as_numpy(labels), count, assert_close)
    reference = component_stats_reference(labels, count)
    for got, want in zip(stats, reference):
        assert_close(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_component_stats_arbitrary_labels_and_unused_ids(device, assert_close, rng, impl):
    """Labels need not be connected or consecutive: ids 2, 5, 6 unused and count beyond the max."""
    for shape in [(37, 53), (6, 11, 13)]:
        labels_np = rng.choice(np.array([0, 1, 3, 4, 7], np.int32), size=shape)
        labels_np.flat[-1] = 7
        stats = run_stats(torch.from_numpy(labels_np).to(device), 9, impl)
        check_stats_against_regionprops(stats, labels_np, 9, assert_close)
        for k in [1, 4, 5, 7, 8]:  # ids 2, 5, 6, 8, 9
            assert stats.area[k] == 0 and torch.isnan(stats.centroid[k]).all()
            assert stats.bbox[k].tolist() == list(shape) + [0] * len(shape)


@pytest.mark.parametrize("impl", IMPLS)
def test_component_stats_empty(device, impl):
    for shape in [(0, 5), (4, 0), (0, 2, 3)]:
        labels = torch.zeros(shape, dtype=torch.int32, device=device)
        ndim = len(shape)
        stats = run_stats(labels, 0, impl)
        assert stats.area.shape == (0,) and stats.bbox.shape == (0, 2 * ndim) and stats.centroid.shape == (0, ndim)
        stats = run_stats(labels, 2, impl)
        assert stats.area.tolist() == [0, 0]
        assert stats.bbox.tolist() == [list(shape) + [0] * ndim] * 2
        assert torch.isnan(stats.centroid).all()
    # all background, with and without a count
    labels = torch.zeros(5, 7, dtype=torch.int32, device=device)
    assert run_stats(labels, 0, impl).area.shape == (0,)
    stats = run_stats(labels, 3, impl)
    assert stats.area.tolist() == [0, 0, 0] and stats.bbox.tolist() == [[5, 7, 0, 0]] * 3


@pytest.mark.parametrize("impl", IMPLS)
def test_component_stats_full_and_one_pixel(device, impl):
    stats = run_stats(torch.ones(9, 70, dtype=torch.int32, device=device), 1, impl)
    assert stats.area.tolist() == [630] and stats.bbox.tolist() == [[0, 0, 9, 70]]
    assert stats.centroid.tolist() == [[4.0, 34.5]]
    labels = torch.zeros(4, 5, 6, dtype=torch.int32, device=device)
    labels[3, 0, 5] = 1
    stats = run_stats(labels, 1, impl)
    assert stats.area.tolist() == [1] and stats.bbox.tolist() == [[3, 0, 5, 4, 1, 6]]
    assert stats.centroid.tolist() == [[3.0, 0.0, 5.0]]


@pytest.mark.parametrize("impl", IMPLS)
def test_component_stats_many_components(device, impl):
    """90,000 one-pixel components: area 1, bbox the pixel, centroid its coordinates."""
    mask = torch.zeros(600, 600, dtype=torch.bool)
    mask[::2, ::2] = True
    labels, count = label(mask, impl="reference")
    stats = run_stats(labels.to(device), count, impl)
    assert count == 90_000 and (stats.area == 1).all()
    rows, cols = np.divmod(np.arange(90_000), 300)
    expected_lo = np.stack([2 * rows, 2 * cols], 1)
    np.testing.assert_array_equal(as_numpy(stats.bbox), np.concatenate([expected_lo, expected_lo + 1], 1))
    np.testing.assert_array_equal(as_numpy(stats.centroid), expected_lo.astype(np.float64))


@pytest.mark.parametrize("impl", IMPLS)
def test_component_stats_non_contiguous(device, assert_close, rng, impl):
    labels_np = rng.integers(0, 6, (30, 47)).astype(np.int32)
    labels = torch.from_numpy(labels_np).to(device).t()
    stats = run_stats(labels, 5, impl)
    check_stats_against_regionprops(stats, np.ascontiguousarray(labels_np.T), 5, assert_close)


def test_component_stats_against_cv2(device, assert_close, rng):
    mask_np = make_mask("blobs", (120, 170), 0.4, 3)
    labels, count = label(torch.from_numpy(mask_np).to(device), 2, impl="kernel")
    stats = component_stats(labels, count, impl="kernel")
    n, cv_labels, cv_stats, cv_centroids = cv2.connectedComponentsWithStats(mask_np.astype(np.uint8), connectivity=8)
    assert n - 1 == count
    ours = as_numpy(labels)
    for k in range(1, count + 1):
        j = int(np.bincount(cv_labels[ours == k]).argmax())  # cv2's id for our component k
        left, top, width, height, area = cv_stats[j]
        assert stats.area[k - 1] == area
        assert stats.bbox[k - 1].tolist() == [top, left, top + height, left + width]
        assert_close(stats.centroid[k - 1].flip(0).cpu(), torch.from_numpy(cv_centroids[j]))


# ---------------------------------------------------------------------------------------
# crop_windows / component_masks against NumPy

def numpy_windows(source: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Windows through a zero-padded copy (an oracle independent of the reference's slicing)."""
    c, h, w = source.shape
    pad = size + int(np.abs(corners).max(initial=0))
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), source.dtype)
    padded[:, pad:pad + h, pad:pad + w] = source
    out = np.zeros((len(corners), c, size, size), source.dtype)
    for k, (r, q) in enumerate(corners):
        out[k] = padded[:, pad + r:pad + r + size, pad + q:pad + q + size]
    return out


def random_corners(rng, k, h, w, size):
    return np.stack([rng.integers(-size - 3, h + 3, k), rng.integers(-size - 3, w + 3, k)], 1).astype(np.int64)


WINDOW_DTYPES = [torch.bool, torch.uint8, torch.uint16, torch.int32, torch.float32, torch.float64]


@settings(max_examples=40)
@given(dtype=st.sampled_from(WINDOW_DTYPES), c=st.integers(1, 4), h=st.integers(1, 40), w=st.integers(1, 40),
       k=st.integers(0, 12), size=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_crop_windows_matches_numpy(device, assert_close, dtype, c, h, w, k, size, seed):
    rng = np.random.default_rng(seed)
    source_np = (rng.random((c, h, w)) * 60000).astype(torch.empty(0, dtype=dtype).numpy().dtype)
    corners_np = random_corners(rng, k, h, w, size)
    source, corners = torch.from_numpy(source_np).to(device), torch.from_numpy(corners_np).to(device)
    out = crop_windows(source, corners, size, impl="kernel")
    assert out.dtype == dtype and out.shape == (k, c, size, size) and out.device == source.device
    assert_close(out, torch.from_numpy(numpy_windows(source_np, corners_np, size)))
    assert_close(out, crop_windows_reference(source, corners, size))


@settings(max_examples=40)
@given(h=st.integers(1, 40), w=st.integers(1, 40), k=st.integers(0, 12), size=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1))
def test_component_masks_matches_numpy(device, h, w, k, size, seed):
    rng = np.random.default_rng(seed)
    labels_np = rng.integers(0, 5, (h, w)).astype(np.int32)
    corners_np = random_corners(rng, k, h, w, size)
    ids_np = rng.integers(0, 7, k).astype(np.int32)  # 0 (background) and absent ids included
    labels, corners, ids = (torch.from_numpy(a).to(device) for a in (labels_np, corners_np, ids_np))
    out = component_masks(labels, corners, ids, size, impl="kernel")
    assert out.dtype == torch.bool and out.shape == (k, size, size) and out.device == labels.device
    windows = numpy_windows(labels_np[None], corners_np, size)[:, 0]
    expected = (windows == ids_np[:, None, None]) & (ids_np[:, None, None] != 0)
    np.testing.assert_array_equal(as_numpy(out), expected)
    np.testing.assert_array_equal(as_numpy(out), as_numpy(component_masks_reference(labels, corners, ids, size)))


@pytest.mark.parametrize("impl", IMPLS)
def test_windows_edges(device, impl):
    source = torch.arange(2 * 5 * 7, dtype=torch.float32, device=device).reshape(2, 5, 7)
    corners = torch.tensor([[-100, -100], [100, 0], [-2, -3], [0, 0], [3, 5]], device=device)
    fn_windows = crop_windows_reference if impl == "reference" else lambda s, c, n: crop_windows(s, c, n, impl=impl)
    out = fn_windows(source, corners, 4)
    assert (out[:2] == 0).all()  # entirely outside: zeros
    assert out[2, :, 2:, 3:].tolist() == source[:, :2, :1].tolist() and (out[2, :, :2] == 0).all()
    assert torch.equal(out[3], source[:, :4, :4])
    assert torch.equal(out[4, :, :2, :2], source[:, 3:, 5:]) and (out[4, :, 2:] == 0).all()
    # window larger than the image, K = 0, empty image, non-contiguous source
    big = fn_windows(source, torch.tensor([[-1, -1]], device=device), 9)
    assert torch.equal(big[0, :, 1:6, 1:8], source) and int((big != 0).sum()) == int((source != 0).sum())
    assert fn_windows(source, torch.zeros(0, 2, dtype=torch.int64, device=device), 3).shape == (0, 2, 3, 3)
    empty = fn_windows(torch.zeros(3, 0, 4, device=device), corners, 2)
    assert empty.shape == (5, 3, 2, 2) and not empty.any()
    view = source.permute(0, 2, 1)
    assert torch.equal(fn_windows(view, corners, 4), fn_windows(view.contiguous(), corners, 4))
    # component_masks with absent ids and background id 0
    labels = torch.tensor([[0, 1, 1], [2, 0, 1]], dtype=torch.int32, device=device)
    fn_masks = (component_masks_reference if impl == "reference"
                else lambda lb, c, i, n: component_masks(lb, c, i, n, impl=impl))
    masks = fn_masks(labels, torch.tensor([[0, 0], [0, 0], [0, 0], [-1, 1]], device=device),
                     torch.tensor([1, 0, 9, 1], dtype=torch.int32, device=device), 3)
    assert masks[0].tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert not masks[1].any() and not masks[2].any()
    assert masks[3].tolist() == [[False, False, False], [True, True, False], [False, True, False]]


# ---------------------------------------------------------------------------------------
# crop_components against a NumPy/SciPy/skimage oracle

def crop_oracle(image_np, labels_np, count, size, mode, dilation, min_area):
    """Independent of the op: regionprops bboxes, whole-image scipy dilation, padded crops."""
    h, w = labels_np.shape
    rows = {r.label: r for r in skmeasure.regionprops(labels_np)}
    out = {"patches": [], "masks": [], "ids": [], "bbox": [], "area": [], "corners": []}
    for k in range(1, count + 1):
        if k not in rows or rows[k].area < max(min_area, 1):
            continue
        r0, c0, r1, c1 = rows[k].bbox
        corner = np.array([[(r0 + r1) // 2 - size // 2, (c0 + c1) // 2 - size // 2]], np.int64)
        own = labels_np == k
        mask_patch = numpy_windows(own[None], corner, size)[0]
        if mode == "mask":
            patch = mask_patch
        else:
            seen = ndi.binary_dilation(own, skm.disk(dilation)) if mode == "texture" else np.ones_like(own)
            patch = numpy_windows(np.where(seen[None], image_np, 0).astype(image_np.dtype), corner, size)[0]
        out["patches"].append(patch)
        out["masks"].append(mask_patch)
        out["ids"].append(k)
        out["bbox"].append(rows[k].bbox)
        out["area"].append(rows[k].area)
        out["corners"].append(corner[0])
    return out


def check_crop(result, expected, size, channels, image_dtype):
    k = len(expected["ids"])
    assert result.ids.dtype == torch.int64 and result.ids.tolist() == expected["ids"]
    assert result.area.dtype == torch.int64 and result.area.tolist() == expected["area"]
    assert result.bbox.dtype == torch.int64 and result.bbox.shape == (k, 4)
    assert result.bbox.tolist() == [list(b) for b in expected["bbox"]]
    assert result.corners.dtype == torch.int64 and result.corners.shape == (k, 2)
    assert result.corners.tolist() == [list(c) for c in expected["corners"]]
    assert result.masks.dtype == torch.bool and result.masks.shape == (k, 1, size, size)
    assert result.patches.dtype == image_dtype and result.patches.shape == (k, channels, size, size)
    assert result.patches.is_contiguous() and result.masks.is_contiguous()
    if k:
        np.testing.assert_array_equal(as_numpy(result.masks), np.stack(expected["masks"]))
        np.testing.assert_array_equal(as_numpy(result.patches), np.stack(expected["patches"]))


@settings(max_examples=40)
@given(mode=st.sampled_from(["mask", "texture", "full"]), dtype=st.sampled_from([torch.uint8, torch.uint16,
                                                                                  torch.float32]),
       channels=st.sampled_from([None, 1, 3]), h=st.integers(1, 48), w=st.integers(1, 48), size=st.integers(1, 24),
       dilation=st.integers(0, 4), min_area=st.integers(0, 6), density=st.sampled_from([0.1, 0.4, 0.6]),
       seed=st.integers(0, 2**32 - 1))
def test_crop_components_matches_oracle(device, mode, dtype, channels, h, w, size, dilation, min_area, density,
                                        seed):
    rng = np.random.default_rng(seed)
    mask_np = make_mask("blobs" if seed % 2 else "uniform", (h, w), density, seed)
    labels_np = sk_label(mask_np, 2)[0].astype(np.int32)
    count = int(labels_np.max())
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    shape = (h, w) if channels is None else (channels, h, w)
    image_np = (rng.random(shape) * 60000 + 1).astype(np_dtype)  # no zeros: zero means "masked"
    image = torch.from_numpy(image_np).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    result = crop_components(image, labels, count, size, mode, dilation, min_area, impl="kernel")
    expected = crop_oracle(image_np if channels else image_np[None], labels_np, count, size, mode, dilation,
                           min_area)
    if mode == "mask":
        check_crop(result, expected, size, 1, torch.bool)
    else:
        check_crop(result, expected, size, channels or 1, dtype)
    reference = crop_components(image, labels, count, size, mode, dilation, min_area, impl="reference")
    for got, want in zip(result, reference):
        assert got.dtype == want.dtype and torch.equal(got.cpu(), want.cpu())


@pytest.mark.parametrize("impl", IMPLS)
def test_crop_components_geometry(device, impl):
    """The documented centring: top-left = (r0 + r1) // 2 - size // 2 per axis; zero padding."""
    labels = torch.zeros(20, 30, dtype=torch.int32, device=device)
    labels[0:3, 0:2] = 1        # corner: the patch hangs off the top-left
    labels[10:15, 12:20] = 2    # interior, even and odd extents
    labels[19, 29] = 3          # one pixel at the far corner
    image = torch.arange(1, 601, dtype=torch.float32, device=device).reshape(20, 30)
    result = crop_components(image, labels, 3, 7, "full", impl=impl)
    assert result.corners.tolist() == [[1 - 3, 1 - 3], [12 - 3, 16 - 3], [19 - 3, 29 - 3]]
    assert result.bbox.tolist() == [[0, 0, 3, 2], [10, 12, 15, 20], [19, 29, 20, 30]]
    assert result.area.tolist() == [6, 40, 1] and result.ids.tolist() == [1, 2, 3]
    p = result.patches[:, 0]
    assert (p[0, :2] == 0).all() and (p[0, :, :2] == 0).all() and torch.equal(p[0, 2:, 2:], image[:5, :5])
    assert torch.equal(p[1], image[9:16, 13:20])
    assert torch.equal(p[2, :4, :4], image[16:, 26:]) and (p[2, 4:] == 0).all() and (p[2, :, 4:] == 0).all()
    assert p[2, 3, 3] == image[19, 29]  # a one-pixel component sits at the patch centre
    assert result.masks[2, 0].nonzero().tolist() == [[3, 3]]
    # even size: the centre pixel is at size // 2
    even = crop_components(None, labels, 3, 8, "mask", impl=impl)
    assert even.corners[2].tolist() == [19 - 4, 29 - 4] and even.patches[2, 0].nonzero().tolist() == [[4, 4]]


@pytest.mark.parametrize("impl", IMPLS)
def test_crop_components_texture_hides_other_components(device, impl):
    labels = torch.zeros(15, 15, dtype=torch.int32, device=device)
    labels[7, 7] = 1
    labels[7, 9] = 2  # two pixels from component 1
    image = torch.full((2, 15, 15), 5, dtype=torch.uint16, device=device)
    result = crop_components(image, labels, 2, 5, "texture", dilation=1, impl=impl)
    seen = as_numpy(result.patches[0, 0]) != 0
    np.testing.assert_array_equal(seen, np.pad(skm.disk(1).astype(bool), 1))  # the cross, not (7, 9)
    assert result.patches.dtype == torch.uint16 and result.patches.shape == (2, 2, 5, 5)
    no_dilation = crop_components(image, labels, 2, 5, "texture", dilation=0, impl=impl)
    assert int((no_dilation.patches[0, 0].to(torch.int32) != 0).sum()) == 1  # own pixel only, not component 2


@pytest.mark.parametrize("impl", IMPLS)
def test_crop_components_min_area_and_empty(device, impl):
    labels_np = sk_label(make_mask("uniform", (40, 50), 0.5, 7), 1)[0].astype(np.int32)
    count = int(labels_np.max())
    labels = torch.from_numpy(labels_np).to(device)
    areas = np.bincount(labels_np.ravel(), minlength=count + 1)[1:]
    for min_area in [0, 1, 2, 5, 10_000]:
        result = crop_components(None, labels, count, 9, "mask", min_area=min_area, impl=impl)
        expected_ids = (np.nonzero(areas >= max(min_area, 1))[0] + 1).tolist()
        assert result.ids.tolist() == expected_ids
        assert result.area.tolist() == areas[np.asarray(expected_ids, int) - 1].tolist()
        assert result.patches.shape == (len(expected_ids), 1, 9, 9)
    # unused ids (count beyond the max) produce no patches
    result = crop_components(None, labels, count + 5, 9, "mask", impl=impl)
    assert result.ids.tolist() == list(range(1, count + 1))
    # no components at all
    for mode in ["mask", "texture", "full"]:
        empty = crop_components(torch.zeros(3, 6, 6, device=device), torch.zeros(6, 6, dtype=torch.int32,
                                device=device), 0, 4, mode, dilation=2, impl=impl)
        assert empty.patches.shape == (0, 3 if mode != "mask" else 1, 4, 4) and empty.masks.shape == (0, 1, 4, 4)
        assert empty.ids.shape == (0,) and empty.corners.shape == (0, 2) and empty.bbox.shape == (0, 4)


# ---------------------------------------------------------------------------------------
# Bad inputs: TypeError / ValueError naming the argument

MASK2 = torch.zeros(4, 4, dtype=torch.bool)
LABELS = torch.zeros(4, 4, dtype=torch.int32)
CORNERS = torch.zeros(2, 2, dtype=torch.int64)
IDS = torch.ones(2, dtype=torch.int32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: label(np.zeros((3, 3), bool)), TypeError, "mask must be a torch.Tensor"),
    (lambda: label(torch.zeros(3)), ValueError, "mask must be"),
    (lambda: label(torch.zeros(1, 1, 3, 3)), ValueError, "mask must be"),
    (lambda: label(torch.zeros(3, 3, dtype=torch.complex64)), TypeError, "mask must be bool or real"),
    (lambda: label(MASK2, 0), ValueError, "connectivity"),
    (lambda: label(MASK2, 3), ValueError, "connectivity"),
    (lambda: label(torch.zeros(2, 2, 2, dtype=torch.bool), 4), ValueError, "connectivity"),
    (lambda: label(MASK2, -1), ValueError, "connectivity"),
    (lambda: label(MASK2, True), ValueError, "connectivity"),
    (lambda: label(MASK2, 1.0), ValueError, "connectivity"),
    (lambda: label(MASK2, "full"), ValueError, "connectivity"),
    (lambda: label_reference(MASK2, 3), ValueError, "connectivity"),
    (lambda: label_batch(MASK2), ValueError, "masks must be"),
    (lambda: label_batch([[[1]]]), TypeError, "masks must be a torch.Tensor"),
    (lambda: label_batch(torch.zeros(2, 3, 3, dtype=torch.bool), 3), ValueError, "connectivity"),
    (lambda: label_batch_reference(torch.zeros(2, 3, 3), 0), ValueError, "connectivity"),
    (lambda: component_stats(LABELS.long(), 1), TypeError, "labels must be int32"),
    (lambda: component_stats(LABELS.float(), 1), TypeError, "labels must be int32"),
    (lambda: component_stats(np.zeros((3, 3), np.int32), 1), TypeError, "labels must be a torch.Tensor"),
    (lambda: component_stats(torch.zeros(5, dtype=torch.int32), 1), ValueError, "labels must be"),
    (lambda: component_stats(LABELS, -1), ValueError, "count"),
    (lambda: component_stats(LABELS, 1.5), ValueError, "count"),
    (lambda: component_stats(LABELS, True), ValueError, "count"),
    (lambda: component_stats(LABELS + 3, 2), ValueError, r"labels must lie in \[0, count=2\]"),
    (lambda: component_stats(LABELS - 1, 2), ValueError, "labels must lie in"),
    (lambda: component_stats_reference(LABELS + 3, 2), ValueError, "labels must lie in"),
    (lambda: crop_windows(torch.zeros(4, 4), CORNERS, 2), ValueError, "source must be"),
    (lambda: crop_windows(np.zeros((1, 4, 4)), CORNERS, 2), TypeError, "source must be a torch.Tensor"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), CORNERS.int(), 2), ValueError, "corners must be int64"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), torch.zeros(2, 3, dtype=torch.int64), 2), ValueError, "corners"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), torch.zeros(2, dtype=torch.int64), 2), ValueError, "corners"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), [[0, 0]], 2), TypeError, "corners must be a torch.Tensor"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), CORNERS, 0), ValueError, "size must be a positive"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), CORNERS, True), ValueError, "size"),
    (lambda: crop_windows(torch.zeros(1, 4, 4), CORNERS, 2.0), ValueError, "size"),
    (lambda: component_masks(LABELS.long(), CORNERS, IDS, 2), ValueError, "labels must be int32"),
    (lambda: component_masks(torch.zeros(1, 4, 4, dtype=torch.int32), CORNERS, IDS, 2), ValueError, "labels"),
    (lambda: component_masks(LABELS, CORNERS.float(), IDS, 2), ValueError, "corners"),
    (lambda: component_masks(LABELS, CORNERS, IDS.long(), 2), ValueError, "ids must be int32"),
    (lambda: component_masks(LABELS, CORNERS, IDS[:1], 2), ValueError, "ids"),
    (lambda: component_masks(LABELS, CORNERS, [1, 1], 2), TypeError, "ids must be a torch.Tensor"),
    (lambda: component_masks(LABELS, CORNERS, IDS, -3), ValueError, "size"),
    (lambda: crop_components(None, LABELS, 0, 8, "bogus"), ValueError, "mode must be one of"),
    (lambda: crop_components(None, LABELS, 0, 8, "texture"), ValueError, "image is required"),
    (lambda: crop_components(None, LABELS, 0, 8, "full"), ValueError, "image is required"),
    (lambda: crop_components(torch.zeros(4, 5), LABELS, 0, 8, "full"), ValueError, "image must be"),
    (lambda: crop_components(torch.zeros(1, 1, 4, 4), LABELS, 0, 8, "full"), ValueError, "image must be"),
    (lambda: crop_components(np.zeros((4, 4)), LABELS, 0, 8, "full"), TypeError, "image must be a torch.Tensor"),
    (lambda: crop_components(None, LABELS, 0, 8, dilation=-1), ValueError, "dilation"),
    (lambda: crop_components(None, LABELS, 0, 8, dilation=1.5), ValueError, "dilation"),
    (lambda: crop_components(None, LABELS, 0, 0), ValueError, "size must be a positive"),
    (lambda: crop_components(None, LABELS, 0, None), ValueError, "size"),
    (lambda: crop_components(None, torch.zeros(2, 4, 4, dtype=torch.int32), 0, 8), ValueError, "labels must be"),
    (lambda: crop_components(None, LABELS.long(), 0, 8), TypeError, "labels must be int32"),
    (lambda: crop_components(None, LABELS + 2, 1, 8), ValueError, "labels must lie in"),
    (lambda: crop_components(None, LABELS, -2, 8), ValueError, "count"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call", [
    lambda impl: label(MASK2, impl=impl),
    lambda impl: label_batch(MASK2[None], impl=impl),
    lambda impl: component_stats(LABELS, 0, impl=impl),
    lambda impl: crop_windows(torch.zeros(1, 4, 4), CORNERS, 2, impl=impl),
    lambda impl: component_masks(LABELS, CORNERS, IDS, 2, impl=impl),
    lambda impl: crop_components(None, LABELS, 0, 2, impl=impl),
])
@pytest.mark.parametrize("impl", ["bogus", "cpu", "", None])
def test_bad_impl(call, impl):
    with pytest.raises(ValueError, match="impl"):
        call(impl)


# ---------------------------------------------------------------------------------------
# impl: reference == kernel, auto uses the kernel without a warning

def test_reference_equals_kernel(device, rng):
    mask = torch.from_numpy(make_mask("blobs", (70, 90), 0.5, 11)).to(device)
    image = torch.from_numpy(rng.integers(1, 65535, (2, 70, 90)).astype(np.uint16)).to(device)
    for connectivity in [1, 2]:
        outputs = {}
        for impl in ["kernel", "reference", "auto"]:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # kernels are built: auto must not fall back
                labels, count = label(mask, connectivity, impl=impl)
                batch = label_batch(torch.stack([mask, ~mask]), connectivity, impl=impl)
                stats = component_stats(labels, count, impl=impl)
                corners = torch.stack([stats.bbox[:, 0] - 2, stats.bbox[:, 1] - 3], 1)
                windows = crop_windows(image, corners, 11, impl=impl)
                masks = component_masks(labels, corners, torch.arange(1, count + 1, dtype=torch.int32,
                                                                      device=device), 11, impl=impl)
                crops = [crop_components(image, labels, count, 13, mode, 2, 3, impl=impl)
                         for mode in ["mask", "texture", "full"]]
            outputs[impl] = [labels, torch.tensor(count), *batch, *stats, windows, masks,
                             *[t for c in crops for t in c]]
        for impl in ["reference", "auto"]:
            for got, want in zip(outputs[impl], outputs["kernel"]):
                assert got.dtype == want.dtype and got.shape == want.shape
                assert torch.equal(got.cpu(), want.cpu()) or (got.is_floating_point() and torch.allclose(
                    got.cpu(), want.cpu(), rtol=1e-7, atol=1e-7, equal_nan=True))


def test_fallback_when_no_kernel(monkeypatch, rng):
    """Without kernels for the device, "auto" warns (once per op) and runs the reference."""
    from medgan_fast import _ext

    mask = torch.from_numpy(make_mask("blobs", (30, 40), 0.5, 9))
    image = torch.from_numpy(rng.integers(1, 255, (30, 40)).astype(np.uint8))
    labels, count = label(mask, impl="kernel")
    expected = crop_components(image, labels, count, 9, "texture", 1, impl="kernel")
    monkeypatch.setattr(_ext, "HAS_CPU_KERNELS", False)
    monkeypatch.setattr(_ext, "_warned", set())
    with pytest.warns(RuntimeWarning, match="label: using the slow reference"):
        fallback_labels, fallback_count = label(mask)
    assert fallback_count == count and torch.equal(fallback_labels, labels)
    with pytest.warns(RuntimeWarning) as record:
        result = crop_components(image, labels, count, 9, "texture", 1)
    warned = {str(w.message).split(":")[0].rsplit(".", 1)[-1] for w in record}
    assert warned == {"component_stats", "component_masks", "crop_windows", "dilate"}, warned
    for got, want in zip(result, expected):
        assert torch.equal(got, want)
    for call in [lambda: label(mask, impl="kernel"), lambda: label_batch(mask[None], impl="kernel"),
                 lambda: component_stats(labels, count, impl="kernel")]:
        with pytest.raises(RuntimeError, match="no compiled kernel"):
            call()


# ---------------------------------------------------------------------------------------
# opcheck: schema, fake impl, autograd registration, AOT dispatch

def _component_samples(device):
    rng = np.random.default_rng(2)
    masks = [make_mask("uniform", (17, 70), 0.55, 1), make_mask("blobs", (5, 9, 12), 0.4, 2),
             np.zeros((0, 4), bool), np.ones((1, 1), bool)]
    label_samples = [(torch.from_numpy(m).to(device), c) for m in masks for c in range(1, m.ndim + 1)]
    label_samples.append((torch.from_numpy(masks[0]).to(device).t(), 1))
    batch_samples = [(torch.from_numpy(make_mask("uniform", (3, 20, 33), 0.5, 3)).to(device), c) for c in (1, 2)]
    batch_samples.append((torch.zeros(0, 4, 4, dtype=torch.bool, device=device), 2))
    stats_samples = []
    for m in masks:
        labels, count = label_reference(torch.from_numpy(m))
        stats_samples.append((labels.to(device), count))
        stats_samples.append((labels.to(device), count + 2))
    source = torch.from_numpy(rng.random((3, 20, 25)).astype(np.float32)).to(device)
    corners = torch.tensor([[-3, -4], [0, 0], [15, 22], [100, 100]], dtype=torch.int64, device=device)
    window_samples = [(source, corners, 7), (source.to(torch.uint8), corners, 1),
                      (source > 0.5, corners[:0], 5), (source.transpose(1, 2), corners, 30)]
    labels, count = label_reference(torch.from_numpy(masks[0]))
    labels = labels.to(device)
    ids = torch.tensor([1, 2, 0, count], dtype=torch.int32, device=device)
    mask_samples = [(labels, corners, ids, 6), (labels, corners[:0], ids[:0], 3), (labels.t(), corners, ids, 9)]
    return {"label": label_samples, "label_batch": batch_samples, "component_stats": stats_samples,
            "crop_windows": window_samples, "component_masks": mask_samples}


@pytest.mark.parametrize("name", ["label", "label_batch", "component_stats", "crop_windows", "component_masks"])
def test_opcheck(device, name):
    op = getattr(torch.ops.medgan_fast, name).default
    samples = _component_samples(device)[name]
    assert samples
    for args in samples:
        utils = "ALL"
        if name == "component_stats" and args[1] > (int(args[0].max()) if args[0].numel() else 0):
            # Unused ids have NaN centroids, and opcheck's eager-vs-AOT comparison has no
            # equal_nan; the other checks still run on these samples.
            utils = ("test_schema", "test_autograd_registration", "test_faketensor")
        result = torch.library.opcheck(op, args, test_utils=utils)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


# ---------------------------------------------------------------------------------------
# torch.compile through torch.ops (fake impls registered in the Python modules)

def test_compile_fullgraph_dilate_and_label(device):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def grow_and_label(mask, footprint):
        grown = torch.ops.medgan_fast.dilate(mask, footprint)
        labels, count = torch.ops.medgan_fast.label(grown, 1)
        return grown, labels, count + 0

    mask_np = make_mask("uniform", (40, 57), 0.08, 4)
    mask = torch.from_numpy(mask_np).to(device)
    grown, labels, count = grow_and_label(mask, disk(1))
    expected_grown = ndi.binary_dilation(mask_np, skm.disk(1))
    np.testing.assert_array_equal(as_numpy(grown), expected_grown)
    expected, expected_count = sk_label(expected_grown, 1)
    assert labels.dtype == torch.int32 and count.dtype == torch.int64 and int(count) == expected_count
    np.testing.assert_array_equal(as_numpy(labels), expected)


# ---------------------------------------------------------------------------------------
# CPU vs CUDA

def test_cpu_equals_cuda(rng, gpu):
    cases = [make_mask("uniform", (600, 600), 0.55, 1), make_mask("blobs", (129, 257), 0.5, 2), spiral(512),
             comb(300, 401, "bottom"), staircase(300, True), np.zeros((0, 3), bool), np.ones((1, 1), bool)]
    for mask_np in cases:
        mask = torch.from_numpy(mask_np)
        for connectivity in [1, 2]:
            cpu, cpu_count = label(mask, connectivity, impl="kernel")
            s_cpu = component_stats(cpu, cpu_count, impl="kernel")
            with gpu.running():
                cuda, cuda_count = label(gpu.put(mask), connectivity, impl="kernel")
                s_cuda = component_stats(cuda, cuda_count, impl="kernel")
            assert gpu.holds(cuda) and cuda_count == cpu_count and torch.equal(cuda.cpu(), cpu)
            for a, b in zip(s_cpu, s_cuda):
                assert gpu.holds(b)
                torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12, equal_nan=True)
    vol = torch.from_numpy(make_mask("blobs", (20, 30, 40), 0.4, 5))
    for connectivity in [1, 2, 3]:
        cpu, cpu_count = label(vol, connectivity, impl="kernel")
        with gpu.running():
            cuda, cuda_count = label(gpu.put(vol), connectivity, impl="kernel")
        assert cuda_count == cpu_count and torch.equal(cuda.cpu(), cpu)
    masks = torch.from_numpy(make_mask("uniform", (4, 100, 130), 0.55, 6))
    for connectivity in [1, 2]:
        cpu, cpu_counts = label_batch(masks, connectivity, impl="kernel")
        with gpu.running():
            cuda, cuda_counts = label_batch(gpu.put(masks), connectivity, impl="kernel")
        assert torch.equal(cuda.cpu(), cpu) and torch.equal(cuda_counts.cpu(), cpu_counts)
    image = torch.from_numpy(rng.integers(1, 65535, (3, 129, 257)).astype(np.uint16))
    labels, count = label(torch.from_numpy(cases[1]), impl="kernel")
    for mode in ["mask", "texture", "full"]:
        cpu = crop_components(image, labels, count, 17, mode, 3, 2, impl="kernel")
        with gpu.running():
            cuda = crop_components(gpu.put(image), gpu.put(labels), count, 17, mode, 3, 2, impl="kernel")
        for a, b in zip(cpu, cuda):
            assert gpu.holds(b) and torch.equal(b.cpu(), a)


@pytest.mark.skipif(not emulation.AVAILABLE, reason="counts the emulated CUDA kernel's atomics")
@pytest.mark.parametrize("shape", [(256, 256), (8, 64, 96)])
def test_cuda_stats_merge_a_large_component_before_its_atomics(shape):
    """One component everywhere: the CUDA stats kernel merges its runs per thread and per
    warp, so it issues one set of 1 + 3 ndim atomics per warp, not one per 32 pixels."""
    labels = torch.ones(shape, dtype=torch.int32)
    with emulation.emulated_cuda():
        before = emulation.counters()["atomics"]
        area, bbox, centroid = component_stats(labels, 1, impl="kernel")
        atomics = emulation.counters()["atomics"] - before
    expected = component_stats(labels, 1, impl="kernel")
    for a, b in zip((area, bbox, centroid), expected):
        assert torch.equal(a, b)
    threads = labels.numel() // 32  # one per 32 pixels of a row
    assert atomics <= (1 + 3 * len(shape)) * threads // 32, atomics


@pytest.mark.cuda
def test_cuda_device_mismatch_is_refused():
    labels = torch.zeros(4, 4, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="corners must be on"):
        component_masks(labels, CORNERS, IDS.cuda(), 2)
    with pytest.raises(ValueError, match="ids must be"):
        component_masks(labels, CORNERS.cuda(), IDS, 2)
    with pytest.raises(ValueError, match="image must be on"):
        crop_components(torch.zeros(4, 4), labels, 0, 2, "full")
