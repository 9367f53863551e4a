"""dilate / erode and the footprints: kernel vs reference vs scipy.ndimage / scikit-image.

Morphology is exact in every dtype (max/min only), so every comparison here is exact.
Peers: ``binary_dilation``, ``binary_erosion(border_value=1)``, ``grey_dilation`` /
``grey_erosion`` with ``mode="constant"`` and cval at the dtype's extreme, and scipy's
default ``mode="reflect"`` for symmetric convex footprints (as the docstrings promise).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.morphology as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medgan_fast import emulation
from medgan_fast.ops import morphology as morph
from medgan_fast.ops.morphology import (
    ball, cube, dilate, dilate_reference, disk, erode, erode_reference, square,
)

DTYPES = [torch.bool, torch.uint8, torch.uint16, torch.int32, torch.float32, torch.float64]
GREY_DTYPES = DTYPES[1:]
IMPLS = ["kernel", "reference"]
OPS = {"dilate": (dilate, dilate_reference), "erode": (erode, erode_reference)}


# ---------------------------------------------------------------------------------------
# Helpers

def random_image(rng: np.random.Generator, shape, dtype: torch.dtype, density: float = 0.5) -> np.ndarray:
    """A numpy array of ``shape`` for ``dtype``: bools at ``density``, integers over the full
    range of the type (extremes included), floats with some ±inf."""
    if dtype == torch.bool:
        return rng.random(shape) < density
    if dtype == torch.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == torch.uint16:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    if dtype == torch.int32:
        info = np.iinfo(np.int32)
        return rng.integers(info.min, info.max, shape, dtype=np.int32, endpoint=True)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    x = (rng.standard_normal(shape) * 1e3).astype(np_dtype)
    special = rng.random(shape)
    x[special < 0.02] = np.inf
    x[special > 0.98] = -np.inf
    return x


def extreme(np_dtype, largest: bool):
    np_dtype = np.dtype(np_dtype)
    if np_dtype.kind == "f":
        return np.inf if largest else -np.inf
    info = np.iinfo(np_dtype)
    return info.max if largest else info.min


def scipy_morph(op: str, x: np.ndarray, fp: np.ndarray, mode: str = "constant") -> np.ndarray:
    """The documented scipy equivalent of dilate/erode. A 2-D footprint on a 3-D x acts on
    each image of the batch: a (1, kh, kw) footprint."""
    fp = np.asarray(fp, bool)
    if fp.ndim < x.ndim:
        fp = fp[None]
    if x.dtype == bool:
        if op == "dilate":
            return ndi.binary_dilation(x, fp)
        return ndi.binary_erosion(x, fp, border_value=1)
    if op == "dilate":
        return ndi.grey_dilation(x, footprint=fp, mode=mode, cval=extreme(x.dtype, largest=False))
    return ndi.grey_erosion(x, footprint=fp, mode=mode, cval=extreme(x.dtype, largest=True))


def run(op: str, x: torch.Tensor, fp, impl: str) -> torch.Tensor:
    public, reference = OPS[op]
    return reference(x, fp) if impl == "reference" else public(x, fp, impl=impl)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def check_against_scipy(op, x_np, fp, device, impl, assert_close, mode="constant"):
    x = torch.from_numpy(x_np).to(device)
    out = run(op, x, fp, impl)
    assert out.device == x.device and out.dtype == x.dtype and out.shape == x.shape
    expected = torch.from_numpy(np.ascontiguousarray(scipy_morph(op, x_np, as_numpy(torch.as_tensor(fp)), mode)))
    assert_close(out, expected.to(out.dtype), msg=f"{op} {impl} {x_np.dtype} {x_np.shape} fp={np.asarray(fp).shape}")
    return out


# ---------------------------------------------------------------------------------------
# Footprints equal scikit-image's

@pytest.mark.parametrize("radius", range(0, 9))
def test_disk_and_ball_match_skimage(radius):
    d, b = disk(radius), ball(radius)
    assert d.dtype == torch.bool and d.shape == (2 * radius + 1,) * 2
    assert b.dtype == torch.bool and b.shape == (2 * radius + 1,) * 3
    np.testing.assert_array_equal(d.numpy(), skm.disk(radius).astype(bool))
    np.testing.assert_array_equal(b.numpy(), skm.ball(radius).astype(bool))


@pytest.mark.parametrize("width", [1, 2, 3, 4, 7])
def test_square_and_cube_match_skimage(width):
    s, c = square(width), cube(width)
    assert s.dtype == torch.bool and c.dtype == torch.bool
    np.testing.assert_array_equal(s.numpy(), skm.footprint_rectangle((width, width)).astype(bool))
    np.testing.assert_array_equal(c.numpy(), skm.footprint_rectangle((width,) * 3).astype(bool))
    if hasattr(skm, "square"):  # deprecated in 0.25, removed in 0.27
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            np.testing.assert_array_equal(s.numpy(), skm.square(width).astype(bool))
            np.testing.assert_array_equal(c.numpy(), skm.cube(width).astype(bool))


@pytest.mark.parametrize("make, name, bad", [
    (disk, "radius", -1), (disk, "radius", 1.5), (disk, "radius", True), (ball, "radius", -2),
    (square, "width", 0), (square, "width", "3"), (cube, "width", 0), (cube, "width", 2.0),
])
def test_footprint_bad_size(make, name, bad):
    with pytest.raises(ValueError, match=name):
        make(bad)


# ---------------------------------------------------------------------------------------
# Random inputs (hypothesis) against scipy, kernel and reference

@st.composite
def footprints_2d(draw, max_side=5):
    kh, kw = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    fp = np.random.default_rng(seed).random((kh, kw)) < draw(st.sampled_from([0.3, 0.6, 1.0]))
    fp.flat[draw(st.integers(0, kh * kw - 1))] = True  # never all false
    return fp


@settings(max_examples=60)
@given(op=st.sampled_from(list(OPS)), dtype=st.sampled_from(DTYPES), h=st.integers(1, 40), w=st.integers(1, 80),
       density=st.sampled_from([0.05, 0.3, 0.5, 0.9]), fp=footprints_2d(), seed=st.integers(0, 2**32 - 1))
def test_random_2d_matches_scipy(device, assert_close, op, dtype, h, w, density, fp, seed):
    x_np = random_image(np.random.default_rng(seed), (h, w), dtype, density)
    kernel = check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
    reference = check_against_scipy(op, x_np, fp, device, "reference", assert_close)
    assert_close(kernel, reference)


@settings(max_examples=40)
@given(op=st.sampled_from(list(OPS)), dtype=st.sampled_from(DTYPES), shape=st.tuples(*[st.integers(1, 12)] * 3),
       density=st.sampled_from([0.1, 0.5, 0.9]), kind=st.sampled_from(["ball", "random"]),
       fp_shape=st.tuples(*[st.integers(1, 4)] * 3), seed=st.integers(0, 2**32 - 1))
def test_random_3d_volume_matches_scipy(device, assert_close, op, dtype, shape, density, kind, fp_shape, seed):
    rng = np.random.default_rng(seed)
    if kind == "ball":
        fp = ball(int(rng.integers(0, 3)))
    else:
        fp = rng.random(fp_shape) < 0.5
        fp.flat[0] = True
    x_np = random_image(rng, shape, dtype, density)
    kernel = check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
    reference = check_against_scipy(op, x_np, fp, device, "reference", assert_close)
    assert_close(kernel, reference)


@settings(max_examples=40)
@given(op=st.sampled_from(list(OPS)), dtype=st.sampled_from(DTYPES), n=st.integers(1, 5), h=st.integers(1, 24),
       w=st.integers(1, 70), fp=footprints_2d(), seed=st.integers(0, 2**32 - 1))
def test_batch_equals_per_image(device, assert_close, op, dtype, n, h, w, fp, seed):
    """(N, H, W) with a 2-D footprint: each image on its own, nothing leaks between them."""
    x_np = random_image(np.random.default_rng(seed), (n, h, w), dtype)
    batch = check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
    x = torch.from_numpy(x_np).to(device)
    for i in range(n):
        assert_close(batch[i], run(op, x[i], fp, "kernel"), msg=f"image {i}")


# ---------------------------------------------------------------------------------------
# Fixed footprints and shapes: asymmetric, even, tall/wide (word and row-ladder boundaries)

FIXED_FOOTPRINTS = {
    "disk1": disk(1),
    "disk3": disk(3),
    "square2": square(2),
    "square3": square(3),
    "one": torch.ones(1, 1, dtype=torch.bool),
    "asym4x3": torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.bool),
    "even2x4": torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool),
    "offcentre": torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool),
    "row1x9": torch.ones(1, 9, dtype=torch.bool),
    "col9x1": torch.ones(9, 1, dtype=torch.bool),
    "wide1x70": torch.ones(1, 70, dtype=torch.bool),   # wider than a 64-bit word
    "tall33x3": torch.ones(33, 3, dtype=torch.bool),   # many rows: deep doubling ladder
    "hollow5": torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
                            dtype=torch.bool),
}


@pytest.mark.parametrize("fp_name", list(FIXED_FOOTPRINTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_fixed_footprints_match_scipy(device, assert_close, rng, op, dtype, fp_name):
    fp = FIXED_FOOTPRINTS[fp_name]
    for shape in [(31, 17), (7, 129), (40, 64), (3, 65)]:  # odd sizes, word boundaries
        x_np = random_image(rng, shape, dtype, density=0.2 if op == "dilate" else 0.8)
        kernel = check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
        assert_close(kernel, run(op, torch.from_numpy(x_np).to(device), fp, "reference"))


@pytest.mark.parametrize("w", [1, 63, 64, 65, 127, 128, 129, 200])
@pytest.mark.parametrize("op", list(OPS))
def test_binary_word_boundaries(device, assert_close, rng, op, w):
    """The binary kernel packs 64 pixels a word: single pixels and runs at every column
    position must spread across word boundaries exactly."""
    fp = torch.tensor([[0, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    x_np = np.zeros((5, w), bool) if op == "dilate" else np.ones((5, w), bool)
    cols = [c for c in (0, 1, 62, 63, 64, 65, 126, 127, 128, w - 1) if c < w]
    x_np[2, cols] = op == "dilate"
    check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
    x_np = random_image(rng, (5, w), torch.bool, 0.5)
    check_against_scipy(op, x_np, FIXED_FOOTPRINTS["wide1x70"], device, "kernel", assert_close)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32], ids=str)
def test_footprint_larger_than_image(device, assert_close, rng, op, dtype):
    for shape, fp in [((3, 3), disk(4)), ((2, 5), square(7)), ((1, 1), disk(2)), ((4, 2, 3), ball(3))]:
        x_np = random_image(rng, shape, dtype)
        check_against_scipy(op, x_np, fp, device, "kernel", assert_close)


# ---------------------------------------------------------------------------------------
# scipy's mode="reflect" agrees for symmetric convex footprints (docstring promise)

@pytest.mark.parametrize("fp", [disk(1), disk(2), square(3), square(5), ball(1), cube(3)],
                         ids=["disk1", "disk2", "square3", "square5", "ball1", "cube3"])
@pytest.mark.parametrize("dtype", GREY_DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_reflect_mode_equal_for_symmetric_footprints(device, assert_close, rng, op, dtype, fp):
    shape = (9, 11, 13) if fp.dim() == 3 else (23, 18)
    x_np = random_image(rng, shape, dtype)
    check_against_scipy(op, x_np, fp, device, "kernel", assert_close, mode="reflect")
    # binary: same statement through uint8 {0, 1}
    b = random_image(rng, shape, torch.bool).astype(np.uint8)
    out = run(op, torch.from_numpy(b.astype(bool)).to(device), fp, "kernel")
    expected = scipy_morph(op, b, fp.numpy(), mode="reflect").astype(bool)
    np.testing.assert_array_equal(as_numpy(out), expected)


# ---------------------------------------------------------------------------------------
# The documented border difference of erode vs scipy's default binary_erosion

@pytest.mark.parametrize("fp", [disk(2), square(3), FIXED_FOOTPRINTS["asym4x3"], FIXED_FOOTPRINTS["even2x4"]],
                         ids=["disk2", "square3", "asym4x3", "even2x4"])
def test_erode_border_difference_vs_border_value_0(device, rng, fp):
    fp_np = fp.numpy()
    x_np = rng.random((30, 41)) < 0.85
    x_np[:, :6] = True  # an object touching the border: eroded by scipy's default only
    ours = as_numpy(erode(torch.from_numpy(x_np).to(device), fp, impl="kernel"))
    theirs = ndi.binary_erosion(x_np, fp_np)  # border_value=0
    # Reach of the footprint towards each border: offsets are index - size // 2.
    rows, cols = np.nonzero(fp_np)
    top, bottom = max(0, -(rows.min() - fp_np.shape[0] // 2)), max(0, rows.max() - fp_np.shape[0] // 2)
    left, right = max(0, -(cols.min() - fp_np.shape[1] // 2)), max(0, cols.max() - fp_np.shape[1] // 2)
    interior = np.zeros_like(x_np)
    interior[top:x_np.shape[0] - bottom, left:x_np.shape[1] - right] = True
    np.testing.assert_array_equal(ours[interior], theirs[interior])
    differ = ours != theirs
    assert differ.any(), "the border object should be eroded by scipy's default and not by erode"
    assert not differ[interior].any()
    assert (ours | ~theirs).all(), "border_value=0 can only remove pixels"
    # The docstring's recipe: pad with zeros first to get scipy's default behaviour.
    pad = max(fp_np.shape)
    padded = np.pad(x_np, pad)
    recipe = as_numpy(erode(torch.from_numpy(padded).to(device), fp, impl="kernel"))[pad:-pad, pad:-pad]
    np.testing.assert_array_equal(recipe, theirs)


# ---------------------------------------------------------------------------------------
# Edge cases

@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (0, 4, 4), (3, 0, 4), (2, 3, 0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("impl", IMPLS)
def test_empty(device, op, dtype, shape, impl):
    x = torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype)).to(device)
    fp = ball(1) if len(shape) == 3 and shape[0] == 0 else disk(1)
    out = run(op, x, fp, impl)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_constant_images(device, assert_close, op, dtype):
    """All-false / all-true (and constant grey) images are fixed points of footprints that hold
    their origin: outside the image never contributes, so erosion does not eat the border and
    dilation adds nothing. (Off-centre footprints shift the image; scipy decides those.)"""
    for fp in [disk(2), FIXED_FOOTPRINTS["even2x4"], FIXED_FOOTPRINTS["asym4x3"], FIXED_FOOTPRINTS["offcentre"]]:
        for value in ([False, True] if dtype == torch.bool else [0, 7]):
            x = torch.full((13, 70), value, dtype=dtype if dtype != torch.uint16 else torch.int32)
            x = torch.from_numpy(x.numpy().astype(np.uint16)) if dtype == torch.uint16 else x
            x = x.to(device)
            out = run(op, x, fp, "kernel")
            if fp[tuple(s // 2 for s in fp.shape)]:
                assert_close(out, x)
            check_against_scipy(op, as_numpy(x), fp, device, "kernel", assert_close)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_pixel_images(device, assert_close, rng, dtype):
    for shape in [(1, 1), (1, 1, 1)]:
        x_np = random_image(rng, shape, dtype)
        for op in OPS:
            for fp in [disk(2), FIXED_FOOTPRINTS["asym4x3"]] + ([ball(1)] if len(shape) == 3 else []):
                out = check_against_scipy(op, x_np, fp, device, "kernel", assert_close)
                if fp[tuple(s // 2 for s in fp.shape)]:  # only the pixel itself contributes
                    assert_close(out.cpu(), torch.from_numpy(x_np))
                else:  # nothing contributes: the identity of max / min
                    assert_close(out.cpu(), torch.full_like(out.cpu(), morph._extreme(dtype, op == "erode")))


def test_single_pixel_spreads_to_the_footprint(device):
    """Dilating one pixel draws the footprint (reflected: out[q] = x[q - o]), anchored at its
    centre; eroding its complement punches the reflected footprint out."""
    fp = FIXED_FOOTPRINTS["asym4x3"]
    x = torch.zeros(11, 12, dtype=torch.bool, device=device)
    x[5, 6] = True
    out = dilate(x, fp, impl="kernel").cpu()
    expected = torch.zeros(11, 12, dtype=torch.bool)
    expected[5 - 2:5 + 2, 6 - 1:6 + 2] = fp  # origin (2, 1); q = p + o - centre
    assert torch.equal(out, expected)
    eroded = erode(~x, fp, impl="kernel").cpu()
    hole = torch.zeros(11, 12, dtype=torch.bool)
    hole[5 - 1:5 + 3, 6 - 1:6 + 2] = fp.flip(0).flip(1)  # q + o - centre = p
    assert torch.equal(eroded, ~hole)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_line_images(device, assert_close, rng, op, dtype):
    for shape in [(1, 1), (1, 37), (37, 1), (1, 130), (130, 1), (1, 1, 9), (9, 1, 1)]:
        x_np = random_image(rng, shape, dtype, 0.4)
        for fp in [disk(2), FIXED_FOOTPRINTS["even2x4"], FIXED_FOOTPRINTS["col9x1"]]:
            check_against_scipy(op, x_np, fp, device, "kernel", assert_close)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_non_contiguous_inputs(device, assert_close, rng, op, dtype):
    base_np = random_image(rng, (3, 40, 70), dtype, 0.5)
    base = torch.from_numpy(base_np).to(device)
    views = {
        "transposed": base[0].t(),
        "strided": base[1, ::3, ::2],
        "negative-free flip via index": base[2][:, torch.arange(69, -1, -1, device=device)],
        "permuted volume": base.permute(2, 0, 1),
        "expanded": base[0, :1].expand(9, 70),
        "channel slice": base[:, 5:30, 7:50],
    }
    for name, view in views.items():
        fp = FIXED_FOOTPRINTS["asym4x3"] if name != "permuted volume" else ball(1)
        before = view.clone()
        out = run(op, view, fp, "kernel")
        assert out.is_contiguous(), name
        assert_close(out, run(op, view.contiguous(), fp, "kernel"), msg=name)
        check_against_scipy(op, np.ascontiguousarray(as_numpy(view)), fp, device, "kernel", assert_close)
        assert_close(view, before, msg=f"{name}: input modified")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_batch_of_one_equals_2d(device, assert_close, rng, op, dtype):
    x = torch.from_numpy(random_image(rng, (1, 19, 23), dtype)).to(device)
    fp = FIXED_FOOTPRINTS["even2x4"]
    assert_close(run(op, x, fp, "kernel")[0], run(op, x[0], fp, "kernel"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_nan_kernel_equals_reference(device, assert_close, op, dtype):
    """NaN in a float image: the kernel must agree with the reference (the oracle and the
    fallback), which propagates NaN as torch.maximum / torch.minimum do: every output whose
    footprint window holds a NaN is NaN. (scipy's answer depends on its comparison order,
    so it is not the oracle here.)"""
    nan = float("nan")
    one = torch.ones(1, 1, dtype=torch.bool)
    # Minimal case: a 1 x 1 footprint is the identity, NaN included.
    row = torch.tensor([[1.0, nan, 2.0]], dtype=dtype, device=device)
    assert_close(run(op, row, one, "kernel"), row)
    # A NaN must not make finite neighbours vanish (the kernel gave [1, 1, -inf] here).
    out = run(op, row, torch.ones(1, 3, dtype=torch.bool), "kernel")
    assert not torch.isinf(out).any(), out
    x = torch.zeros(5, 6, dtype=dtype, device=device)
    x[0, 0] = 3
    x[2, 2] = nan
    for fp in [one, disk(1), square(3)]:
        kernel = run(op, x, fp, "kernel")
        reference = run(op, x, fp, "reference")
        assert torch.equal(torch.isnan(reference), dilate(torch.isnan(x), fp, impl="reference"))
        assert_close(kernel, reference)


def test_footprint_array_likes_are_accepted(device, assert_close, rng):
    """skimage-style uint8 numpy footprints, int tensors (nonzero = true), CUDA footprints."""
    x = torch.from_numpy(rng.random((25, 30)) < 0.3).to(device)
    expected = dilate(x, disk(3), impl="kernel")
    assert_close(dilate(x, skm.disk(3), impl="kernel"), expected)
    assert_close(dilate(x, skm.disk(3).astype(np.int64) * 5, impl="kernel"), expected)
    assert_close(dilate(x, disk(3).to(torch.int32).to(device), impl="kernel"), expected)
    assert_close(dilate(x, disk(3).tolist(), impl="kernel"), expected)
    vol = torch.from_numpy(rng.random((6, 7, 8)) < 0.7).to(device)
    assert_close(erode(vol, skm.ball(1), impl="kernel"), erode(vol, ball(1), impl="kernel"))
    assert_close(erode(vol, skm.footprint_rectangle((3, 3, 3)), impl="kernel"), erode(vol, cube(3), impl="kernel"))


def test_large_footprint_on_larger_image(device, assert_close, rng):
    for dtype in [torch.bool, torch.uint8]:
        x_np = random_image(rng, (96, 150), dtype, 0.02)
        check_against_scipy("dilate", x_np, disk(7), device, "kernel", assert_close)
        check_against_scipy("erode", x_np, disk(7), device, "kernel", assert_close)


# ---------------------------------------------------------------------------------------
# Bad inputs: TypeError / ValueError that name the argument

@pytest.mark.parametrize("op", [dilate, erode, dilate_reference, erode_reference])
@pytest.mark.parametrize("x, fp, error, match", [
    (np.zeros((4, 4), bool), disk(1), TypeError, "x must be a torch.Tensor"),
    ([[True]], disk(1), TypeError, "x must be a torch.Tensor"),
    (torch.zeros(4, 4, dtype=torch.int64), disk(1), TypeError, "x must be bool"),
    (torch.zeros(4, 4, dtype=torch.float16), disk(1), TypeError, "x must be bool"),
    (torch.zeros(4, 4, dtype=torch.int8), disk(1), TypeError, "x must be bool"),
    (torch.zeros(4, 4, dtype=torch.complex64), disk(1), TypeError, "x must be bool"),
    (torch.zeros(4, dtype=torch.bool), disk(1), ValueError, "x must be"),
    (torch.zeros(1, 2, 4, 4, dtype=torch.bool), disk(1), ValueError, "x must be"),
    (torch.zeros((), dtype=torch.bool), disk(1), ValueError, "x must be"),
    (torch.zeros(4, 4, dtype=torch.bool), torch.zeros(0, 3, dtype=torch.bool), ValueError, "footprint"),
    (torch.zeros(4, 4, dtype=torch.bool), np.zeros((3, 0), np.uint8), ValueError, "footprint"),
    (torch.zeros(4, 4, dtype=torch.bool), torch.ones(3, dtype=torch.bool), ValueError, "footprint"),
    (torch.zeros(4, 4, dtype=torch.bool), torch.ones(1, 1, 1, 1, dtype=torch.bool), ValueError, "footprint"),
    (torch.zeros(4, 4, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool), ValueError,
     "footprint must have at least one true"),
    (torch.zeros(4, 4, dtype=torch.bool), np.zeros((3, 3), np.uint8), ValueError,
     "footprint must have at least one true"),
    (torch.zeros(4, 4, dtype=torch.bool), ball(1), ValueError, "3-D footprint"),
    (torch.zeros(4, 4, dtype=torch.uint8), cube(2), ValueError, "3-D footprint"),
])
def test_bad_inputs(op, x, fp, error, match):
    with pytest.raises(error, match=match):
        op(x, fp)


@pytest.mark.parametrize("op", [dilate, erode])
@pytest.mark.parametrize("impl", ["bogus", "cuda", "", None])
def test_bad_impl(op, impl):
    with pytest.raises(ValueError, match="impl"):
        op(torch.zeros(3, 3, dtype=torch.bool), disk(1), impl=impl)


@pytest.mark.parametrize("name", ["dilate", "erode"])
def test_kernel_checks_its_inputs(name):
    """The registered op is public too (torch.ops.medgan_fast.*): it refuses bad inputs."""
    op = getattr(torch.ops.medgan_fast, name)
    with pytest.raises(RuntimeError, match="input must be bool"):
        op(torch.zeros(4, 4, dtype=torch.int64), disk(1))
    with pytest.raises(RuntimeError, match="footprint must be a bool"):
        op(torch.zeros(4, 4, dtype=torch.bool), disk(1).to(torch.uint8))
    with pytest.raises(RuntimeError, match="footprint must be 2-D or 3-D"):
        op(torch.zeros(4, 4, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="input must be"):
        op(torch.zeros(4, dtype=torch.bool), disk(1))
    with pytest.raises(RuntimeError, match="3-D footprint"):
        op(torch.zeros(4, 4, dtype=torch.bool), ball(1))
    with pytest.raises(RuntimeError, match="at least one true"):
        op(torch.zeros(4, 4, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------
# impl: reference == kernel, auto picks the kernel without a warning

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_reference_equals_kernel(device, assert_close, rng, op, dtype):
    public, _ = OPS[op]
    for shape, fp in [((17, 29), disk(2)), ((3, 17, 29), FIXED_FOOTPRINTS["asym4x3"]), ((6, 9, 11), ball(2))]:
        x = torch.from_numpy(random_image(rng, shape, dtype)).to(device)
        kernel = public(x, fp, impl="kernel")
        assert_close(public(x, fp, impl="reference"), kernel)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the kernel is built: auto must not warn
            assert_close(public(x, fp, impl="auto"), kernel)
            assert_close(public(x, fp), kernel)


@pytest.mark.parametrize("op", list(OPS))
def test_fallback_when_no_kernel(monkeypatch, assert_close, rng, op):
    """Without kernels for the device, "auto" warns once and runs the reference, "kernel" refuses."""
    from medgan_fast import _ext

    public, _ = OPS[op]
    x = torch.from_numpy(random_image(rng, (21, 34), torch.uint8))
    expected = public(x, disk(2), impl="kernel")
    monkeypatch.setattr(_ext, "HAS_CPU_KERNELS", False)
    monkeypatch.setattr(_ext, "_warned", set())
    with pytest.warns(RuntimeWarning, match=f"{op}: using the slow reference"):
        assert_close(public(x, disk(2)), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per (op, device type)
        assert_close(public(x, disk(2), impl="auto"), expected)
    with pytest.raises(RuntimeError, match="no compiled kernel"):
        public(x, disk(2), impl="kernel")


@pytest.mark.parametrize("num_threads", [1, 3, 16], indirect=True)
@pytest.mark.parametrize("op", list(OPS))
def test_independent_of_thread_count(device, assert_close, rng, num_threads, op):
    for dtype in [torch.bool, torch.float32]:
        for shape, fp in [((70, 130), disk(3)), ((5, 17, 20), FIXED_FOOTPRINTS["tall33x3"]), ((9, 8, 7), ball(2))]:
            x_np = random_image(rng, shape, dtype, 0.3)
            check_against_scipy(op, x_np, fp, device, "kernel", assert_close)


# ---------------------------------------------------------------------------------------
# opcheck: schema, fake (meta) impl, autograd registration, AOT dispatch

def _opcheck_samples(device):
    rng = np.random.default_rng(1)
    samples = []
    for dtype in DTYPES:
        samples.append((torch.from_numpy(random_image(rng, (13, 70), dtype)).to(device), disk(2)))
    samples.append((torch.from_numpy(random_image(rng, (2, 9, 8), torch.float32)).to(device),
                    FIXED_FOOTPRINTS["asym4x3"]))
    samples.append((torch.from_numpy(random_image(rng, (5, 6, 7), torch.bool)).to(device), ball(1)))
    samples.append((torch.from_numpy(random_image(rng, (20, 30), torch.uint8)).to(device).t(), square(2)))
    samples.append((torch.zeros(0, 5, dtype=torch.bool, device=device), disk(1)))
    return samples


@pytest.mark.parametrize("name", ["dilate", "erode"])
def test_opcheck(device, name):
    op = getattr(torch.ops.medgan_fast, name).default
    for x, fp in _opcheck_samples(device):
        result = torch.library.opcheck(op, (x, fp))
        assert all(v == "SUCCESS" for v in result.values()), result


# ---------------------------------------------------------------------------------------
# CPU vs CUDA

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_equals_cuda(assert_close, rng, op, dtype, gpu):
    public, _ = OPS[op]
    cases = [((31, 17), disk(3)), ((7, 129), FIXED_FOOTPRINTS["wide1x70"]), ((70, 9), FIXED_FOOTPRINTS["tall33x3"]),
             ((4, 33, 65), FIXED_FOOTPRINTS["asym4x3"]), ((9, 10, 11), ball(2)), ((1, 1), disk(1)), ((0, 4), disk(1))]
    for shape, fp in cases:
        x = torch.from_numpy(random_image(rng, shape, dtype, 0.3))
        cpu = public(x, fp, impl="kernel")
        cpu_transposed = public(x.transpose(-1, -2), fp, impl="kernel")
        with gpu.running():
            cuda = public(gpu.put(x), gpu.put(fp), impl="kernel")
            transposed = public(gpu.put(x).transpose(-1, -2), fp, impl="kernel")
        assert gpu.holds(cuda)
        assert_close(cuda.cpu(), cpu, msg=f"{shape}")
        assert_close(transposed.cpu(), cpu_transposed)


def many_spans_footprint(width: int = 1024, longest: int = 70) -> np.ndarray:
    """A footprint with more than 65,535 distinct horizontal spans (the CUDA limit of
    gridDim.y): one row per (run length L, phase p), runs of L pixels every L + 1 from p."""
    rows = []
    for length in range(1, longest + 1):
        for phase in range(length + 1):
            row = np.zeros(width, bool)
            for start in range(phase, width - length + 1, length + 1):
                row[start:start + length] = True
            rows.append(row)
    return np.stack(rows)


def distinct_spans(footprint: np.ndarray) -> int:
    spans = set()
    for row in footprint:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        spans.update(zip(edges[::2], edges[1::2]))
    return len(spans)


def test_more_spans_than_a_grid_dimension(assert_close, rng, gpu):
    """Spans are launched as gridDim.y, at most 65,535 a launch (the emulation refuses more,
    as a GPU does). Binary only: each span is a plane, 2,555 rows tall footprints cost the
    CPU one ring row per image row (a grey run of this size takes gigabytes)."""
    footprint = many_spans_footprint()
    assert distinct_spans(footprint) > 65535
    fp = torch.from_numpy(footprint)
    x = torch.from_numpy(random_image(rng, (3, 5), torch.bool, 0.3))
    expected = dilate(x, fp, impl="kernel")
    with gpu.running():
        got = dilate(gpu.put(x), gpu.put(fp), impl="kernel")
    assert_close(got.cpu(), expected)


@pytest.mark.skipif(not emulation.AVAILABLE, reason="needs the emulation's memory budget")
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32], ids=str)
@pytest.mark.parametrize("shape, footprint", [((600, 700), disk(6)), ((24, 60, 70), ball(3))], ids=["2d", "3d"])
def test_cuda_planes_fit_the_free_memory(assert_close, rng, shape, footprint, dtype):
    """The CUDA driver builds its planes band by band, sized to the free device memory, so
    an image whose planes exceed it is still processed (the emulation's budget plays the
    GPU's free memory)."""
    x = torch.from_numpy(random_image(rng, shape, dtype, 0.3))
    expected = dilate(x, footprint, impl="kernel")
    with emulation.emulated_cuda():
        emulation.peak_memory(reset=True)
        dilate(x, footprint, impl="kernel")
        whole = emulation.peak_memory(reset=True)  # with memory to spare: all planes at once
    budget = whole // 3
    with emulation.emulated_cuda(memory_budget=budget):
        got = dilate(x, footprint, impl="kernel")
        assert emulation.peak_memory(reset=True) <= budget
    assert_close(got, expected)


# module attribute used by the docstring; guards against a silent rename of the grey list
def test_grey_dtypes_documented():
    assert set(morph.GREY_DTYPES) == set(GREY_DTYPES)
