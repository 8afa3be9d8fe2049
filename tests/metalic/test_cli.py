"""The ``metalic`` command: encode, decode and info in subprocesses, as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.support.images import image_in_mode, make_image

ROOT = Path(__file__).resolve().parents[2]


class TestCLI:
    def run(self, *args, **kw):
        return subprocess.run([sys.executable, "-m", "metalic", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=600, **kw)

    def test_encode_decode_info(self, tmp_path):
        make_image(70, 50).save(tmp_path / "in.png")
        r = self.run("encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "a.mlic"), "--lmbda", "0.01",
                     "--preset", "fast", "--json")
        assert r.returncode == 0, r.stderr
        meta = json.loads(r.stdout)
        assert {"bpp", "psnr", "bytes", "width", "height", "seconds"} <= set(meta)
        assert meta["bytes"] == (tmp_path / "a.mlic").stat().st_size
        assert meta["bpp"] == meta["bytes"] * 8 / (70 * 50)
        r = self.run("decode", str(tmp_path / "a.mlic"), "-o", str(tmp_path / "out.png"))
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / "out.png").size == (70, 50)
        r = self.run("info", str(tmp_path / "a.mlic"))
        assert json.loads(r.stdout)["width"] == 70

    def test_the_crafted_57_byte_stream_of_issue_11_exits_2_without_a_crash(self, tmp_path):
        from tests.support.crafted import StreamForge, issue_11_stream

        forge = StreamForge()
        (tmp_path / "crafted.mlic").write_bytes(issue_11_stream(forge))
        symbols = forge.backend.net.M * 256 * 256  # M channels of the y grid of a 4096x4096 image
        r = self.run("decode", str(tmp_path / "crafted.mlic"), "-o", str(tmp_path / "out.png"))
        assert r.returncode == 2, (r.returncode, r.stderr)  # was -11 (SIGSEGV) after allocating 840 MB
        assert f"string 0 (for {symbols} symbols) has 4 bytes" in r.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "out.png").exists()

    def test_bad_input_exits_2_with_one_line(self, tmp_path):
        (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        r = self.run("encode", str(tmp_path / "junk.png"), "-o", str(tmp_path / "x.mlic"))
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr
        (tmp_path / "bad.mlic").write_bytes(b"MLIC\x07rest")
        r = self.run("decode", str(tmp_path / "bad.mlic"), "-o", str(tmp_path / "y.png"))
        assert r.returncode == 2 and "version" in r.stderr
        r = self.run("encode", str(tmp_path / "junk.png"), "-o", str(tmp_path / "x.mlic"), "--bpp", "-3")
        assert r.returncode == 2
        image_in_mode(8, 8, "F").save(tmp_path / "float.tif")
        r = self.run("encode", str(tmp_path / "float.tif"), "-o", str(tmp_path / "x.mlic"), "--preset", "fast")
        assert r.returncode == 2 and "floating-point" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    def test_tiny_images_with_a_bpp_target_encode_as_close_as_they_get(self, tmp_path):
        # the header alone is hundreds of bpp: this used to end in "ValueError: math domain error", exit 1
        for w, h in ((1, 1), (2, 3)):
            make_image(w, h).save(tmp_path / "tiny.png")
            r = self.run("encode", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "tiny.mlic"), "--bpp", "0.5",
                         "--json")
            assert r.returncode == 0, r.stderr
            meta = json.loads(r.stdout, parse_constant=_not_json)
            assert (meta["width"], meta["height"]) == (w, h)
            assert meta["target_reached"] is False and any("out of reach" in n for n in meta["warnings"])
            assert meta["ms_ssim"] is None  # undefined on an image this small; JSON has no NaN
            r = self.run("decode", str(tmp_path / "tiny.mlic"), "-o", str(tmp_path / "tiny_hat.png"))
            assert r.returncode == 0 and Image.open(tmp_path / "tiny_hat.png").size == (w, h)


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")
