"""The compact, committable copy of a run's checkpoint: half the optimizer bytes, and a run resumed from it."""

import csv

import numpy as np
import pytest
import torch

from training.base import train
from training.checkpoint import publish, seed_from

from .test_base import data_dir, losses, tiny_config  # noqa: F401  (data_dir is a fixture)


def test_publish_halves_the_moments_and_keeps_the_model(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path / "run", 20), quiet=True)
    path = publish(tmp_path / "run", tmp_path / "pub")
    full = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    small = torch.load(path, weights_only=True)
    moments = [v for s in small["optimizer"]["state"].values() for k, v in s.items() if k != "step"]
    assert moments and all(v.dtype == torch.bfloat16 for v in moments)
    assert all(torch.equal(full["model"][k], small["model"][k]) for k in full["model"])
    assert small["step"] == full["step"] == 20
    assert path.stat().st_size < (tmp_path / "run" / "last.pt").stat().st_size
    assert (tmp_path / "pub" / "log.csv").read_text() == (tmp_path / "run" / "log.csv").read_text()


def test_a_run_resumed_from_the_published_copy_follows_the_straight_run(data_dir, tmp_path):
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    train(tiny_config(data_dir, straight, 30, decay_from=1.0), quiet=True)
    train(tiny_config(data_dir, first, 20, decay_from=1.0), quiet=True)
    publish(first, tmp_path / "pub")
    train(tiny_config(data_dir, second, 30, decay_from=1.0, resume=str(tmp_path / "pub")), quiet=True)
    assert torch.load(second / "last.pt", weights_only=True)["step"] == 30
    a, b = losses(straight), losses(second)
    assert len(b) == 30 and a[:20] == b[:20]  # the log came along
    # bf16 moments perturb the updates slightly: the loss stays on the straight run's path
    assert np.allclose(a[20:], b[20:], rtol=0.05)


def test_a_checkpoint_in_out_wins_and_a_tampered_copy_is_refused(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path / "run", 10), quiet=True)
    publish(tmp_path / "run", tmp_path / "pub")
    assert seed_from(tmp_path / "pub", tmp_path / "run") is False
    with open(tmp_path / "pub" / "last.pt", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="sha256"):
        seed_from(tmp_path / "pub", tmp_path / "fresh")


def test_a_published_record_without_its_file_is_an_error_not_a_fresh_start(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path / "run", 10), quiet=True)
    publish(tmp_path / "run", tmp_path / "pub")
    (tmp_path / "pub" / "last.pt").unlink()
    with pytest.raises(FileNotFoundError, match="git show"):
        seed_from(tmp_path / "pub", tmp_path / "fresh")
