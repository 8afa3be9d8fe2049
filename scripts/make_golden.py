"""Rewrites the reference streams of tests/golden/ with the shipped default weights.

    python scripts/make_golden.py

Run it on purpose only: when the container format, the decoder's numbers or
the shipped weights (codec/weights/metalic-vr.pt) change. tests/codec/test_golden.py
decodes every stream and compares the pixels with the sha256 recorded here, so
an accidental change of any of the three fails there. Commit the new files
with the change that made them necessary.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOLDEN_DIR = ROOT / "tests" / "golden"

FORCED_BIAS_INDEX = 3
"""Bank index written into the bias case when the encoder's search keeps none
(on an image this small it usually does), so the bias-bank decode path is pinned too."""

FORCED_LAMBDA_K_STEP = 40
"""Rate-index offsets (+40, -40, +80, -80 around the stream's own) written into the
λ_k case when the encoder's search keeps none, so the λ_k decode path is pinned too."""

CASES = {
    # name: (width, height, mode, seed, encode options)
    "rgb-64x64-fast": (64, 64, "RGB", 0, {"lmbda": 0.01, "preset": "fast"}),
    "gray-96x160-fast": (160, 96, "L", 1, {"lmbda": 0.05, "preset": "fast"}),
    "rgb-96x160-lambda-k-bias": (160, 96, "RGB", 2, {"lmbda": 0.02, "preset": "max", "refine_steps": 4,
                                                     "lambda_steps": 3, "rate_control": False}),
}


def main() -> int:
    import torch

    from codec import bitstream
    from codec.constants import DEFAULT_MODEL
    from codec.pipeline import Encoder, decode
    from codec.weights import WEIGHTS_DIR, read_manifest, sha256_file
    from tests.support.images import decoded_sha256, make_image
    from tests.support.threads import DECODE_THREADS

    # the decoded pixels depend on the CPU thread count; the test decodes with this one
    torch.set_num_threads(DECODE_THREADS)

    manifest = read_manifest()["models"][DEFAULT_MODEL]
    encoder = Encoder(DEFAULT_MODEL, device="cpu")
    record = {"model": DEFAULT_MODEL, "weights_file": manifest["file"],
              "weights_sha256": sha256_file(WEIGHTS_DIR / manifest["file"]), "streams": {}}
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name, (width, height, mode, seed, options) in CASES.items():
        png = io.BytesIO()
        make_image(width, height, mode, seed=seed).save(png, "PNG")
        data = encoder.encode(png.getvalue(), options).bitstream
        payload = bitstream.unpack(data)
        forced = options.get("bias_search", options.get("preset") == "max") and not payload.bias_indices
        if forced:
            n = bitstream.num_patches(payload.width, payload.height)
            data = bitstream.pack(bitstream.Payload(**{**payload.__dict__, "bias_indices": bytes([FORCED_BIAS_INDEX] * n)}))
        payload = bitstream.unpack(data)
        forced_k = options.get("lambda_steps", 0) > 0 and not payload.lambda_k
        if forced_k:
            r = payload.rate_index
            offsets = [FORCED_LAMBDA_K_STEP * m for m in (1, -1, 2, -2)][:bitstream.NUM_DECODER_BLOCKS]
            data = bitstream.pack(bitstream.Payload(**{**payload.__dict__, "lambda_k": tuple(r + o for o in offsets)}))
        (GOLDEN_DIR / f"{name}.mlic").write_bytes(data)
        payload = bitstream.unpack(data)
        image = decode(data).image
        image.save(GOLDEN_DIR / f"{name}.png")
        record["streams"][name] = {"file": f"{name}.mlic", "stream_sha256": hashlib.sha256(data).hexdigest(),
                                   "decoded_sha256": [decoded_sha256(image)], "reference": f"{name}.png", "options": options, "bias_forced": bool(forced),
                                   "lambda_k_forced": bool(forced_k),
                                   "lambda_k": list(payload.lambda_k), "bias_indices": list(payload.bias_indices)}
        print(f"{name}: {len(data)} bytes, λ_k {payload.lambda_k}, bias {list(payload.bias_indices)}")
    (GOLDEN_DIR / "golden.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
