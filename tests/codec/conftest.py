import pytest

from tests.support.images import make_image, png_bytes  # noqa: F401  (re-exported to the codec tests)


@pytest.fixture(scope="session")
def encoder():
    from codec.pipeline import Encoder

    return Encoder(device="cpu")
