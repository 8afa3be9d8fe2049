"""Constants shared by the codec, each with its unit."""

PAD_MULTIPLE = 64
"""Pixels. Images are padded (edge replicate) to a multiple of this before analysis."""

PATCH_SIZE = 256
"""Pixels. Side of the square patches that carry one bias-cluster index (M6)."""

NUM_BIAS_CLUSTERS = 256
"""Count. Bias bank rows; row 0 is the all-zero offset (the trained biases)."""

NUM_DECODER_BLOCKS = 4
"""Count. K, the number of decoder blocks each modulated by its own λ_k (M4)."""

LAMBDA_MIN = 1e-4
"""Dimensionless. Smallest λ the container can express (rate parameter grid)."""

LAMBDA_MAX = 1.0
"""Dimensionless. Largest λ the container can express."""

LAMBDA_LEVELS = 65535
"""Count. λ is stored as a uint16 index on a log grid over [LAMBDA_MIN, LAMBDA_MAX]."""

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Pixels. Default largest accepted image (width x height)."""

MAX_DIMENSION = 16384
"""Pixels. Largest accepted width or height, whatever the pixel limit."""

DEFAULT_MODEL = "metalic-vr"
"""Registry slug of the shipped default model."""
