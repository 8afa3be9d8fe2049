"""The layering rule of pyproject.toml ``[tool.importlinter]``, and the torch-free CLI paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metalic", "service", "worker", "training", "bench", "codec")


def lint_imports(cwd: Path, *pythonpath: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    env = {"PYTHONPATH": ":".join(str(p) for p in pythonpath), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def copy_tree(dest: Path) -> Path:
    """The packages' .py files and pyproject.toml, so that a test can break a copy, not the tree."""
    skip = shutil.ignore_patterns("__pycache__", "*.pt", "*.png", "*.csv", "*.json")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    shutil.copytree(ROOT / "client" / "metalic_client", dest / "metalic_client", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


class TestImportContracts:
    def test_the_tree_keeps_every_contract(self, tmp_path):
        result = lint_imports(ROOT, ROOT, ROOT / "client")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 broken" in result.stdout

    @pytest.mark.parametrize(("module", "line", "contract"), [
        ("codec/adapt/refine.py", "import training.amp", "metalic > service"),
        ("codec/pipeline.py", "import bench.anchors", "metalic > service"),
        ("training/base.py", "import bench.rd", "metalic > service"),
        ("metalic_client/_base.py", "import torch", "the SDK is standalone"),
        ("codec/metrics.py", "import scipy", "the codec is inference only"),
    ])
    def test_a_deliberate_violation_breaks_the_contract(self, tmp_path, module, line, contract):
        tree = copy_tree(tmp_path)
        path = tree / module
        path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
        result = lint_imports(tree, tree)
        assert result.returncode != 0, result.stdout
        broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
        assert any(row.startswith(contract) for row in broken), result.stdout


class TestTorchFreeCommands:
    """``metalic --help`` and ``metalic info`` answer without loading torch (2-3 s saved per call)."""

    def modules_after(self, *argv: str) -> set[str]:
        code = textwrap.dedent(f"""
            import sys
            from metalic.cli import main
            try:
                main({list(argv)!r})
            except SystemExit:
                pass
            print("MODULES", " ".join(sorted(sys.modules)))
        """)
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        line = next(row for row in result.stdout.splitlines() if row.startswith("MODULES"))
        return set(line.split()[1:])

    def test_help_imports_no_torch(self):
        modules = self.modules_after("--help")
        assert "torch" not in modules and "training" not in modules and "bench" not in modules

    def test_info_imports_no_torch(self, tmp_path):
        from codec import bitstream

        payload = bitstream.Payload(model_id="metalic-vr", weights_hash=b"\x01" * 8, width=64, height=48,
                                    mode=bitstream.ImageMode.RGB, rate_index=100, lambda_k=(), bias_indices=b"",
                                    strings=(b"yy", b"z"), latent_shape=(1, 1))
        (tmp_path / "a.mlic").write_bytes(bitstream.pack(payload))
        modules = self.modules_after("info", str(tmp_path / "a.mlic"))
        assert "torch" not in modules and "numpy" not in modules and "PIL" not in modules
