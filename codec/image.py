"""Reading input images under one written policy, and padding for the network.

The policy (also in the README):

* Formats: PNG, JPEG, WebP, BMP, TIFF, recognised by their magic bytes, not
  by a file name or a declared content type.
* Size: width and height at least 1, at most :data:`MAX_DIMENSION`, and at most
  ``max_pixels`` pixels, checked from the header before any pixel is decoded
  (decompression bombs never allocate).
* EXIF orientation is applied; an embedded ICC profile is converted to sRGB.
* RGB is coded as is. Grayscale (1, L, I;16, I) is coded as gray RGB and
  decoded back to 8-bit grayscale. 16-bit samples are rounded to 8 bits
  (v / 257). An alpha channel (RGBA, LA, PA, transparency in P) is composited
  on white, because metalic codes no alpha; the result then has no alpha.
  CMYK, YCbCr and LAB are converted to RGB. Float images (F) are refused.
  Every conversion that drops information is named in ``warnings``.
"""

import io
import os
import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .bitstream import ImageMode
from .constants import DEFAULT_MAX_PIXELS, MAX_DIMENSION, PAD_MULTIPLE
from .errors import ImageError, ImageTooLargeError, UnsupportedImageModeError

FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF"}
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")
"""Pillow modes rounded from 16 (or 32) bits to 8-bit gray."""

ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
"""Pillow modes composited on white (as is P with a transparency entry)."""

CONVERTED_MODES = ("P", "CMYK", "YCbCr", "LAB", "RGBX", "HSV")
"""Pillow modes converted to RGB as they are."""

SUPPORTED_MODES = frozenset({"RGB", "1", "L", *GRAY16_MODES, *ALPHA_MODES, *CONVERTED_MODES})
"""Every Pillow mode the policy accepts; anything else (F, I;16N, ...) is refused.
The service checks uploads with :func:`probe_image`, this same policy, so it accepts what the codec accepts."""


PIXEL_CEILING = int(Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS)
"""Pixels. Pillow's decompression-bomb guard refuses to open larger images, so no ``max_pixels`` reaches past it."""


def sniff_format(data: bytes) -> str | None:
    """The format named by the first bytes, or None."""
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


@dataclass
class LoadedImage:
    """An input after the policy: 8-bit RGB pixels and what was done to them."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mode: ImageMode  # what the decoder gives back: RGB or L (L16/RGBA recorded for info)
    warnings: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("empty upload")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("not a supported image (PNG, JPEG, WebP, BMP or TIFF expected by magic bytes)")
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"image exceeds the pixel limit of {min(max_pixels, PIXEL_CEILING)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read the {fmt} image: {e}") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"image has zero size ({w}x{h})")
    if w > MAX_DIMENSION or h > MAX_DIMENSION or w * h > max_pixels:
        raise ImageTooLargeError(f"image is {w}x{h}; the limit is {max_pixels} pixels and {MAX_DIMENSION} per side")
    return im


def probe_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """The check an upload passes before an encode is queued: the whole policy, as the encoder applies it.

    Format by magic bytes and the size limits from the header first (nothing
    is decoded past them), then the decode and every conversion of
    :func:`prepare_image`, so an image this accepts is one the encoder with
    the same ``max_pixels`` accepts too. ``mode`` is the upload's own.

    Raises:
        ImageError, ImageTooLargeError, UnsupportedImageModeError.
    """
    im = _open(data, max_pixels)
    info = ImageInfo(im.size[0], im.size[1], im.mode, im.format or "")
    prepare_image(im)
    return info


def _decode(im: Image.Image) -> Image.Image:
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"image data is truncated or corrupt: {e}") from None
    return im


def _to_srgb(im: Image.Image, notes: list[str]) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = ImageCms.getProfileDescription(src) or ""
        if "srgb" in desc.lower().replace(" ", ""):
            return im
        out_mode = {"CMYK": "RGB", "L": "L", "LA": "LA"}.get(im.mode, im.mode)
        dst = ImageCms.createProfile("sRGB") if out_mode in ("RGB", "RGBA") else src
        if out_mode not in ("RGB", "RGBA"):
            return im
        im = ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
        notes.append(f"ICC profile '{desc.strip()}' converted to sRGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        notes.append(f"ICC profile ignored (unreadable: {e})")
    return im


def _flatten_alpha(im: Image.Image) -> Image.Image:
    if im.mode == "La":  # Pillow converts premultiplied gray to nothing but LA
        im = im.convert("LA")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def prepare_image(im: Image.Image) -> LoadedImage:
    """Applies the image policy to an opened Pillow image."""
    notes: list[str] = []
    im = _decode(im)
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        notes.append("EXIF orientation unreadable; ignored")
    im = _to_srgb(im, notes)
    mode = im.mode
    if mode not in SUPPORTED_MODES:
        raise UnsupportedImageModeError("floating-point images are not supported" if mode == "F"
                                        else f"unsupported image mode {mode}")
    if mode in GRAY16_MODES:
        arr = np.asarray(im, dtype=np.int64)
        peak = 65535 if mode != "I" or arr.max(initial=0) > 255 else 255
        gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        if peak == 65535:
            notes.append("16-bit samples rounded to 8 bits")
        return LoadedImage(np.repeat(gray[..., None], 3, axis=2), ImageMode.L16 if peak == 65535 else ImageMode.L, notes)
    has_alpha = mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        notes.append("alpha channel composited on white (metalic codes no alpha)")
        gray = mode in ("LA", "La")
        rgb = _flatten_alpha(im)
        if gray:
            return LoadedImage(np.asarray(rgb.convert("L").convert("RGB")), ImageMode.L, notes)
        return LoadedImage(np.asarray(rgb), ImageMode.RGBA, notes)
    if mode in ("1", "L"):
        return LoadedImage(np.asarray(im.convert("L").convert("RGB")), ImageMode.L, notes)
    if mode != "RGB":
        im = im.convert("RGB")
    return LoadedImage(np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), ImageMode.RGB, notes)


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Reads bytes, a path or a Pillow image and applies the image policy.

    Raises:
        ImageError, ImageTooLargeError.
    """
    if isinstance(source, Image.Image):
        w, h = source.size
        if w < 1 or h < 1:
            raise ImageError(f"image has zero size ({w}x{h})")
        if w > MAX_DIMENSION or h > MAX_DIMENSION or w * h > max_pixels:
            raise ImageTooLargeError(f"image is {w}x{h}; the limit is {max_pixels} pixels and {MAX_DIMENSION} per side")
        return prepare_image(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                data = f.read(max_pixels * 8 + (1 << 20))
        except OSError as e:
            raise ImageError(f"cannot open {source}: {e.strerror}") from None
    else:
        data = bytes(source)
    return prepare_image(_open(data, max_pixels))


def output_image(rgb: np.ndarray, mode: ImageMode) -> Image.Image:
    """The decoded image in the mode the policy gives back (L for gray inputs, RGB otherwise)."""
    im = Image.fromarray(rgb, "RGB")
    return im.convert("L") if mode in (ImageMode.L, ImageMode.L16) else im


def pad(x, multiple: int = PAD_MULTIPLE):
    """Replicate-pads a (B, C, H, W) tensor on the right and bottom to a multiple."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    # replicate, not reflect: reflect fails when the pad exceeds the image (a 1x1 input)
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def to_tensor(rgb: np.ndarray, device="cpu"):
    import torch

    return torch.from_numpy(np.array(rgb, copy=True)).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def tensor_to_rgb(x) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] → (H, W, 3) uint8, rounded and clipped (the measured output)."""
    return x.detach().float().clamp(0, 1).mul(255).round().to("cpu").squeeze(0).permute(1, 2, 0).numpy().astype(np.uint8)
