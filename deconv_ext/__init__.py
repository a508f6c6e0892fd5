"""deconv_ext: 2-D transposed convolution for PyTorch (CPU and CUDA kernels, autograd, nn layer)."""
from . import _build

_build.check_installed_torch()  # before the library loads: a build for another torch fails here, by name

from . import _ops  # noqa: E402,F401  (registers the ops and their autograd)
from .functional import conv_transpose2d  # noqa: E402
from .nn import ConvTranspose1d, ConvTranspose2d, convert  # noqa: E402

__version__ = _build.load_info()["version"]
__all__ = ["conv_transpose2d", "ConvTranspose1d", "ConvTranspose2d", "convert", "__version__"]
