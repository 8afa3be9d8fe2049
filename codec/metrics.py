"""Image quality and rate metrics, measured the way DESIGN.md section 4 asks.

* PSNR is computed on 8-bit RGB: both images are rounded and clipped to
  ``uint8`` first, so a float reconstruction is scored exactly as the decoded
  file a user would see.
* MS-SSIM is pytorch-msssim's (Wang et al. 2003, five scales, 11x11 Gaussian
  window) on float tensors in ``[0, 255]`` with ``data_range=255``.
* Rate is the real size of a file in bits over the original pixel count.

Edge cases are decided once, here, so that every table agrees:

* Identical images have an infinite PSNR. :func:`psnr` caps it at
  :data:`PSNR_CAP_DB` so that averages over images stay finite and the JSON
  reports stay strict (JSON has no ``Infinity``).
* MS-SSIM needs a shorter side of more than :data:`MS_SSIM_MIN_SIDE` pixels
  (four 2x downsamplings of an 11-tap window). Below that :func:`ms_ssim`
  returns ``nan`` rather than silently switching to single-scale SSIM, which
  is a different metric; reports write ``nan`` as ``null``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PSNR_CAP_DB", "MS_SSIM_MIN_SIDE", "round_to_uint8", "psnr", "ms_ssim", "ms_ssim_db", "bpp"]

PSNR_CAP_DB = 100.0
"""dB. PSNR reported for identical images (and the upper bound of any PSNR)."""

MS_SSIM_MIN_SIDE = 161
"""Pixels. Smallest shorter side for which MS-SSIM is defined ((11 - 1) * 2**4 + 1)."""


def round_to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip an image to 8-bit, as a decoder writing a PNG would.

    Args:
        image: np.ndarray. HxWx3, any real dtype; values on the 0..255 scale.

    Returns:
        np.ndarray of dtype uint8, same shape. ``uint8`` input is returned as is.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"expected a numeric image, got dtype {image.dtype}")
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = round_to_uint8(a), round_to_uint8(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio between two 8-bit RGB images, in dB.

    The mean squared error is taken over all pixels and all three channels
    (one number per image, as CompressAI and the JPEG-AI CTC report it).

    Args:
        a: np.ndarray. HxWx3 reference; non-uint8 input is rounded and clipped.
        b: np.ndarray. HxWx3 reconstruction, same shape.

    Returns:
        float. ``10 log10(255^2 / MSE)``, at most :data:`PSNR_CAP_DB`
        (identical images give exactly the cap).
    """
    a, b = _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM between two 8-bit RGB images, in ``[0, 1]``.

    Args:
        a: np.ndarray. HxWx3 reference; non-uint8 input is rounded and clipped.
        b: np.ndarray. HxWx3 reconstruction, same shape.

    Returns:
        float. MS-SSIM averaged over the three channels, or ``nan`` when the
        shorter side is below :data:`MS_SSIM_MIN_SIDE` (undefined there).
    """
    a, b = _check_pair(a, b)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return float("nan")

    # torch only here: psnr and bpp stay importable where torch is not (the SDK-side test codec)
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        # float32: pytorch-msssim builds its Gaussian window in float32 and
        # conv2d refuses mixed dtypes.
        return torch.from_numpy(np.array(x, copy=True)).permute(2, 0, 1).unsqueeze(0).to(torch.float32)

    with torch.no_grad():
        value = _ms_ssim(as_tensor(a), as_tensor(b), data_range=255.0)
    return float(value)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the ``-10 log10(1 - MS-SSIM)`` scale used in RD plots.

    Args:
        value: float. An MS-SSIM value in ``[0, 1]`` (``nan`` passes through).

    Returns:
        float. dB, capped at :data:`PSNR_CAP_DB` when ``value`` is 1.
    """
    if math.isnan(value):
        return value
    if value >= 1.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, -10.0 * math.log10(1.0 - value))


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a file of ``num_bytes`` for a ``width`` x ``height`` image.

    Args:
        num_bytes: int. Real size of the whole file, headers included.
        width: int. Original image width in pixels (before any padding).
        height: int. Original image height in pixels.

    Returns:
        float. ``num_bytes * 8 / (width * height)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be non-negative, got {num_bytes}")
    return num_bytes * 8.0 / (width * height)
