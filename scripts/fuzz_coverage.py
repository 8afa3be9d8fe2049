"""Coverage-guided fuzzing (atheris, libFuzzer) of the container parser and the decoder.

Each input is either raw bytes for ``bitstream.unpack`` and ``decode``, or,
steered by its first byte, the fields of a container that this target packs
with a valid checksum (so the mutations reach the value checks and the
entropy decoder). Anything but a ``BitstreamError`` is a finding; a crash is
reported by libFuzzer with the input that caused it. Arguments are libFuzzer's::

    python scripts/fuzz_coverage.py -atheris_runs=3000              # the short run of the test suite
    mkdir -p /tmp/corpus && cp tests/golden/*.mlic /tmp/corpus/
    python scripts/fuzz_coverage.py -max_total_time=3600 /tmp/corpus # the longer run (docs/BENCHMARKS.md)

Images are capped at 320x320 pixels here so that an input that decodes costs
milliseconds; the structured fuzzer (scripts/fuzz_decode.py) covers the
pixel limit itself.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import atheris  # noqa: E402

# Instrument metalic's own decoding code only: torch and CompressAI load plainly first.
import compressai.entropy_models  # noqa: E402,F401
import torch  # noqa: E402

torch.set_num_threads(1)
with atheris.instrument_imports(include=["codec"]):
    from codec import bitstream
    from codec.errors import BitstreamError
    from codec.pipeline import decode
    from codec.weights import load_model

MAX_PIXELS = 320 * 320
LOADED = load_model("metalic-vr")


def structured(fdp: "atheris.FuzzedDataProvider") -> bytes:
    width, height = fdp.ConsumeIntInRange(1, 400), fdp.ConsumeIntInRange(1, 400)
    h, w = -(-height // 64), -(-width // 64)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        h, w = fdp.ConsumeIntInRange(1, 16), fdp.ConsumeIntInRange(1, 16)
    lambda_k = tuple(fdp.ConsumeIntInRange(0, 0xFFFF) for _ in range(4)) if fdp.ConsumeBool() else ()
    bias = fdp.ConsumeBytes(bitstream.num_patches(width, height)) if fdp.ConsumeBool() else b""
    if len(bias) != bitstream.num_patches(width, height):
        bias = b""
    lo, hi = LOADED.backend.rate_range()
    rate_index = fdp.ConsumeIntInRange(lo, hi) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0xFFFF)
    weights_hash = LOADED.weights_hash if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeBytes(8).ljust(8, b"\0")
    count = 2 if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(1, 4)
    strings = []
    for i in range(count):
        words = fdp.ConsumeIntInRange(0, 64 if i else 512)
        strings.append(fdp.ConsumeBytes(4 * words + (fdp.ConsumeIntInRange(0, 3) if fdp.ConsumeBool() else 0)))
    return bitstream.pack(bitstream.Payload(
        model_id=LOADED.name, weights_hash=weights_hash, width=width, height=height,
        mode=fdp.ConsumeIntInRange(0, 3), rate_index=rate_index, lambda_k=lambda_k, bias_indices=bias,
        strings=tuple(strings), latent_shape=(h, w)))


def one_input(data: bytes) -> None:
    if data[:1] == b"S":
        data = structured(atheris.FuzzedDataProvider(data[1:]))
    try:
        decode(data, max_pixels=MAX_PIXELS)
    except BitstreamError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
