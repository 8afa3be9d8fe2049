"""Model families. Importing this package fills :data:`codec.registry.MODELS`."""

from .variable_rate import VariableRateHyperprior
from .gated import GatedVariableRateHyperprior
from . import zoo  # noqa: F401  (registers the CompressAI zoo backends)

__all__ = ["GatedVariableRateHyperprior", "VariableRateHyperprior"]
