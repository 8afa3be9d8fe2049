"""``metalic demo``: metalic and JPEG, WebP, AVIF at the same bytes, checked against the files it writes."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import baselines
from codec.metrics import ms_ssim, psnr
from metalic import cli, crop_sheet
from metalic.demo import Row, verdict
from tests.support.images import make_image

ROOT = Path(__file__).resolve().parents[2]
AVAILABLE = baselines.available()
ROW = re.compile(r"^\s*(?P<target>[\d.]+)?\s+(?P<codec>metalic|jpeg|webp|avif)\s+(?P<setting>\S+)\s+(?P<bytes>\d+)\s+"
                 r"(?P<bpp>[\d.]+)\s+(?P<psnr>[\d.]+)\s+(?P<ms_ssim>[\d.]+|-)(?P<over>\s+over budget.*)?$")


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metalic", "demo", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)


def table(stdout: str) -> dict[float, list[dict]]:
    """Target -> its rows, parsed from what the demo printed."""
    rows: dict[float, list[dict]] = {}
    target = None
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            if m["target"]:
                target = float(m["target"])
            rows.setdefault(target, []).append(m.groupdict())
    return rows


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class TestDemoOnYourImage:
    """One real run on a small generated image, through the real codec; every printed figure re-measured."""

    WIDTH, HEIGHT = 200, 168  # the shorter side is above MS-SSIM's 161 pixels
    TARGETS = ("0.5", "1")

    @pytest.fixture(scope="class")
    def run(self, tmp_path_factory):
        folder = tmp_path_factory.mktemp("demo")
        make_image(self.WIDTH, self.HEIGHT, seed=2).save(folder / "photo.png")
        r = demo("--image", str(folder / "photo.png"), "--bpp", *self.TARGETS, "--out", str(folder / "out"))
        assert r.returncode == 0, r.stderr
        return r.stdout, folder / "out", rgb_of(folder / "photo.png")

    def test_one_row_per_codec_per_target_in_order(self, run):
        stdout, _, _ = run
        rows = table(stdout)
        assert sorted(rows) == [0.5, 1.0]
        for target_rows in rows.values():
            assert [r["codec"] for r in target_rows] == ["metalic", *AVAILABLE]

    def test_bytes_and_bpp_are_the_written_files(self, run):
        stdout, out, _ = run
        for target, rows in table(stdout).items():
            for r in rows:
                suffix = ".mlic" if r["codec"] == "metalic" else baselines.CODECS[r["codec"]].extension
                size = (out / f"photo_{target:g}bpp{suffix}").stat().st_size
                assert int(r["bytes"]) == size
                assert float(r["bpp"]) == pytest.approx(size * 8 / (self.WIDTH * self.HEIGHT), abs=5e-5)

    def test_every_baseline_is_at_most_the_metalic_file(self, run):
        stdout, _, _ = run
        for rows in table(stdout).values():
            budget = int(rows[0]["bytes"])
            for r in rows[1:]:
                assert r["over"] is None and int(r["bytes"]) <= budget

    def test_psnr_and_ms_ssim_are_measured_on_the_decoded_files(self, run):
        from codec.pipeline import decode

        stdout, out, original = run
        assert np.array_equal(rgb_of(out / "photo_original.png"), original)
        for target, rows in table(stdout).items():
            stem = out / f"photo_{target:g}bpp"
            for r in rows:
                if r["codec"] == "metalic":
                    from_file = decode((out / f"{stem.name}.mlic").read_bytes()).rgb
                else:
                    from_file = baselines.decode(stem.with_name(stem.name + baselines.CODECS[r["codec"]].extension)
                                                 .read_bytes())
                decoded = rgb_of(out / f"{stem.name}_{r['codec']}.png")
                assert np.array_equal(decoded, from_file)
                assert float(r["psnr"]) == pytest.approx(psnr(original, decoded), abs=0.005)
                assert float(r["ms_ssim"]) == pytest.approx(ms_ssim(original, decoded), abs=5e-5)

    def test_the_verdict_names_the_best_psnr(self, run):
        stdout, _, _ = run
        verdicts = [line.strip() for line in stdout.splitlines() if "best PSNR at" in line]
        for line, rows in zip(verdicts, table(stdout).values(), strict=True):
            best = max(rows, key=lambda r: float(r["psnr"]))["codec"]
            assert line.startswith(f"best PSNR at <= {rows[0]['bytes']} bytes: {best}")

    def test_crop_sheet_shows_the_same_centre_crop_of_each_file(self, run):
        stdout, out, original = run
        codecs = ["metalic", *AVAILABLE]
        for target in table(stdout):
            sheet = rgb_of(out / f"photo_{target:g}bpp_crops.png")
            # 200x168: a 128-pixel crop at (36, 20) drawn twice as large; original + metalic + each baseline
            n = 1 + len(codecs)
            assert sheet.shape == (24 + 256 + 40 + 8, n * 256 + (n + 1) * 8, 3)
            images = [original] + [rgb_of(out / f"photo_{target:g}bpp_{c}.png") for c in codecs]
            for i, image in enumerate(images):
                x, y = 8 + i * (256 + 8), 24
                expected = np.repeat(np.repeat(image[20:148, 36:164], 2, axis=0), 2, axis=1)
                assert np.array_equal(sheet[y:y + 256, x:x + 256], expected), f"tile {i}"

    def test_the_decoded_file_is_checked_against_the_encoder(self, run):
        stdout, _, _ = run
        assert stdout.count("the decoded file equals the encoder's reconstruction") == len(self.TARGETS)


class TestDemoEdgeCases:
    def test_default_sample_at_one_target(self, tmp_path):
        r = demo("--bpp", "0.25", "--out", str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert "a generated 384x256 sample" in r.stdout
        assert [row["codec"] for row in table(r.stdout)[0.25]] == ["metalic", *AVAILABLE]
        assert Image.open(tmp_path / "sample_0.25bpp_crops.png").size == crop_sheet.sheet_size(
            2 + len(AVAILABLE), crop_sheet.crop_box(256, 384))

    def test_grayscale_image_too_small_for_ms_ssim(self, tmp_path, capsys):
        make_image(64, 48, mode="L").save(tmp_path / "gray.png")
        assert cli.main(["demo", "--image", str(tmp_path / "gray.png"), "--bpp", "1", "--out", str(tmp_path)]) == 0
        rows = table(capsys.readouterr().out)[1.0]
        assert [r["ms_ssim"] for r in rows] == ["-"] * len(rows)
        assert Image.open(tmp_path / "gray_1bpp_metalic.png").mode == "L"
        # 48 pixels high: the crop is 48x48, drawn 5 times as large; the original comes first
        n = 1 + len(rows)
        assert Image.open(tmp_path / "gray_1bpp_crops.png").size == (n * 240 + (n + 1) * 8, 24 + 240 + 40 + 8)

    @pytest.mark.parametrize("args, reason", [
        (["--bpp", "-1"], "bpp"),
        (["--bpp", "0.5", "--preset", "fast", "--image", "/nonexistent/photo.png"], "cannot read"),
    ])
    def test_bad_arguments_exit_2_with_one_line(self, tmp_path, args, reason):
        r = demo(*args, "--out", str(tmp_path))
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and reason in r.stderr

    def test_not_an_image_exits_2_before_the_model_loads(self, tmp_path, capsys):
        (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        assert cli.main(["demo", "--image", str(tmp_path / "junk.png"), "--out", str(tmp_path / "out")]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "error" in captured.err


class TestVerdict:
    @staticmethod
    def row(codec: str, psnr_db: float, fits: bool = True) -> Row:
        return Row(codec, "q=1", 1000, 0.5, psnr_db, math.nan, fits)

    def test_a_baseline_ahead_says_how_far_metalic_is_below(self):
        rows = [self.row("metalic", 25.0), self.row("jpeg", 26.5), self.row("webp", 27.25)]
        assert verdict(rows) == "best PSNR at <= 1000 bytes: webp; metalic is 2.25 dB below it"

    def test_metalic_ahead_says_by_how_much(self):
        rows = [self.row("metalic", 30.0), self.row("jpeg", 26.5), self.row("webp", 29.0)]
        assert verdict(rows) == "best PSNR at <= 1000 bytes: metalic, 1.00 dB above webp"

    def test_a_file_over_the_budget_cannot_win(self):
        rows = [self.row("metalic", 25.0), self.row("jpeg", 40.0, fits=False)]
        assert verdict(rows) == "best PSNR at <= 1000 bytes: metalic (no baseline fits)"
