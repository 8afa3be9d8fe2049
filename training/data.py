"""Training crops from photographs held in memory.

Large JPEG sources are downsampled first (box filter) to soften their
compression artefacts; tiny images are dropped. Each training step draws its
crops from a generator seeded by (seed, step), so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _prepare(path: Path, crop: int, max_side: int) -> np.ndarray | None:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if path.suffix.lower() in {".jpg", ".jpeg"} and min(w, h) >= 2 * crop:
            # at least 2x down for JPEG sources, more for huge ones
            f = max(2.0, max(w, h) / max_side)
            im = im.resize((max(crop, round(w / f)), max(crop, round(h / f))), Image.Resampling.BOX)
        elif max(w, h) > max_side:
            f = max(w, h) / max_side
            im = im.resize((max(crop, round(w / f)), max(crop, round(h / f))), Image.Resampling.BOX)
        if min(im.size) < crop:
            return None
        return np.asarray(im, dtype=np.uint8).copy()


class CropSampler:
    """Random crops with flips, deterministic per (seed, step).

    Args:
        roots: list of folders. Searched recursively for images.
        crop: int. Crop side in pixels (a multiple of 64).
        max_side: int. Longest side after downsampling.
    """

    def __init__(self, roots: list[str | Path], crop: int = 128, max_side: int = 512, exclude: tuple[str, ...] = ()):
        self.crop = crop
        self.images: list[np.ndarray] = []
        self.sources: list[str] = []
        for root in roots:
            for p in list_images(root):
                if any(e in str(p) for e in exclude):
                    continue
                arr = _prepare(p, crop, max_side)
                if arr is not None:
                    self.images.append(arr)
                    self.sources.append(str(p))
        if not self.images:
            raise ValueError(f"no usable training images (>= {crop} px) under {roots}")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, seed: int, step: int, batch_size: int) -> torch.Tensor:
        """Returns a float32 tensor (B, 3, crop, crop) in [0, 1]."""
        rng = np.random.default_rng([seed, step])
        c = self.crop
        out = np.empty((batch_size, c, c, 3), dtype=np.uint8)
        for i in range(batch_size):
            img = self.images[rng.integers(len(self.images))]
            h, w = img.shape[:2]
            top, left = rng.integers(h - c + 1), rng.integers(w - c + 1)
            patch = img[top:top + c, left:left + c]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            if rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)


def center_crops(folder: str | Path, size: int, limit: int) -> torch.Tensor:
    """Deterministic validation set: the centre size x size crop of the first `limit` images."""
    crops = []
    for p in list_images(folder)[:limit]:
        with Image.open(p) as im:
            im = im.convert("RGB")
            w, h = im.size
            if min(w, h) < size:
                continue
            left, top = (w - size) // 2, (h - size) // 2
            crops.append(np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8))
    if not crops:
        raise ValueError(f"no validation images >= {size} px in {folder}")
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255)
