"""The committed reference streams of tests/golden/ decode to the recorded pixels.

An accidental change of the container format, of the decoder's numbers or of
the shipped weights fails here. After a deliberate one, rewrite the streams
with ``python scripts/make_golden.py`` and commit them with the change.
"""

import hashlib
import json
from pathlib import Path

import pytest

from codec import bitstream
from codec.weights import WEIGHTS_DIR, sha256_file
from tests.support.images import decoded_sha256
from tests.support.threads import torch_threads

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
RECORD = json.loads((GOLDEN_DIR / "golden.json").read_text())
REGENERATE = "if the change is deliberate, run: python scripts/make_golden.py"


class TestGoldenStreams:
    def test_made_with_the_shipped_weights(self):
        current = sha256_file(WEIGHTS_DIR / RECORD["weights_file"])
        assert current == RECORD["weights_sha256"], f"the shipped {RECORD['weights_file']} changed; {REGENERATE}"

    def test_the_set_covers_lambda_k_and_bias_indices(self):
        streams = RECORD["streams"].values()
        assert any(s["lambda_k"] for s in streams) and any(s["bias_indices"] for s in streams)

    @pytest.mark.parametrize("name", sorted(RECORD["streams"]))
    def test_stream_is_unchanged_and_repacks_byte_for_byte(self, name):
        entry = RECORD["streams"][name]
        data = (GOLDEN_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["stream_sha256"]
        payload = bitstream.unpack(data)
        assert bitstream.pack(payload) == data, f"the container format changed; {REGENERATE}"
        assert list(payload.lambda_k) == entry["lambda_k"] and list(payload.bias_indices) == entry["bias_indices"]

    @pytest.mark.parametrize("name", sorted(RECORD["streams"]))
    def test_decodes_to_the_recorded_pixels(self, name):
        from codec.pipeline import decode

        entry = RECORD["streams"][name]
        with torch_threads():
            image = decode((GOLDEN_DIR / entry["file"]).read_bytes(), device="cpu").image
        assert decoded_sha256(image) == entry["decoded_sha256"], f"the decoder's output changed; {REGENERATE}"
