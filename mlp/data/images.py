"""Reading a folder of user images (PNG, JPEG, ...) into a model's input size and channels."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlp.data.common import DataError

RESIZE_MODES = ("stretch", "crop")
# Pixels per image decoded at most (8000 x 8000): an image's size is read from its header before
# it is decoded, so a huge one is skipped instead of taking gigabytes (a 12000 x 12000 PNG took
# 1.9 GB); experiments.predict's --max_pixels.
MAX_PIXELS = 64_000_000


def _to_8bit(img: Image.Image) -> Image.Image:
  """16-bit / 32-bit integer and float greyscale images -> 8-bit "L"."""
  a = np.asarray(img, dtype=np.float64)
  if img.mode.startswith("I;16"):
    a = a / 257.0
  elif img.mode == "F" and a.size and np.nanmax(a) <= 1.0:
    a = a * 255.0
  elif a.size and np.nanmax(a) > 255:
    a = a / 257.0
  return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def convert(
  img: Image.Image, size: tuple[int, int], channels: int, resize: str = "stretch"
) -> np.ndarray:
  """One PIL image -> uint8 (H, W, channels): EXIF-rotated, alpha over white, resized."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  if resize not in RESIZE_MODES:
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
  h, w = size
  img = ImageOps.exif_transpose(img)
  if img.mode in ("I", "F") or img.mode.startswith("I;16"):
    img = _to_8bit(img)
  if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, rgba)
  img = img.convert("L" if channels == 1 else "RGB")
  if img.size != (w, h):
    if resize == "crop":
      img = ImageOps.fit(img, (w, h), method=Image.Resampling.LANCZOS)
    else:
      img = img.resize((w, h), Image.Resampling.LANCZOS)
  a = np.asarray(img, dtype=np.uint8)
  return a[..., None] if channels == 1 else a


def load_folder(
  folder: str | os.PathLike,
  *,
  size: tuple[int, int],
  channels: int,
  resize: str = "stretch",
  max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, list[str]]:
  """Images in ``folder`` (sorted by name; not recursive) -> (uint8 (n, H, W, C), file names).

  Any size and mode Pillow reads is converted to ``size`` = (H, W) and ``channels`` (1 grey,
  3 RGB); ``resize`` is "stretch" (whole image, aspect ignored) or "crop" (centre crop to the
  aspect, then resize). Files Pillow cannot read, and images of more than ``max_pixels`` pixels,
  are skipped with a warning. ``folder`` may also be a single image file.
  """
  batches = list(
    iter_folder(folder, size=size, channels=channels, resize=resize, max_pixels=max_pixels)
  )
  return np.concatenate([x for x, _ in batches]), [n for _, names in batches for n in names]


def iter_folder(
  folder: str | os.PathLike,
  *,
  size: tuple[int, int],
  channels: int,
  resize: str = "stretch",
  batch_size: int = 1 << 30,
  max_pixels: int = MAX_PIXELS,
) -> Iterator[tuple[np.ndarray, list[str]]]:
  """:func:`load_folder` in batches of up to ``batch_size`` readable images, read as they are
  needed: a folder of any size streams in bounded memory. An image of more than ``max_pixels``
  pixels is skipped with a warning before it is decoded."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  if resize not in RESIZE_MODES:
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
  folder = Path(folder)
  if folder.is_file():
    paths = [folder]
  elif folder.is_dir():
    paths = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
  else:
    raise DataError(f"image folder {folder} not found; pass an existing folder of images.")
  arrays, names, seen = [], [], 0
  for p in paths:
    try:
      with warnings.catch_warnings():  # Pillow's own bomb warning: the cap below says it better
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(p)  # (reads the header: the size is known before decoding)
      with img:
        if img.width * img.height > max_pixels:
          warnings.warn(
            f"skipping {p}: {img.width}x{img.height} is {img.width * img.height:,} pixels, more "
            f"than the {max_pixels:,} allowed (--max_pixels)",
            stacklevel=2,
          )
          continue
        img.load()
        arrays.append(convert(img, size, channels, resize))
    except Image.DecompressionBombError as e:
      warnings.warn(f"skipping {p}: {e}", stacklevel=2)  # (over Pillow's own limit)
      continue
    except (UnidentifiedImageError, OSError, ValueError) as e:
      warnings.warn(f"skipping {p}: not a readable image ({e})", stacklevel=2)
      continue
    names.append(p.name)
    if len(arrays) == batch_size:
      seen += len(arrays)
      yield np.stack(arrays), names
      arrays, names = [], []
  if arrays:
    seen += len(arrays)
    yield np.stack(arrays), names
  if not seen:
    raise DataError(
      f"no readable images (PNG, JPEG, ...) in {folder}; put the images to classify there."
    )
