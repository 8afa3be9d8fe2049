"""metalic codec library: models, bitstream, entropy coding, encoder adaptation.

Importing :mod:`codec` is cheap (no torch); the heavy parts load on first use.
"""

__version__ = "0.1.0"
