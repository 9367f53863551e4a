"""CycleGAN: the training step against pytorch-CycleGAN-and-pix2pix (the reference), and the
translate job on a whole slide against naive non-overlapping tiles.

Training step, data included, 128 px RGB, netG unet_128 (also resnet_9blocks), netD basic
(the 70 x 70 PatchGAN: the reference has no VGG discriminator), norm instance, ngf = ndf = 64,
lsgan, lambda_A = lambda_B = 10, lambda_identity 0.5, pool 50, Adam 2e-4 (0.5, 0.999), normal
init 0.02, no flips or other augmentation on either side, batch 1 (and 4):

- medgan_fast: ``CycleGANTask.train_step`` on the next batch of the framework's loader
  (``UnpairedDataset`` over two folders of 16 PNGs each, read and decoded per item, (epoch,
  index) keys, ``build_loader``; benches/_inputs.task_steps), as the task places it:
  channels_last, and on a GPU fused Adam and bf16 autocast.
- pytorch_cyclegan: the reference's ``CycleGANModel.set_input`` + ``optimize_parameters``
  on the next batch of a plain ``DataLoader(shuffle=True)`` over the same images, decoded
  once beforehand (an advantage to the peer: no decoding in its step) and given as its
  unaligned dataset gives them: {'A', 'B', 'A_paths', 'B_paths'}, A by index and B drawn with
  ``random.randint`` (serial_batches off), in [-1, 1] as its ToTensor + Normalize(0.5, 0.5).
  NCHW float32; on a GPU ``gpu_ids=[0]``, so its nets are wrapped in DataParallel, as its
  default ``--gpu_ids 0`` does. Its BaseModel sets ``cudnn.benchmark = True``; our training
  loop does too, so the GPU test sets it for both.

Both sides build the same networks: the test asserts once, outside the timing, that their
generators and discriminators have the same parameter counts, and that our generator given
the reference's weights makes the same images.

The peer is not part of this repository. The bench imports it from the folder named by
MEDGAN_PEER_CYCLEGAN (default: peers/pytorch-CycleGAN-and-pix2pix in the checkout, ignored by
git and carried to the GPU machine, or /work/peers/pytorch-CycleGAN-and-pix2pix);
without it the training tests skip and say how to get it. Only four of its files run:
models/networks.py, models/base_model.py, models/cycle_gan_model.py and util/image_pool.py.
Its ``models`` and ``util`` packages are put in sys.modules as bare namespace modules (so
their __init__ files, with the model registry and options machinery, are not run) for the
time of the import, then the previous entries are put back. No other stub is needed: the
visualizer (dominate, visdom) is never imported. Its options come as a plain namespace with
every field of its base/train options (both the niter and the n_epochs spellings), set as
above.

translate: a SLIDE x SLIDE RGB uint8 TIFF (zlib-compressed 256 px tiles; the sample image
mirrored into a seamless texture and repeated; written once per module), AtoB with the
generator of a real CycleGAN run (``medgan_fast.training.train``: unet_128, ngf 64, one step
on one image; its checkpoint re-saved with only the two generators, which is all translate
reads, so each call does not load the 1 GB full checkpoint), tile 256, overlap 32, batch 8, both
sides loading the checkpoint in the timed call:

- medgan_fast: the translate job (``translate(TranslateConfig(...))``): the thumbnail pass
  for the instance-norm statistics, overlapping tiles blended, read and written a band of
  tiles at a time, the output a zlib-compressed tiled TIFF.
- naive_tiles: the approach users write, since the reference has no whole-slide inference
  (its test.py runs whole images, or crops): the whole image read into memory
  (``tifffile.imread``), every 256 px tile run through the same generator (per-tile
  instance-norm statistics, so seams show) in batches of 8 with the same precision as ours
  (bf16 autocast on a GPU), pasted without overlap into a whole output array, written with
  ``tifffile.imwrite``. It does less work (no overlap: 256 tiles against our 361 at 4096 px;
  no thumbnail, no blending, no compression), so a ratio under 1 is the price of seamless
  output in bounded memory.

Each translate entry's megapixels per second (from its interleaved median) and peak memory
go into extra_info: the peak resident set of a fresh process running the entry once
(/proc/self/status VmHWM, reset just before the call; not ru_maxrss, which Linux carries
over fork and exec from this pytest process), its RSS before the call and the rise over it,
and on CUDA ``torch.cuda.max_memory_allocated`` of one call.

SLIDE: 4096 on a GPU, 2048 on the CPU (at 4096 px ours is about 4.5 TFLOP a call, the naive
tiles 3.1: too long for the CPU run), or MEDGAN_BENCH_SLIDE (a multiple of 256). MEDGAN_BENCH_ROUNDS=N caps every test's
rounds at N and drops the warm-up rounds, for quick checks only. The CPU tests of batch 4 and
of resnet_9blocks (several seconds a step) are marked slow: run them with -m slow.

images per second = batch / time, so report.py's ratio (the peer's time / ours) is also the
throughput ratio.
"""

import importlib
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from _inputs import bench_interleaved, needs_cuda, synchronised, task_steps
from PIL import Image

from medgan_fast.data.sample import sample_image
from medgan_fast.jobs.checkpoints import load_trained
from medgan_fast.models.cyclegan import build_generator
from medgan_fast.jobs.translation import TranslateConfig, translate
from medgan_fast.training import load_config, train
from medgan_fast.training.checkpoint import load_checkpoint, save_checkpoint
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.cyclegan import CycleGANTask, build_translator
from medgan_fast.training.data import build_loader
from medgan_fast.training.distributed import Distributed
from medgan_fast.training.registry import Context

SIZE, COUNT, WIDTH = 128, 16, 64
TILE, OVERLAP, TILE_BATCH = 256, 32, 8
PEER_URL = "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix"
DEFAULT_PEER = next((path for path in (Path(__file__).resolve().parents[1] / "peers" / "pytorch-CycleGAN-and-pix2pix",
                                       Path("/work/peers/pytorch-CycleGAN-and-pix2pix")) if path.is_dir()),
                    Path("/work/peers/pytorch-CycleGAN-and-pix2pix"))
BENCHES = Path(__file__).resolve().parent
REPO = BENCHES.parent
# The same settings on both sides (our option names; the peer's opt below spells them its way).
SETTINGS = dict(netD="basic", norm="instance", gan_mode="lsgan", lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5,
                pool_size=50, init_type="normal", init_gain=0.02)


def _rounds(rounds: int, warmup: int) -> tuple[int, int]:
    """(rounds, warmup), capped by MEDGAN_BENCH_ROUNDS for quick checks."""
    cap = os.environ.get("MEDGAN_BENCH_ROUNDS")
    return (min(rounds, int(cap)), 0) if cap else (rounds, warmup)


class _OnePedanticRound:
    """The benchmark fixture, except that pytest-benchmark's own timing of the first entry
    (bench_interleaved's pedantic call) is one round: for entries of seconds each, whose
    medians come from the interleaved rounds anyway."""

    def __init__(self, benchmark):
        object.__setattr__(self, "_benchmark", benchmark)

    def __getattr__(self, name):
        return getattr(self._benchmark, name)

    def __setattr__(self, name, value):
        setattr(self._benchmark, name, value)

    def pedantic(self, fn, rounds=1, iterations=1, **options):
        return self._benchmark.pedantic(fn, rounds=1, iterations=1)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------
# Data

def _crops() -> tuple[np.ndarray, np.ndarray]:
    """COUNT (128, 128, 3) uint8 crops per domain: A, the sample image (H-DAB stained colon
    tissue) on a 4 x 4 grid; B, the transposed image with its channels rolled (another
    "stain")."""
    image = np.moveaxis(sample_image(), 0, -1)
    other = np.roll(image.transpose(1, 0, 2), 1, axis=2)
    grid = [(y, x) for y in range(0, 512, SIZE) for x in range(0, 512, SIZE)][:COUNT]
    return (np.stack([image[y:y + SIZE, x:x + SIZE] for y, x in grid]),
            np.stack([other[y:y + SIZE, x:x + SIZE] for y, x in grid]))


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Folders a/ and b/ of COUNT RGB PNGs each."""
    root = tmp_path_factory.mktemp("cyclegan_domains")
    for name, crops in zip("ab", _crops()):
        (root / name).mkdir()
        for index, crop in enumerate(crops):
            Image.fromarray(crop).save(root / name / f"{name}{index:02d}.png")
    return root


class UnalignedTensors(torch.utils.data.Dataset):
    """The reference's unaligned dataset over images decoded beforehand: item i is A's image
    i mod |A| and a B image drawn by random.randint (its serial_batches off), as
    {'A', 'B', 'A_paths', 'B_paths'}."""

    def __init__(self, a, a_paths, b, b_paths):
        self.a, self.a_paths, self.b, self.b_paths = a, a_paths, b, b_paths

    def __len__(self):
        return max(len(self.a), len(self.b))

    def __getitem__(self, index):
        index_b = random.randint(0, len(self.b) - 1)
        return {"A": self.a[index % len(self.a)], "B": self.b[index_b],
                "A_paths": self.a_paths[index % len(self.a)], "B_paths": self.b_paths[index_b]}


def _decoded(folder: Path) -> tuple[list[torch.Tensor], list[str]]:
    """The folder's PNGs as the reference's transform gives them: (3, H, W) float32,
    ToTensor then Normalize(0.5, 0.5), i.e. x / 255 * 2 - 1."""
    paths = sorted(folder.glob("*.png"))
    images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float().div(255)
              .sub(0.5).div(0.5).contiguous() for p in paths]
    return images, [str(p) for p in paths]


# ---------------------------------------------------------------------------------------
# The two training steps

def ours(device: torch.device, domains: Path, net_g: str, batch: int):
    """(our task, a call running its next step)."""
    config = TrainConfig(arch="CycleGAN", image_size=SIZE, number_channels=3, batch_size=batch, seed=0,
                         n_gpu=int(device.type == "cuda"), loader_workers=0, learning_rate=2e-4, beta_adam=0.5,
                         gen_feature_maps=WIDTH, dis_feature_maps=WIDTH,
                         options={"data_a": str(domains / "a"), "data_b": str(domains / "b"), "netG": net_g,
                                  **SETTINGS})
    task = CycleGANTask(Context(config, Distributed(device=device)))
    dataset, _ = CycleGANTask.datasets(config)
    loader, sampler, _ = build_loader(dataset, config)
    return task, task_steps(task, loader, sampler)


_PEER: dict = {}


def peer_model_class():
    """The reference's CycleGANModel (see the module docstring), or a skip saying how to get it."""
    root = os.environ.get("MEDGAN_PEER_CYCLEGAN") or (str(DEFAULT_PEER) if DEFAULT_PEER.is_dir() else "")
    if not root or not (Path(root) / "models" / "cycle_gan_model.py").is_file():
        where = f"MEDGAN_PEER_CYCLEGAN={root}" if root else f"neither MEDGAN_PEER_CYCLEGAN nor {DEFAULT_PEER}"
        pytest.skip(f"the peer pytorch-CycleGAN-and-pix2pix is absent ({where}): git clone {PEER_URL} and set "
                    "MEDGAN_PEER_CYCLEGAN to that folder")
    root = str(Path(root).resolve())
    if root not in _PEER:
        names = ("models", "util")
        present = [key for key in sys.modules if key.split(".")[0] in names]
        saved = {key: sys.modules.pop(key) for key in present}   # e.g. a tests/models package
        try:
            for name in names:
                package = types.ModuleType(name)
                package.__path__ = [os.path.join(root, name)]
                sys.modules[name] = package
            _PEER[root] = importlib.import_module("models.cycle_gan_model").CycleGANModel
        finally:
            for key in [key for key in sys.modules if key.split(".")[0] in names]:
                del sys.modules[key]
            sys.modules.update(saved)
    return _PEER[root]


def peer_options(device: torch.device, domains: Path, net_g: str, batch: int, checkpoints: Path) -> SimpleNamespace:
    """The reference's opt for a CycleGAN training run with the settings above (every field of
    its options/base_options.py and train_options.py, old and new names)."""
    return SimpleNamespace(
        # base options
        dataroot=str(domains), name="bench_cyclegan", gpu_ids=[0] if device.type == "cuda" else [], device=device,
        checkpoints_dir=str(checkpoints), model="cycle_gan", input_nc=3, output_nc=3, ngf=WIDTH, ndf=WIDTH,
        netD=SETTINGS["netD"], netG=net_g, n_layers_D=3, norm=SETTINGS["norm"], init_type=SETTINGS["init_type"],
        init_gain=SETTINGS["init_gain"], no_dropout=True, dataset_mode="unaligned", direction="AtoB",
        serial_batches=False, num_threads=0, batch_size=batch, load_size=SIZE, crop_size=SIZE,
        max_dataset_size=float("inf"), preprocess="resize_and_crop", no_flip=True, display_winsize=SIZE,
        epoch="latest", load_iter=0, verbose=False, suffix="", use_wandb=False, wandb_project_name="CycleGAN",
        # train options
        isTrain=True, display_freq=400, display_ncols=4, display_id=-1, display_server="http://localhost",
        display_env="main", display_port=8097, update_html_freq=1000, print_freq=100, no_html=True,
        save_latest_freq=5000, save_epoch_freq=5, save_by_iter=False, continue_train=False, epoch_count=1,
        phase="train", n_epochs=100, n_epochs_decay=100, niter=100, niter_decay=100, beta1=0.5, lr=2e-4,
        gan_mode=SETTINGS["gan_mode"], pool_size=SETTINGS["pool_size"], lr_policy="linear", lr_decay_iters=50,
        # cycle_gan_model's own
        lambda_A=SETTINGS["lambda_A"], lambda_B=SETTINGS["lambda_B"], lambda_identity=SETTINGS["lambda_identity"])


def peer(device: torch.device, domains: Path, net_g: str, batch: int, checkpoints: Path):
    """(the reference's model, a call running its next step)."""
    model_class = peer_model_class()
    images_a, paths_a = _decoded(domains / "a")
    images_b, paths_b = _decoded(domains / "b")
    loader = torch.utils.data.DataLoader(UnalignedTensors(images_a, paths_a, images_b, paths_b), batch_size=batch,
                                         shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))
    random.seed(0)
    model = model_class(peer_options(device, domains, net_g, batch, checkpoints))
    for name in model.model_names:   # a no-op for the reference's own placement; later versions place by CUDA
        getattr(model, "net" + name).to(device)
    state = {"batches": iter(())}

    def step():
        batch_ = next(state["batches"], None)
        if batch_ is None:
            state["batches"] = iter(loader)
            batch_ = next(state["batches"])
        model.set_input(batch_)
        model.optimize_parameters()

    return model, step


def training_entries(benchmark, device: str, domains: Path, net_g: str, batch: int, tmp_path: Path) -> dict:
    peer_model_class()   # skips here when the peer is absent
    device = torch.device(device)
    torch.manual_seed(0)
    task, our_step = ours(device, domains, net_g, batch)
    torch.manual_seed(0)
    model, peer_step = peer(device, domains, net_g, batch, tmp_path / "peer_checkpoints")
    counts = {"medgan_fast": {"generator": _parameters(task.models["g_ab"]),
                              "discriminator": _parameters(task.models["d_b"])},
              "pytorch_cyclegan": {"generator": _parameters(model.netG_A), "discriminator": _parameters(model.netD_A)}}
    assert counts["medgan_fast"] == counts["pytorch_cyclegan"], counts
    _check_same_generator(getattr(model.netG_A, "module", model.netG_A), net_g, device)
    benchmark.extra_info["parameters"] = counts
    return {"medgan_fast": our_step, "pytorch_cyclegan": peer_step}


def _check_same_generator(reference: torch.nn.Module, net_g: str, device: torch.device) -> None:
    """Our `net_g` with the reference's weights (its parameters in the same order) gives the
    reference's images."""
    mine = build_generator(net_g, 3, 3, 64, "instance").to(device)
    with torch.no_grad():
        for ours_p, theirs in zip(mine.parameters(), reference.parameters(), strict=True):
            ours_p.copy_(theirs)
        x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(device)
        torch.testing.assert_close(mine(x), reference(x.clone()), rtol=1e-4, atol=1e-5)


def _training_group(net_g: str, batch: int, where: str) -> str:
    return f"CycleGAN training step (netG {net_g}, netD basic), batch {batch} x 3 x {SIZE} x {SIZE}, {where}"


def test_cyclegan_training_cpu(benchmark, domains, tmp_path):
    steps = training_entries(benchmark, "cpu", domains, "unet_128", 1, tmp_path)
    rounds, warmup = _rounds(10, 2)
    bench_interleaved(_OnePedanticRound(benchmark), _training_group("unet_128", 1, "CPU"), steps, rounds=rounds,
                      warmup=warmup)


@pytest.mark.slow
@pytest.mark.parametrize("net_g, batch", [("unet_128", 4), ("resnet_9blocks", 1)])
def test_cyclegan_training_cpu_more(benchmark, domains, tmp_path, net_g, batch):
    steps = training_entries(benchmark, "cpu", domains, net_g, batch, tmp_path)
    rounds, warmup = _rounds(5, 1)
    bench_interleaved(_OnePedanticRound(benchmark), _training_group(net_g, batch, "CPU"), steps, rounds=rounds,
                      warmup=warmup)


@needs_cuda
@pytest.mark.parametrize("net_g, batch", [("unet_128", 1), ("unet_128", 4), ("resnet_9blocks", 1),
                                          ("resnet_9blocks", 4)])
def test_cyclegan_training_cuda(benchmark, domains, tmp_path, net_g, batch):
    benchmark_flag = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True   # as our training loop and the reference's BaseModel both set it
    try:
        steps = {name: synchronised(step)
                 for name, step in training_entries(benchmark, "cuda", domains, net_g, batch, tmp_path).items()}
        rounds, warmup = _rounds(30, 5)
        bench_interleaved(benchmark, _training_group(net_g, batch, "GPU"), steps, rounds=rounds, warmup=warmup)
    finally:
        torch.backends.cudnn.benchmark = benchmark_flag


# ---------------------------------------------------------------------------------------
# translate

def slide_side(device: str) -> int:
    side = int(os.environ.get("MEDGAN_BENCH_SLIDE") or (4096 if device == "cuda" else 2048))
    if side <= 0 or side % TILE:
        pytest.fail(f"MEDGAN_BENCH_SLIDE={side}: expected a positive multiple of {TILE}")
    return side


def slide_pixels(side: int) -> np.ndarray:
    """(side, side, 3) uint8: the 512 px sample image mirrored into a seamless 1024 px block
    and repeated."""
    image = np.moveaxis(sample_image(), 0, -1)
    block = np.concatenate([np.concatenate([image, image[:, ::-1]], 1),
                            np.concatenate([image[::-1], image[::-1, ::-1]], 1)], 0)
    reps = -(-side // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, reps, 1))[:side, :side])


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """side -> the slide TIFF of that side, written on first use."""
    folder, made = tmp_path_factory.mktemp("cyclegan_slides"), {}

    def get(side: int) -> Path:
        if side not in made:
            made[side] = folder / f"slide_{side}.tif"
            tifffile.imwrite(made[side], slide_pixels(side), tile=(TILE, TILE), compression="zlib",
                             photometric="rgb")
        return made[side]

    return get


@pytest.fixture(scope="module")
def generators(domains, tmp_path_factory):
    """A CycleGAN checkpoint of a real (one-step) run, unet_128 of width 64, holding only its
    two generators."""
    out = tmp_path_factory.mktemp("cyclegan_run")
    config = load_config(None, [
        "arch=CycleGAN", f"data_a={domains / 'a'}", f"data_b={domains / 'b'}", f"image_size={SIZE}", "netG=unet_128",
        "netD=basic", f"gen_feature_maps={WIDTH}", f"dis_feature_maps={WIDTH}", "batch_size=1", "max_images=1",
        "num_epochs=1", "decay_epochs=0", "metric_images=1", "loader_workers=0", "n_gpu=0", "progress=false",
        "metrics=", "checkpoint_every=0", f"out={out}", "run=translate"])
    trained_path = train(config).checkpoint
    trained = load_checkpoint(trained_path)
    path = save_checkpoint({**{key: trained[key] for key in ("arch", "config", "step", "epoch", "best")
                               if key in trained},
                            "models": {name: trained["models"][name] for name in ("g_ab", "g_ba")}},
                           out / "generators.pt")
    trained_path.unlink()   # the full checkpoint (with both optimizers' states) is 1 GB
    return path


def translate_entries(checkpoint: Path, slide: Path, folder: Path, device: torch.device) -> dict:
    def medgan_fast():
        translate(TranslateConfig(checkpoint=checkpoint, direction="AtoB", input=slide, out=folder / "ours.tif",
                                  tile=TILE, overlap=OVERLAP, batch_size=TILE_BATCH, device=str(device),
                                  progress=False, overwrite=True))

    def naive_tiles():
        model, _, _ = load_trained(checkpoint, "CycleGAN", "g_ab", lambda c: build_translator(c, "AtoB"), "", device)
        image = tifffile.imread(slide)                       # (H, W, 3) uint8, all of it
        pixels = torch.from_numpy(image).permute(2, 0, 1)    # (3, H, W), a view
        result = np.empty_like(image)
        origins = [(y, x) for y in range(0, image.shape[0], TILE) for x in range(0, image.shape[1], TILE)]
        with torch.no_grad():
            for first in range(0, len(origins), TILE_BATCH):
                group = origins[first:first + TILE_BATCH]
                batch = torch.stack([pixels[:, y:y + TILE, x:x + TILE] for y, x in group]).to(device)
                with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                    out = model(batch.float().div(127.5).sub(1)).float()
                tiles = out.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                for (y, x), tile in zip(group, tiles):
                    result[y:y + TILE, x:x + TILE] = tile
        tifffile.imwrite(folder / "naive.tif", result, photometric="rgb")

    return {"medgan_fast": medgan_fast, "naive_tiles": naive_tiles}


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _child_peak_rss(entry: str, checkpoint: str, slide: str, folder: str, device: str) -> None:
    """In a fresh process (see peak_rss): runs `entry` once and prints its peak RSS as JSON."""
    torch.set_num_threads(int(os.environ.get("MEDGAN_FAST_BENCH_THREADS", "2")))
    device = torch.device(device)
    if device.type == "cuda":
        torch.zeros(1, device=device)   # the CUDA context is not the entry's
    run = translate_entries(Path(checkpoint), Path(slide), Path(folder), device)[entry]
    before = _status_kib("VmRSS")
    try:   # the peak so far back to the current RSS (Linux 4.0+), so VmHWM is the call's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass   # then VmHWM also counts imports since exec, which the rise shows
    run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": round(peak / 1024, 1), "rise_mib": round((peak - before) / 1024, 1),
                      "before_mib": round(before / 1024, 1)}))


def peak_rss(entry: str, checkpoint: Path, slide: Path, folder: Path, device: torch.device) -> dict:
    """The peak resident set (MiB) of a fresh Python process running `entry` once
    (/proc/self/status VmHWM, reset just before the call), its RSS before the call (imports,
    CUDA context) and the rise over it. Not ru_maxrss: Linux carries it over fork and exec,
    so a child of this pytest process would start at pytest's own peak."""
    code = (f"import sys; sys.path[:0] = [{str(BENCHES)!r}, {str(REPO)!r}]; import bench_cyclegan; "
            f"bench_cyclegan._child_peak_rss({entry!r}, {str(checkpoint)!r}, {str(slide)!r}, {str(folder)!r}, "
            f"{str(device)!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def _bench_translate(benchmark, device: str, generators: Path, slides, tmp_path: Path, rounds: int, warmup: int):
    side = slide_side(device)
    slide = slides(side)
    device = torch.device(device)
    entries = translate_entries(generators, slide, tmp_path, device)
    # Peak memory first, each entry in a process of its own (this also brings the slide and
    # the checkpoint into the page cache for the timed calls alike).
    memory = {name: peak_rss(name, generators, slide, tmp_path, device) for name in entries}
    if device.type == "cuda":
        for name, run in entries.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            run()
            torch.cuda.synchronize()
            memory[name]["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        entries = {name: synchronised(run) for name, run in entries.items()}
    rounds, warmup = _rounds(rounds, warmup)
    where = "GPU" if device.type == "cuda" else "CPU"
    bench_interleaved(_OnePedanticRound(benchmark),
                      f"translate, {side} x {side} RGB slide (unet_128 ngf {WIDTH}; tile {TILE}, overlap {OVERLAP}, "
                      f"batch {TILE_BATCH}), {where}", entries, rounds=rounds, warmup=warmup)
    megapixels = side * side / 1e6
    benchmark.extra_info["megapixels"] = megapixels
    benchmark.extra_info["megapixels_per_second"] = {
        name: round(megapixels / stats["median"], 3) for name, stats in benchmark.extra_info["interleaved"].items()}
    benchmark.extra_info["peak_memory"] = memory


def test_translate_cpu(benchmark, generators, slides, tmp_path):
    _bench_translate(benchmark, "cpu", generators, slides, tmp_path, rounds=3, warmup=0)


@needs_cuda
def test_translate_cuda(benchmark, generators, slides, tmp_path):
    _bench_translate(benchmark, "cuda", generators, slides, tmp_path, rounds=10, warmup=1)
