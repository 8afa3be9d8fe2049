"""The metalic container: one versioned, checksummed file per encoded image.

Pure functions ``bytes <-> Payload``, no torch: the decode endpoint, the CLI
and the client-side ``info`` can all parse a stream without a model
(as TFC ``util/packed_tensors.py``, with CompressAI ``examples/codec.py``
``get_header`` for the bit-level docs).

Layout, version 3 (versions 1 and 2 have the same layout; only the decoder's
rules differ, see :data:`VERSIONS`). All integers are unsigned big endian. ``n`` is the model id
length, ``K`` the λ_k count, ``P`` the bias count, ``S`` the number of strings
and ``L_i`` the length of string ``i``. Sections marked *flag* are present only
when their flag bit is set, so each payload has exactly one encoding::

    Size    Field              Type  Rule
    ------  -----------------  ----  ---------------------------------------------
    4       magic              -     b"MLIC"
    1       version            u8    3 (1 and 2 are still read)
    1       flags              u8    bit0: λ_k present; bit1: bias indices present;
                                     bits 2-7 zero
    1       n                  u8    1..64
    n       model id           -     ASCII registry slug, [a-z0-9._-]
    8       weights hash       -     first 8 bytes of sha256 of the weights
    2       width              u16   1..MAX_DIMENSION pixels (original, unpadded)
    2       height             u16   1..MAX_DIMENSION pixels
    1       mode               u8    ImageMode: the input's mode, decides the output
    2       rate index         u16   quantized rate parameter (λ grid or quality)
    1       K           (flag) u8    NUM_DECODER_BLOCKS (4)
    2K      λ_k         (flag) u16   K quantized decoder λ_k values
    4       P           (flag) u32   ceil(height/256) * ceil(width/256), >= 1
    P       bias idx    (flag) u8    one cluster index per 256x256 patch, row-major
    2       z height           u16   1..MAX_DIMENSION, side latent spatial shape
    2       z width            u16   1..MAX_DIMENSION
    1       S                  u8    1..8
    S times, for i = 0..S-1:
      4     L_i                u32   length of string i
      L_i   string i           -     entropy-coded bytes (for example y, then z)
    4       CRC32              u32   zlib.crc32 of every byte before it

Fixed overhead: ``31 + n + 4*S`` bytes (39 + n for the usual y and z strings),
plus ``1 + 2K`` with λ_k and ``4 + P`` with bias indices.

:func:`unpack` is a strict parser. It works in three steps so that each kind of
damage gets the error that names it:

1. **Framing.** Check magic and version, then walk only the length fields
   (n, K, P, S, L_i) to find where the checksum must sit. Every length is
   checked against the bytes left *before* anything is sliced, so a declared
   length of 4 GiB costs nothing. A short stream fails here with
   ``"truncated: ..."``, a long one with ``"trailing bytes: ..."``.
2. **Checksum.** A bit flip outside the length fields fails here, before any field value
   is trusted, so it is reported as corruption and not as, say, a bad mode.
3. **Values.** The fields go through :class:`Payload` validation, the same
   checks :func:`pack` relies on, plus the container's own rules (flag bits,
   K, P). Only streams that are intact but invalid (a foreign or buggy
   encoder, a crafted file) reach these errors.

Every failure raises :class:`~codec.errors.BitstreamError` with a one-line reason.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from codec.constants import MAX_DIMENSION, NUM_DECODER_BLOCKS, PATCH_SIZE
from codec.errors import BitstreamError

__all__ = [
    "MAGIC",
    "MAX_STRINGS",
    "VERSION",
    "VERSIONS",
    "ImageMode",
    "Payload",
    "describe",
    "header_size",
    "num_patches",
    "pack",
    "unpack",
]

MAGIC = b"MLIC"
"""Bytes. The first four bytes of every metalic container."""

VERSION = 3
"""Container format version written by :func:`pack` for a new stream."""

VERSIONS = (1, 2, 3)
"""The versions :func:`unpack` reads. All have one layout; they differ in rules the decoder
follows. Version 1: y's scale indexes from the float32 hyper-synthesis, which gives other
indexes on other CPU kernels, so a stream may decode only on the kind of machine that made it.
Version 2: those indexes the same on every machine (:mod:`codec.models.scale_index`).
Version 3: as 2, and the synthesis' inverse GDNs and last layer in their faster forms
(:mod:`codec.layers.synthesis`), which may move a decoded value's last bit. A stream is
decoded by its own version's rules, so what it decoded to before it still decodes to."""

MAX_STRINGS = 8
"""Count. Most entropy-coded strings a container may hold (for example y and z)."""

MAX_MODEL_ID_BYTES = 64
"""Bytes. Longest model id (registry slug)."""

WEIGHTS_HASH_BYTES = 8
"""Bytes. Length of the weights hash prefix (of a sha256 digest)."""

FLAG_LAMBDA_K = 0x01
"""Flags bit 0: the K λ_k values are present."""

FLAG_BIAS = 0x02
"""Flags bit 1: the bias-cluster indices are present."""

_KNOWN_FLAGS = FLAG_LAMBDA_K | FLAG_BIAS
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_MODEL_ID_RE = re.compile(rb"[a-z0-9._-]{1,%d}" % MAX_MODEL_ID_BYTES)

# Fixed-size runs of the layout, in the order they appear.
_PREFIX = struct.Struct(">4sBBB")  # magic, version, flags, n
_IMAGE = struct.Struct(">8sHHBH")  # weights hash, width, height, mode, rate index
_LATENT = struct.Struct(">HHB")  # z height, z width, S
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_CRC = _U32
_FIXED_OVERHEAD = _PREFIX.size + _IMAGE.size + _LATENT.size + _CRC.size  # 31


class ImageMode(enum.IntEnum):
    """Mode of the input image; the decoder returns an image in the same mode.

    The network always codes 8-bit RGB. The mode records what the input was so
    the decoder can map back (see the image policy in DESIGN.md 2.5).
    """

    RGB = 0
    """8-bit RGB (PIL ``"RGB"``)."""
    L = 1
    """8-bit grayscale (PIL ``"L"``)."""
    RGBA = 2
    """8-bit RGB with alpha (PIL ``"RGBA"``)."""
    L16 = 3
    """16-bit grayscale (PIL ``"I;16"``)."""


def num_patches(width: int, height: int) -> int:
    """Number of PATCH_SIZE x PATCH_SIZE patches (and bias indices) for an image.

    Args:
        width: int. Image width in pixels, unpadded.
        height: int. Image height in pixels, unpadded.

    Returns:
        int. ``ceil(height / PATCH_SIZE) * ceil(width / PATCH_SIZE)``. Padding
        to a multiple of 64 does not change it, since PATCH_SIZE is a multiple of 64.
    """
    return -(-height // PATCH_SIZE) * -(-width // PATCH_SIZE)


def _as_uint(name: str, value: Any, high: int, low: int = 0) -> int:
    # operator.index accepts numpy integers but refuses floats; bool is an
    # int subclass, and True as a width is always a caller bug.
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise BitstreamError(f"{name} must be an integer, got {type(value).__name__}")
    value = value.__index__()
    if not low <= value <= high:
        raise BitstreamError(f"{name} {value} outside {low}..{high}")
    return value


def _as_bytes(name: str, value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


@dataclass(frozen=True)
class Payload:
    """Everything the decoder needs besides the model: the content of one container.

    Fields are validated (and bytes-like or sequence values normalized to
    ``bytes`` and ``tuple``) on construction, so a ``Payload`` that exists can
    always be packed, and :func:`unpack` accepts whatever :func:`pack` writes.

    Args:
        model_id: str. Registry slug of the model, ASCII ``[a-z0-9._-]``, 1..64 bytes.
        weights_hash: bytes. Exactly 8 bytes: the first 8 of the weights' sha256.
        width: int. Original image width in pixels, 1..MAX_DIMENSION.
        height: int. Original image height in pixels, 1..MAX_DIMENSION.
        mode: ImageMode. The input's mode (an int is converted).
        rate_index: int. uint16, the quantized rate parameter (λ index on the
            log grid, or the quality level of a fixed-rate backend).
        lambda_k: tuple[int, ...]. Empty, or NUM_DECODER_BLOCKS uint16 values:
            the quantized decoder λ_k (M4).
        bias_indices: bytes. Empty, or one uint8 cluster index per 256x256
            patch, row-major, :func:`num_patches` bytes (M6).
        strings: tuple[bytes, ...]. 1..8 entropy-coded strings (for example y
            then z); each may be empty and at most 2**32 - 1 bytes.
        latent_shape: tuple[int, int]. (h, w) of the side latent z, each 1..MAX_DIMENSION.
        version: int. The container version, one of :data:`VERSIONS` (new streams: :data:`VERSION`).

    Raises:
        BitstreamError: a field has the wrong type or is out of range.
    """

    model_id: str
    weights_hash: bytes
    width: int
    height: int
    mode: ImageMode
    rate_index: int
    lambda_k: tuple[int, ...]
    bias_indices: bytes
    strings: tuple[bytes, ...]
    latent_shape: tuple[int, int]
    version: int = VERSION

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: normalize in place once

        if type(self.version) is not int or self.version not in VERSIONS:
            raise BitstreamError(f"container version {self.version!r} is not one of {VERSIONS}")
        if not isinstance(self.model_id, str):
            raise BitstreamError(f"model id must be str, got {type(self.model_id).__name__}")
        if not self.model_id.isascii() or not _MODEL_ID_RE.fullmatch(self.model_id.encode()):
            raise BitstreamError(
                f"model id {self.model_id[:80]!r} is not a slug of 1..{MAX_MODEL_ID_BYTES} "
                "characters [a-z0-9._-]"
            )
        weights_hash = _as_bytes("weights hash", self.weights_hash)
        if len(weights_hash) != WEIGHTS_HASH_BYTES:
            raise BitstreamError(
                f"weights hash has {len(weights_hash)} bytes, expected {WEIGHTS_HASH_BYTES}"
            )
        put("weights_hash", weights_hash)
        width = _as_uint("width", self.width, MAX_DIMENSION, low=1)
        height = _as_uint("height", self.height, MAX_DIMENSION, low=1)
        put("width", width)
        put("height", height)
        mode = _as_uint("image mode", self.mode, _U32_MAX)
        if mode not in ImageMode._value2member_map_:
            raise BitstreamError(f"unknown image mode {mode}")
        put("mode", ImageMode(mode))
        put("rate_index", _as_uint("rate index", self.rate_index, _U16_MAX))

        try:
            lambda_k = tuple(self.lambda_k)
        except TypeError:
            raise BitstreamError("lambda_k must be a sequence of integers") from None
        if len(lambda_k) not in (0, NUM_DECODER_BLOCKS):
            raise BitstreamError(
                f"lambda_k count K={len(lambda_k)}, expected 0 or {NUM_DECODER_BLOCKS}"
            )
        lambda_k = tuple(_as_uint(f"lambda_k[{i}]", v, _U16_MAX) for i, v in enumerate(lambda_k))
        put("lambda_k", lambda_k)

        bias_indices = _as_bytes("bias indices", self.bias_indices)
        expected = num_patches(width, height)
        if len(bias_indices) not in (0, expected):
            raise BitstreamError(
                f"bias count {len(bias_indices)}, expected 0 or {expected} "
                f"(one per {PATCH_SIZE}x{PATCH_SIZE} patch of a {width}x{height} image)"
            )
        put("bias_indices", bias_indices)

        if isinstance(self.strings, (bytes, bytearray, memoryview, str)):
            # A lone bytes object is iterable (of ints): refuse it rather than
            # produce a confusing per-element error.
            raise BitstreamError("strings must be a sequence of bytes, got one bytes object")
        try:
            strings = tuple(self.strings)
        except TypeError:
            raise BitstreamError("strings must be a sequence of bytes") from None
        if not 1 <= len(strings) <= MAX_STRINGS:
            raise BitstreamError(f"number of strings {len(strings)} outside 1..{MAX_STRINGS}")
        strings = tuple(_as_bytes(f"string {i}", s) for i, s in enumerate(strings))
        for i, s in enumerate(strings):
            if len(s) > _U32_MAX:
                raise BitstreamError(f"string {i} has {len(s)} bytes, more than a u32 length")
        put("strings", strings)

        try:
            latent_shape = tuple(self.latent_shape)
        except TypeError:
            raise BitstreamError("latent shape must be a (height, width) pair") from None
        if len(latent_shape) != 2:
            raise BitstreamError(f"latent shape has {len(latent_shape)} dimensions, expected 2")
        put(
            "latent_shape",
            (
                _as_uint("latent height", latent_shape[0], MAX_DIMENSION, low=1),
                _as_uint("latent width", latent_shape[1], MAX_DIMENSION, low=1),
            ),
        )


def header_size(payload: Payload) -> int:
    """Container bytes spent on everything but the string contents.

    Args:
        payload: Payload. The payload to measure.

    Returns:
        int. ``len(pack(payload)) - sum(map(len, payload.strings))``: the side
        information and framing cost, including the model id, λ_k, bias
        indices, length fields and checksum.
    """
    size = _FIXED_OVERHEAD + len(payload.model_id) + _U32.size * len(payload.strings)
    if payload.lambda_k:
        size += _U8.size + 2 * len(payload.lambda_k)
    if payload.bias_indices:
        size += _U32.size + len(payload.bias_indices)
    return size


def pack(payload: Payload) -> bytes:
    """Serialize a payload into a container of its version (:data:`VERSION` unless it says otherwise).

    Args:
        payload: Payload. Already validated by its constructor.

    Returns:
        bytes. The container, ``header_size(payload) + sum(len(s) for s in strings)``
        bytes long, ending with its CRC32.

    Raises:
        BitstreamError: ``payload`` is not a :class:`Payload`.
    """
    if type(payload) is not Payload:
        raise BitstreamError(f"pack expects a Payload, got {type(payload).__name__}")
    p = payload
    flags = (FLAG_LAMBDA_K if p.lambda_k else 0) | (FLAG_BIAS if p.bias_indices else 0)
    model_id = p.model_id.encode("ascii")
    out = bytearray(_PREFIX.pack(MAGIC, p.version, flags, len(model_id)))
    out += model_id
    out += _IMAGE.pack(p.weights_hash, p.width, p.height, p.mode, p.rate_index)
    if p.lambda_k:
        out += struct.pack(f">B{len(p.lambda_k)}H", len(p.lambda_k), *p.lambda_k)
    if p.bias_indices:
        out += _U32.pack(len(p.bias_indices))
        out += p.bias_indices
    out += _LATENT.pack(*p.latent_shape, len(p.strings))
    for s in p.strings:
        out += _U32.pack(len(s))
        out += s
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


class _Reader:
    """Bounds-checked cursor over a memoryview: every read checks the bytes left first."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.view) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.left:
            raise BitstreamError(f"truncated: {what} needs {n} bytes, {self.left} left")
        chunk = self.view[self.pos : self.pos + n]  # a view: no copy, no allocation of n
        self.pos += n
        return chunk

    def read(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size, what))


def unpack(data: bytes | bytearray | memoryview) -> Payload:
    """Parse and validate a container written by :func:`pack`.

    See the module docstring for the order of checks. Nothing larger than
    the input is ever allocated, whatever lengths the stream declares.

    Args:
        data: bytes-like. The whole container, exactly: no bytes may follow the checksum.

    Returns:
        Payload. Equal to the payload that was packed; ``pack(unpack(data)) == data``.

    Raises:
        BitstreamError: with a one-line reason, for any input that is not a
            valid container of a version it reads. No other exception escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        raise BitstreamError(f"unreadable buffer ({exc})") from None
    try:
        return _parse(view)
    except BitstreamError:
        raise
    except (struct.error, ValueError, TypeError, IndexError, OverflowError) as exc:
        # The reader checks every bound first, so this is a safety net: a parser
        # bug must still surface as a bad stream (a 4xx), never a crash.
        raise BitstreamError(f"malformed container ({type(exc).__name__}: {exc})") from None


def _parse(view: memoryview) -> Payload:
    # Step 1: framing. Magic and version first: a foreign file or a future
    # version may not even have its checksum where version 1 puts it.
    if len(view) == 0:
        raise BitstreamError("not a metalic bitstream (empty input)")
    head = bytes(view[: len(MAGIC)])
    if head != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise BitstreamError(f"truncated: {len(view)} bytes, the magic alone is {len(MAGIC)}")
        raise BitstreamError("not a metalic bitstream (bad magic)")
    if len(view) == len(MAGIC):
        raise BitstreamError("truncated: no version byte after the magic")
    if view[len(MAGIC)] not in VERSIONS:
        raise BitstreamError(
            f"unsupported container version {view[len(MAGIC)]} (this reader knows "
            f"{', '.join(map(str, VERSIONS))})"
        )

    r = _Reader(view)
    _, version, flags, n = r.read(_PREFIX, "header")
    model_id = bytes(r.take(n, "model id"))
    weights_hash, width, height, mode, rate_index = r.read(_IMAGE, "image header")
    lambda_k: tuple[int, ...] = ()
    if flags & FLAG_LAMBDA_K:
        (k,) = r.read(_U8, "lambda_k count")
        lambda_k = struct.unpack(f">{k}H", r.take(2 * k, f"{k} lambda_k values"))
    else:
        k = None
    bias = memoryview(b"")
    if flags & FLAG_BIAS:
        (p,) = r.read(_U32, "bias count")
        if p > r.left:
            raise BitstreamError(f"truncated: bias indices declare {p} bytes, {r.left} left")
        bias = r.take(p, "bias indices")
    z_h, z_w, s = r.read(_LATENT, "latent header")
    strings = []
    for i in range(s):
        (length,) = r.read(_U32, f"string {i} length")
        if length > r.left:
            raise BitstreamError(f"truncated: string {i} declares {length} bytes, {r.left} left")
        strings.append(r.take(length, f"string {i}"))
    body_end = r.pos
    (stored_crc,) = r.read(_CRC, "checksum")
    if r.left:
        raise BitstreamError(f"trailing bytes: {r.left} after the checksum")

    # Step 2: checksum, before any field value is trusted.
    crc = zlib.crc32(view[:body_end])
    if crc != stored_crc:
        raise BitstreamError(
            f"checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x}): "
            "the stream is corrupted"
        )

    # Step 3: values. The container's own rules, then the Payload's.
    if flags & ~_KNOWN_FLAGS:
        raise BitstreamError(f"unknown flag bits {flags & ~_KNOWN_FLAGS:#04x}")
    if k is not None and k != NUM_DECODER_BLOCKS:
        # K=0 is spelled by clearing the flag, so each payload has one encoding.
        raise BitstreamError(f"lambda_k count K={k}, expected {NUM_DECODER_BLOCKS}")
    if flags & FLAG_BIAS and len(bias) == 0:
        raise BitstreamError("flags announce bias indices but the bias count is 0")
    return Payload(
        # latin-1 never fails to decode; the slug check then refuses non-ASCII.
        model_id=model_id.decode("latin-1"),
        weights_hash=weights_hash,
        width=width,
        height=height,
        mode=mode,
        rate_index=rate_index,
        lambda_k=lambda_k,
        bias_indices=bytes(bias),
        strings=tuple(bytes(s) for s in strings),
        latent_shape=(z_h, z_w),
        version=version,
    )


def describe(payload: Payload) -> dict[str, Any]:
    """JSON-able summary of a payload's header fields and sizes (for ``metalic info``).

    Args:
        payload: Payload. Typically ``unpack(data)``.

    Returns:
        dict. Keys: ``version``, ``model_id``, ``weights_hash`` (hex),
        ``width``, ``height``, ``mode`` (ImageMode name), ``rate_index``,
        ``lambda_k`` (list, empty if absent), ``bias_patches`` (0 if absent),
        ``latent_shape`` ([h, w]), ``string_lengths`` (list of bytes),
        ``header_bytes``, ``total_bytes`` (the container size) and ``bpp``
        (container bits per original pixel).
    """
    strings_bytes = sum(len(s) for s in payload.strings)
    total = header_size(payload) + strings_bytes
    return {
        "version": payload.version,
        "model_id": payload.model_id,
        "weights_hash": payload.weights_hash.hex(),
        "width": payload.width,
        "height": payload.height,
        "mode": payload.mode.name,
        "rate_index": payload.rate_index,
        "lambda_k": list(payload.lambda_k),
        "bias_patches": len(payload.bias_indices),
        "latent_shape": list(payload.latent_shape),
        "string_lengths": [len(s) for s in payload.strings],
        "header_bytes": header_size(payload),
        "total_bytes": total,
        "bpp": total * 8 / (payload.width * payload.height),
    }
