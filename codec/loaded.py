"""What loading a registry name gives: the model behind its backend, and the hash that names its weights."""

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadedModel:
    """A ready model and what identifies it in a container."""

    name: str
    backend: object  # a codec.backends.Backend
    weights_hash: bytes  # first 8 bytes of the weights file's sha256
    trained: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
