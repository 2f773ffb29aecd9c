"""Fast input path for the image-list data sets (ImageNet-LT, iNaturalist 2018, Places-LT).

The reference path (:func:`datasets.imagelist.transforms`) runs the whole training transform
per image in a loader worker: full JPEG decode, RandomResizedCrop, flip, ColorJitter on the
PIL image, ToTensor, Normalize. One CPU core manages about 200 images/s that way, so a GPU
training a ResNet-50 at ~3,000 images/s needs ~15 loader cores. :class:`ImageListLoader`
splits the work:

* loader workers read the file, draw the augmentation parameters and decode + crop to
  uint8 S x S only (:func:`crop_to_uint8`). When the crop region stays at least S x S at
  1/2, 1/4 or 1/8 of the size, PIL decodes the JPEG that much smaller (DCT scaling,
  ``Image.draft``) and resizes the box to S x S in one ``Image.resize(..., box=...)`` call;
  otherwise torchvision's libjpeg-turbo decoder (the same pixels as PIL) and torch's uint8
  antialiased resize do the full-size decode and the crop-then-resize faster than PIL;
* the uint8 batch goes to the device (pinned memory on CUDA), where flip, ColorJitter and the
  normalisation run batched.

Augmentation parameters are drawn exactly as the reference training transform draws them
(same torchvision functions, same order, torch's CPU generator seeded by the per-sample seed
of :class:`datasets.common.EpochSampler`): for a given (seed, epoch, sample) the fast path
uses the reference path's crop box, flip, jitter factors and jitter order. What differs is
arithmetic only: a crop taken from a DCT-scaled decode (whose edges are filtered with the
pixels around the box rather than clamped at it) differs by a few levels; a full-size crop
matches the reference crop to +-1; ColorJitter follows torchvision's tensor formulas in float
(grey = 0.2989 R + 0.587 G + 0.114 B, clamp to [0, 1] after each op) instead of PIL's uint8
ImageEnhance (grey = 0.299 R + 0.587 G + 0.114 B, the contrast mean rounded to an integer,
rounding to uint8 after each op): about 1.3 / 255 per pixel on average.

Evaluation (Resize + CenterCrop) runs the reference PIL operations in the worker without
DCT scaling and converts on the device in ToTensor + Normalize's order, so on the CPU the
batch is bit-identical to the reference transform's.

``decode='cuda'`` moves JPEG decoding to the GPU (``torchvision.io.decode_jpeg``, nvjpeg,
batched): workers only read the bytes and the header; the main process decodes, crops and
resizes (bilinear, antialiased, as PIL) on the device. Files that are not RGB / grey JPEGs
are decoded by the worker on the CPU; a file nvjpeg rejects is decoded on the CPU in the main
process. Without CUDA or GPU decoding the loader logs one line and decodes on the CPU.
"""
from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, default_collate

from datasets.common import DataBundle, EpochSampler, apply_seeded
from datasets.imagelist import (
    CROP_RATIO,
    CROP_SCALE,
    FLIP_P,
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER,
    ImageListDataset,
)
from datasets.samplers import TrainSampler
from datasets.workers import data_loader, shutdown_workers
from utils.errors import first_line

__all__ = ["ImageListLoader", "imagelist_loader_for", "TrainRecipe", "draw_train_params",
           "dct_reduction", "crop_to_uint8", "color_jitter", "PARAMS"]

log = logging.getLogger(__name__)

# Per-sample parameter vector sent with each batch: flip (0 / 1), brightness, contrast and
# saturation factors, then the ids of the three jitter ops in the order they are applied.
PARAMS = 7
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # ids of ColorJitter.get_params' fn_idx
DECODES = ("cpu", "cuda")


# ------------------------------------------------------------------ parameter draws (workers)
@dataclass(frozen=True)
class TrainRecipe:
    """The random training augmentation of the reference recipe (:meth:`reference`)."""

    size: int
    scale: Tuple[float, float]
    ratio: Tuple[float, float]
    flip_p: float
    brightness: Optional[Tuple[float, float]]
    contrast: Optional[Tuple[float, float]]
    saturation: Optional[Tuple[float, float]]

    @classmethod
    def reference(cls, size: int) -> "TrainRecipe":
        """The reference recipe at crop ``size`` (the constants of :mod:`datasets.imagelist`
        that its torchvision transform is built from); ColorJitter's factor ranges are
        [max(0, 1 - j), 1 + j]."""
        jitter = (max(0.0, 1.0 - JITTER), 1.0 + JITTER)
        return cls(size=int(size), scale=tuple(CROP_SCALE), ratio=tuple(CROP_RATIO),
                   flip_p=FLIP_P, brightness=jitter, contrast=jitter, saturation=jitter)


def _draws(recipe: TrainRecipe, width: int, height: int):
    """The reference transform's random draws, in its order, from torch's global CPU
    generator (seeded by the caller): RandomResizedCrop.get_params, RandomHorizontalFlip's
    ``torch.rand(1) < p``, ColorJitter.get_params."""
    # get_params reads only the size of its image argument: an empty tensor of that size
    # stands in for the image (no pixels are allocated)
    i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(0, height, width),
                                                list(recipe.scale), list(recipe.ratio))
    flip = bool(torch.rand(1) < recipe.flip_p)
    fn_idx, b, c, s, _ = T.ColorJitter.get_params(recipe.brightness, recipe.contrast,
                                                  recipe.saturation, None)
    order = [int(k) for k in fn_idx if int(k) != 3]  # 3 is hue (off in the reference)
    factors = [1.0 if f is None else f for f in (b, c, s)]  # factor 1 is the identity
    return (i, j, h, w), flip, factors, order


def draw_train_params(recipe: TrainRecipe, width: int, height: int, seed: Optional[int]
                      ) -> Tuple[Tuple[int, int, int, int], torch.Tensor]:
    """Crop box ``(top, left, height, width)`` in the original ``width`` x ``height`` image
    and the :data:`PARAMS` vector of one sample, drawn as the reference transform draws them
    for the per-sample ``seed`` (None: from the unseeded global generator, as the reference
    without a seed)."""
    box, flip, factors, order = apply_seeded(lambda wh: _draws(recipe, *wh), (width, height),
                                             seed)
    return box, torch.tensor([float(flip), *factors, *order], dtype=torch.float32)


def dct_reduction(box_h: int, box_w: int, size: int) -> int:
    """The largest JPEG DCT scaling (1, 2, 4 or 8) that leaves a ``box_h`` x ``box_w``
    region at least ``size`` x ``size``, so the final resize still only shrinks it."""
    for r in (8, 4, 2):
        if min(box_h, box_w) >= size * r:
            return r
    return 1


def resized_crop(img: Image.Image, box: Tuple[int, int, int, int], size: int,
                 draft: bool = True) -> Image.Image:
    """PIL: ``box`` = (top, left, height, width) of the (not yet decoded) ``img`` resized to
    ``size`` x ``size`` RGB with PIL's antialiased bilinear filter; a JPEG is decoded at the
    reduction :func:`dct_reduction` allows when ``draft``."""
    i, j, h, w = box
    reduction = 1
    width, height = img.size
    if draft and img.format == "JPEG":
        r = dct_reduction(h, w, size)
        # draft picks the largest scale s in (8, 4, 2, 1) with s <= size // requested size;
        # width // r asks for exactly r. It returns the reduced image's box in original units.
        got = img.draft("RGB", (width // r, height // r)) if r > 1 else None
        if got is not None:
            reduction = round(width / got[1][2])
    if img.mode != "RGB":
        img = img.convert("RGB")  # as the reference's Image.open(f).convert('RGB')
    # pixel k of the reduced image covers original pixels [k * r, (k + 1) * r)
    crop = (j / reduction, i / reduction, (j + w) / reduction, (i + h) / reduction)
    return img.resize((size, size), Image.BILINEAR, box=crop)


def _chw(img: Image.Image) -> torch.Tensor:
    """uint8 3 x H x W of an RGB image (a writable copy, as ToTensor makes)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def _torch_jpeg_decoder():
    """torchvision's libjpeg-turbo decoder, or None where this torchvision has none."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision deprecates its image io from 0.29 on
        return None
    return lambda data, device="cpu": decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


_DECODE_JPEG = _torch_jpeg_decoder()


def crop_to_uint8(data: bytes, img: Image.Image, box: Tuple[int, int, int, int], size: int,
                  draft: bool = True) -> torch.Tensor:
    """uint8 3 x ``size`` x ``size``: ``box`` = (top, left, height, width) of the image file
    ``data`` (``img``: it opened by PIL, not yet decoded) resized with an antialiased bilinear
    filter.

    A JPEG whose crop allows DCT scaling (:func:`dct_reduction`) is decoded reduced by PIL
    (:func:`resized_crop`). Any other RGB / grey JPEG goes through torchvision's decoder (the
    same libjpeg-turbo pixels as PIL, without PIL's 4-byte-per-pixel buffer) and torch's uint8
    antialiased resize of the crop (PIL's BILINEAR filter to +-1; several times faster than
    PIL's resize), which reproduces the reference crop-then-resize. Other files: PIL.
    """
    i, j, h, w = box
    decode = _DECODE_JPEG
    if (decode is None or img.format != "JPEG" or img.mode not in ("RGB", "L")
            or (draft and dct_reduction(h, w, size) > 1)):
        return _chw(resized_crop(img, box, size, draft))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:  # PIL then accepts the file or raises the reference's error
        return _chw(resized_crop(img, box, size, draft))
    crop = pixels[None, :, i:i + h, j:j + w]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


# ------------------------------------------------------------------ worker side
class _Item(NamedTuple):
    index: int
    target: int
    params: torch.Tensor  # PARAMS float32
    box: Tuple[int, ...]  # (top, left, height, width, image height, image width)
    pixels: Optional[torch.Tensor]  # uint8 3 x S x S, or None: decode ``encoded`` on device
    encoded: Optional[torch.Tensor]  # uint8 bytes of a JPEG file


class _Batch(NamedTuple):
    index: torch.Tensor  # B int64
    target: torch.Tensor  # B int64
    params: torch.Tensor  # B x PARAMS float32
    boxes: torch.Tensor  # B x 6 int64
    on_device: torch.Tensor  # B bool: decode this sample's file on the device
    pixels: torch.Tensor  # (samples decoded by workers) x 3 x S x S uint8, in batch order
    encoded: torch.Tensor  # the JPEG files to decode on the device, concatenated (uint8)
    lengths: torch.Tensor  # their byte counts


def _collate(items: List[_Item]) -> _Batch:
    ready = [it.pixels for it in items if it.pixels is not None]
    files = [it.encoded for it in items if it.pixels is None]
    return _Batch(
        index=torch.tensor([it.index for it in items], dtype=torch.int64),
        target=torch.tensor([it.target for it in items], dtype=torch.int64),
        params=torch.stack([it.params for it in items]),
        boxes=torch.tensor([it.box for it in items], dtype=torch.int64),
        on_device=torch.tensor([it.pixels is None for it in items]),
        # default_collate stacks straight into shared memory inside a worker
        pixels=default_collate(ready) if ready else torch.empty(0, dtype=torch.uint8),
        encoded=torch.cat(files) if files else torch.empty(0, dtype=torch.uint8),
        lengths=torch.tensor([f.numel() for f in files], dtype=torch.int64))


class _Items(Dataset):
    """What the loader workers compute per sample (see :class:`_Item`)."""

    def __init__(self, source: ImageListDataset, train: bool, recipe: Optional[TrainRecipe],
                 eval_ops: Optional[T.Compose], device_decode: bool):
        self.source, self.train, self.recipe = source, train, recipe
        self.eval_ops, self.device_decode = eval_ops, device_decode
        self.draft = True  # DCT-scaled decoding (off only to measure what it brings)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> _Item:
        index, seed = key if isinstance(key, tuple) else (key, None)
        target = int(self.source.targets[index])
        if not self.train:
            # the reference PIL operations on the reference load: exactly its pixels
            pixels = _chw(self.eval_ops(self.source.load(index)))
            return _Item(index, target, torch.zeros(PARAMS), (0,) * 6, pixels, None)
        path = self.source.path(index)
        try:
            with open(path, "rb") as f:
                img = Image.open(f)  # reads the header only; errors as the reference's
                width, height = img.size
                box, params = draw_train_params(self.recipe, width, height, seed)
                box6 = (*box, height, width)
                f.seek(0)
                data = f.read()  # the whole file; PIL seeks back to the pixels when it decodes
                if self.device_decode and img.format == "JPEG" and img.mode in ("RGB", "L"):
                    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                    return _Item(index, target, params, box6, None, encoded)
                pixels = crop_to_uint8(data, img, box, self.recipe.size, self.draft)
        except OSError as e:  # missing, unidentified, truncated: as ImageListDataset.load
            raise self.source.image_error(path, e) from None
        return _Item(index, target, params, box6, pixels, None)


# ------------------------------------------------------------------ device side
def _grey(x: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale of a B x 3 x H x W float batch (B x 1 x H x W)."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter of a float batch in [0, 1], per sample, in place.

    ``factors`` B x 3 (brightness, contrast, saturation), ``order`` B x 3 (op ids in the order
    applied). Each op is torchvision's tensor ``_blend(img, ref, f) = clamp(f img + (1 - f)
    ref, 0, 1)`` with ref = 0 (brightness), the mean of the grey image (contrast) or the grey
    image (saturation) -- torchvision/transforms/_functional_tensor.py, adjust_brightness /
    adjust_contrast / adjust_saturation. All samples take step k together: ref is
    ``a * grey + c`` with per-sample a, c chosen by the op.
    """
    shape = (-1, 1, 1, 1)
    for k in range(order.shape[1]):
        op = order[:, k]
        f = factors.gather(1, op[:, None]).view(shape)
        grey = _grey(x)
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        a = torch.where(op == SATURATION, 1.0 - f.view(-1), 0.0).view(shape)
        c = torch.where(op == CONTRAST, 1.0 - f.view(-1), 0.0).view(shape) * mean
        x.mul_(f).addcmul_(grey, a).add_(c).clamp_(0.0, 1.0)
    return x


class ImageListLoader:
    """Batches of an :class:`ImageListDataset`, decoded to uint8 by loader workers and
    augmented / normalised on ``device`` (see the module docstring).

    Args:
        dataset: the image list (its own ``transform`` is not used).
        batch_size: batch size of this rank.
        device: where batches are built.
        train: the training augmentation (RandomResizedCrop, flip, ColorJitter), shuffled
            per epoch and padded to equal DDP shares; else Resize + CenterCrop, in order,
            every sample on exactly one rank (as :func:`datasets.loader.build_loader`).
        mean, std: normalisation of values scaled to [0, 1].
        image_size, resize_size: as :func:`datasets.imagelist.transforms`.
        seed: run seed (shuffle order and augmentation).
        rank, world_size: DDP share.
        workers: loader worker processes (0: load in this process).
        decode: 'cpu' (workers decode) or 'cuda' (training JPEGs decoded on the GPU;
            evaluation always decodes on the CPU, to stay exact).
        sampler: training only: the training sampler (:func:`datasets.samplers.build_sampler`,
            built with the same rank and world size); None: :class:`EpochSampler`.

    ``sampler`` orders the epoch: call ``sampler.set_epoch(e)`` before iterating
    and set ``sampler.start`` to resume inside an epoch; augmentation depends only on (seed,
    epoch, sample), so resuming yields the remaining batches of the uninterrupted epoch.
    Iterating yields ``(x, y)``: x float32 B x 3 x S x S normalised, y int64 B, both on
    ``device``.
    """

    def __init__(self, dataset: ImageListDataset, batch_size: int, device, train: bool,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 image_size: int = 224, resize_size: int = 256, seed: int = 0, rank: int = 0,
                 world_size: int = 1, workers: int = 0, decode: str = "cpu",
                 sampler: Optional[TrainSampler] = None):
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean / std need 3 values, got {len(mean)} / {len(std)}")
        self.device = torch.device(device)
        self.batch_size, self.train, self.image_size = batch_size, train, int(image_size)
        self.decode = decode if train else "cpu"
        self.cpu_fallbacks = 0  # files nvjpeg refused (decoded on the CPU instead)
        if self.decode == "cuda" and not _gpu_decode_works(self.device):
            self.decode = "cpu"
        recipe = TrainRecipe.reference(image_size) if train else None
        # the reference test transform before ToTensor / Normalize
        eval_ops = None if train else T.Compose([T.Resize(resize_size),
                                                 T.CenterCrop(image_size)])
        self.recipe = recipe
        shape = (1, 3, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(shape).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(shape).to(self.device)
        self.items = _Items(dataset, train, recipe, eval_ops, self.decode == "cuda")
        if sampler is not None and not train:
            raise ValueError("evaluation loaders keep the in-order EpochSampler")
        if sampler is None:
            sampler = EpochSampler(len(dataset), seed=seed, shuffle=train, rank=rank,
                                   world_size=world_size, pad=train)
        self.sampler = sampler
        self.loader = data_loader(self.items, self.sampler, batch_size, workers,
                                  pin_memory=self.device.type == "cuda", collate_fn=_collate)

    def shutdown(self) -> None:
        """Stop the worker processes (see :func:`datasets.workers.shutdown_workers`)."""
        shutdown_workers(self.loader)

    def __len__(self) -> int:
        """Batches left in this epoch (after ``sampler.start`` items)."""
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.finish(batch)

    def finish(self, batch: _Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """The device half: pixels to the device, then (training) flip + ColorJitter, then
        the normalisation."""
        y = batch.target.to(self.device, non_blocking=True)
        if batch.on_device.any():
            u8 = self._decode_on_device(batch)
        else:
            u8 = batch.pixels.to(self.device, non_blocking=True)
        if not self.train:
            # ToTensor (float / 255) then Normalize (- mean, / std): bit-identical on the CPU
            return u8.float().div_(255.0).sub_(self.mean).div_(self.std), y
        return self.augment(u8, batch.params.to(self.device, non_blocking=True)), y

    def augment(self, u8: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Flip, ColorJitter and normalise a uint8 B x 3 x S x S batch with its B x
        :data:`PARAMS` parameters (both on the device)."""
        flip = (params[:, 0] > 0.5).view(-1, 1, 1, 1)
        # flipping commutes with ColorJitter (the contrast mean ignores positions); on uint8
        # it moves a quarter of the bytes
        u8 = torch.where(flip, u8.flip(-1), u8)
        x = u8.float().div_(255.0)
        x = color_jitter(x, params[:, 1:4], params[:, 4:7].long())
        return x.sub_(self.mean).div_(self.std)

    # -------------------------------------------------------------- GPU decoding
    def _decode_on_device(self, batch: _Batch) -> torch.Tensor:
        """uint8 B x 3 x S x S on the device: worker-decoded samples copied, the others
        decoded from their JPEG bytes (nvjpeg, one batched call) and crop-resized there."""
        s, n = self.image_size, batch.index.numel()
        out = torch.empty((n, 3, s, s), dtype=torch.uint8, device=self.device)
        on_device = batch.on_device
        if batch.pixels.numel():
            rows = torch.nonzero(~on_device).view(-1).to(self.device)
            out[rows] = batch.pixels.to(self.device, non_blocking=True)
        rows = torch.nonzero(on_device).view(-1).tolist()
        files = list(torch.split(batch.encoded, batch.lengths.tolist()))
        images = self._nvjpeg(files)
        boxes = batch.boxes.tolist()
        for k, (row, data) in enumerate(zip(rows, files)):
            i, j, h, w, height, width = boxes[row]
            img = images[k] if images is not None else None
            if img is None or tuple(img.shape[1:]) != (height, width):
                out[row] = self._cpu_crop(batch, row, data, boxes[row])
                continue
            crop = img[None, :, i:i + h, j:j + w].float()
            # the same filter as PIL's BILINEAR resize (triangle, widened when shrinking)
            crop = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False,
                                 antialias=True)
            out[row] = crop[0].round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _nvjpeg(self, files: List[torch.Tensor]) -> Optional[List[Optional[torch.Tensor]]]:
        """Decoded RGB images (3 x H x W uint8 on the device); an entry is None where nvjpeg
        rejected the file."""
        from torchvision.io import ImageReadMode, decode_jpeg
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image io
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad file fails the whole call: retry one by one
                pass
            images: List[Optional[torch.Tensor]] = []
            for data in files:
                try:
                    images.append(decode_jpeg(data, mode=ImageReadMode.RGB,
                                              device=self.device))
                except RuntimeError:
                    images.append(None)
            return images

    def _cpu_crop(self, batch: _Batch, row: int, data: torch.Tensor, box6) -> torch.Tensor:
        """One file decoded and crop-resized on the CPU (nvjpeg could not)."""
        index = int(batch.index[row])
        path = self.items.source.path(index)
        if not self.cpu_fallbacks:
            log.warning("nvjpeg could not decode %s; such files are decoded on the CPU "
                        "(logged once)", path)
        self.cpu_fallbacks += 1
        try:
            raw = data.numpy().tobytes()
            pixels = crop_to_uint8(raw, Image.open(io.BytesIO(raw)), tuple(box6[:4]),
                                   self.image_size)
        except (OSError, RuntimeError) as e:  # RuntimeError: torchvision's decoder
            raise self.items.source.image_error(path, e) from None
        return pixels.to(self.device)


def _gpu_decode_works(device: torch.device) -> bool:
    """Whether torchvision can decode a JPEG on ``device``; logs one line when not."""
    why = ""
    if device.type != "cuda" or not torch.cuda.is_available():
        why = f"the device is {device}, not an available CUDA device"
    else:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(buf, "JPEG", quality=90)
        try:
            from torchvision.io import decode_jpeg
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_jpeg([torch.frombuffer(bytearray(buf.getvalue()),
                                                    dtype=torch.uint8)], device=device)[0]
            if img.shape != (3, 16, 16):
                why = f"a test image decoded to shape {tuple(img.shape)}"
        except Exception as e:  # noqa: BLE001 -- any failure means: decode on the CPU
            why = f"{type(e).__name__}: {first_line(e)}"
    if why:
        log.warning("decode 'cuda': GPU JPEG decoding unavailable (%s); decoding on the CPU",
                    why)
    return not why


# ------------------------------------------------------------------ from a DataBundle
def imagelist_loader_for(data: DataBundle, batch_size: int, device, seed: int,
                         rank: int = 0, world_size: int = 1, workers: int = 0,
                         split: str = "train", decode: str = "cpu",
                         sampler: Optional[TrainSampler] = None, image_size: int = 224,
                         resize_size: int = 256, policy: bool = False
                         ) -> Optional[ImageListLoader]:
    """An :class:`ImageListLoader` over ``data.train`` (``split='train'``: training
    augmentation), ``data.test`` (``'test'``), ``data.val`` (``'val'``) or ``data.train_eval``
    (``'train_eval'``), or None when that split is not an :class:`ImageListDataset`, or for
    training with an augmentation ``policy`` (AutoAugment / RandAugment: only the per-sample
    path applies them). The recipe is the config's: ``image_size`` / ``resize_size`` (keys of
    the same names) and the reference augmentation; mean / std from ``data.extra``;
    ``sampler``: the training sampler (None: :class:`EpochSampler`)."""
    dataset = getattr(data, split)
    if not isinstance(dataset, ImageListDataset) or (policy and split == "train"):
        return None
    extra = data.extra or {}
    return ImageListLoader(dataset, batch_size, device, train=split == "train",
                           mean=extra.get("mean", IMAGENET_MEAN),
                           std=extra.get("std", IMAGENET_STD), image_size=image_size,
                           resize_size=resize_size, seed=seed, rank=rank, world_size=world_size,
                           workers=workers, decode=decode, sampler=sampler)
