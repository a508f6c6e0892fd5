"""deconv_ext: 2-D transposed convolution for PyTorch (CPU and CUDA kernels, autograd, nn layer)."""
from . import _ops  # noqa: F401  (registers the ops and their autograd)
from .functional import conv_transpose2d
from .nn import ConvTranspose2d, convert

__version__ = "0.1.0"
__all__ = ["conv_transpose2d", "ConvTranspose2d", "convert", "__version__"]
