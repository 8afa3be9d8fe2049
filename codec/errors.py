"""The one exception hierarchy of the codec library.

Every error a caller can cause (bad image, bad bitstream, bad options) derives
from :class:`MetalicError` and from :class:`ValueError`, so that the CLI, the
worker and the service map them to a clear message and a 4xx, never a crash.
"""


class MetalicError(Exception):
    """Base class of every error the codec library raises on purpose."""

    #: Stable machine-readable type, used by the service in problem+json.
    type = "metalic-error"


class BitstreamError(MetalicError, ValueError):
    """A container is malformed, truncated, foreign or fails its checksum."""

    type = "invalid-bitstream"


class ImageError(MetalicError, ValueError):
    """An input image cannot be read or breaks the image policy."""

    type = "invalid-image"


class ImageTooLargeError(ImageError):
    """An input image has more pixels (or bytes) than the configured limit."""

    type = "image-too-large"


class UnsupportedImageModeError(ImageError):
    """An input image's pixel format is one the image policy refuses (float samples, ...)."""

    type = "unsupported-image-mode"


class OptionsError(MetalicError, ValueError):
    """Encode options are absurd or contradictory."""

    type = "invalid-options"


class ModelError(MetalicError, ValueError):
    """A model name is unknown, or its weights are missing or fail their hash."""

    type = "model-error"
