"""Round trips through the real rANS coder and the real container."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec import bitstream
from codec.bitstream import ImageMode
from codec.errors import BitstreamError, ImageError, ImageTooLargeError
from codec.image import load_image
from codec.pipeline import decode

from .conftest import make_image, png_bytes

ROOT = Path(__file__).resolve().parents[2]


class TestRoundTrip:
    @pytest.mark.parametrize("size", [(1, 1), (17, 31), (64, 64), (513, 769)])
    def test_decode_equals_encoder_measurement(self, encoder, size):
        w, h = size
        res = encoder.encode(png_bytes(make_image(w, h)), {"lmbda": 0.01, "preset": "fast"})
        out = decode(res.bitstream)
        assert out.image.size == (w, h)
        assert out.image.mode == "RGB"
        assert np.array_equal(out.rgb, res.reconstruction)
        assert res.metadata["bytes"] == len(res.bitstream)
        assert res.metadata["bpp"] == len(res.bitstream) * 8 / (w * h)

    @pytest.mark.parametrize("mode, stored, out_mode", [
        ("L", ImageMode.L, "L"), ("RGBA", ImageMode.RGBA, "RGB"), ("I;16", ImageMode.L16, "L")])
    def test_image_policy_modes(self, encoder, mode, stored, out_mode):
        im = make_image(40, 24, mode)
        res = encoder.encode(png_bytes(im), {"lmbda": 0.02, "preset": "fast"})
        assert bitstream.unpack(res.bitstream).mode == stored
        out = decode(res.bitstream)
        assert out.image.mode == out_mode
        assert np.array_equal(out.rgb, res.reconstruction)
        if mode != "L":
            assert res.metadata["warnings"], "a lossy conversion must be named"

    def test_rgba_is_composited_on_white(self):
        im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
        assert (load_image(png_bytes(im)).rgb == 255).all()

    def test_sixteen_bit_is_rounded_not_truncated(self):
        g = np.full((4, 4), 257 * 100 + 200, dtype=np.uint16)
        loaded = load_image(png_bytes(Image.fromarray(g)))
        assert (loaded.rgb == 101).all()

    def test_exif_orientation_is_applied(self):
        im = make_image(30, 20)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise on display
        import io

        b = io.BytesIO()
        im.save(b, "JPEG", exif=exif.tobytes(), quality=95)
        assert load_image(b.getvalue()).rgb.shape[:2] == (30, 20)


class TestCrossProcess:
    def test_fresh_interpreter_decodes_bit_identical(self, encoder, tmp_path):
        res = encoder.encode(png_bytes(make_image(96, 80)), {"lmbda": 0.005, "preset": "fast"})
        (tmp_path / "a.mlic").write_bytes(res.bitstream)
        p = bitstream.unpack(res.bitstream)
        backend = encoder.backend
        x = torch.from_numpy(np.asarray(make_image(96, 80))).permute(2, 0, 1)[None].float() / 255
        from codec.image import pad

        y_g, z = backend.encode_latents(pad(x), p.rate_index)
        y_hat = backend.compress_latents((y_g, z), p.rate_index)["y_hat"]
        script = (
            "import sys, torch, numpy as np\n"
            "from codec import bitstream\nfrom codec.pipeline import decode\nfrom codec.weights import load_model\n"
            "data = open(sys.argv[1], 'rb').read(); p = bitstream.unpack(data)\n"
            "net = load_model(p.model_id, 'cpu').backend.net\n"
            "torch.save(net.decompress_latents([[p.strings[0]], [p.strings[1]]], p.latent_shape), sys.argv[2])\n"
            "np.save(sys.argv[3], decode(data).rgb)\n"
        )
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(tmp_path / "y.pt"),
                        str(tmp_path / "rgb.npy")], check=True, cwd=ROOT, timeout=300)
        assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), y_hat)
        assert np.array_equal(np.load(tmp_path / "rgb.npy"), res.reconstruction)

    @pytest.mark.parametrize("threads", [1, 2, 3])
    def test_decode_is_the_same_whatever_the_thread_count(self, encoder, tmp_path, threads):
        # 320x480 is large enough that a multi-threaded synthesis splits its reductions
        res = encoder.encode(png_bytes(make_image(480, 320)), {"lmbda": 0.01, "preset": "fast"})
        (tmp_path / "a.mlic").write_bytes(res.bitstream)
        script = ("import sys, numpy as np, torch\nfrom codec.pipeline import decode\n"
                  "torch.set_num_threads(int(sys.argv[3]))\n"
                  "np.save(sys.argv[2], decode(open(sys.argv[1], 'rb').read()).rgb)\n")
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(tmp_path / "rgb.npy"),
                        str(threads)], check=True, cwd=ROOT, timeout=300)
        assert np.array_equal(np.load(tmp_path / "rgb.npy"), res.reconstruction)


class TestBadInput:
    def test_not_an_image(self, encoder):
        with pytest.raises(ImageError, match="magic bytes"):
            encoder.encode(b"hello world", {"preset": "fast"})

    def test_truncated_png(self, encoder):
        with pytest.raises(ImageError):
            encoder.encode(png_bytes(make_image(64, 64))[:200], {"preset": "fast"})

    def test_pixel_limit_before_decoding(self):
        im = Image.new("L", (5000, 5000))
        with pytest.raises(ImageTooLargeError):
            load_image(png_bytes(im), max_pixels=1000 * 1000)

    def test_foreign_weights_hash_is_refused(self, encoder):
        res = encoder.encode(png_bytes(make_image(32, 32)), {"lmbda": 0.01, "preset": "fast"})
        p = bitstream.unpack(res.bitstream)
        forged = bitstream.pack(bitstream.Payload(**{**p.__dict__, "weights_hash": b"\x00" * 8}))
        with pytest.raises(BitstreamError, match="other weights"):
            decode(forged)
