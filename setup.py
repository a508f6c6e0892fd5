"""Build of deconv_ext: the compiled library deconv_ext._C (CPU kernels, plus CUDA kernels when asked).

Environment switches:
  USE_CUDA=0            CPU-only build, even where a GPU is visible.
  FORCE_CUDA=1          compile the CUDA kernels even where no GPU is visible (nvcc needed;
                        set TORCH_CUDA_ARCH_LIST, e.g. "9.0", since there is no GPU to ask).
  (neither)             CUDA kernels when torch sees a GPU, CPU-only otherwise.
  DEBUG=1               -O0 -g.
  MAX_JOBS=n            parallel compile jobs (ninja).

The version carries a local tag naming the torch and CUDA it is built against (0.1.0+pt2.14cu130,
0.1.0+pt2.14cpu), and the build writes deconv_ext/_build_info.py beside the library (torch, CUDA, archs),
which `deconv-ext info` prints and `import deconv_ext` checks. Release wheels: scripts/build_wheel.sh.
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_build_module():
    # By path: importing the package would load the library this script is about to build.
    spec = importlib.util.spec_from_file_location("_deconv_ext_build", os.path.join(ROOT, "deconv_ext", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_build = _load_build_module()


def _has_cudart(root):
    return any(os.path.exists(os.path.join(root, lib, "libcudart.so")) for lib in ("lib64", "lib"))


def _find_cuda_home():
    """The CUDA toolkit root (the folder whose lib64/ or lib/ holds libcudart.so).

    torch guesses it from where `nvcc` sits, which is wrong when nvcc on PATH is a wrapper script
    (the link then fails with `cannot find -lcudart`); nvcc itself reports its TOP.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ["CUDA_PATH"]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            out = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                 capture_output=True, text=True, timeout=60)
            m = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
            if m:
                candidates.append(os.path.dirname(os.path.realpath(m.group(1) + "/bin")))
        except (OSError, subprocess.SubprocessError):
            pass
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if _has_cudart(root):
            return root
    return None


def _want_cuda():
    if os.environ.get("USE_CUDA", "1") == "0":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    import torch

    return torch.cuda.is_available()


WITH_CUDA = _want_cuda()
if WITH_CUDA:
    _home = _find_cuda_home()
    if _home is None:
        raise RuntimeError("deconv_ext: CUDA build requested but no CUDA toolkit found; set CUDA_HOME to the "
                           "toolkit root (the folder whose lib64/ holds libcudart.so), or USE_CUDA=0")
    os.environ["CUDA_HOME"] = _home  # must be set before torch.utils.cpp_extension is imported

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

# The stable-ABI (abi3) floor: torch compiles py_limited_api extensions with -DPy_LIMITED_API set to its
# oldest supported CPython, so the wheel tag and python_requires follow it (0x030A0000 -> cp310, >=3.10).
LIMITED_API_HEX = getattr(cpp_extension, "min_supported_cpython", "0x03090000")
LIMITED_API_MINOR = int(LIMITED_API_HEX, 16) >> 16 & 0xFF
CUDA_VERSION = torch.version.cuda if WITH_CUDA else None
VERSION = _build.full_version(torch.__version__, CUDA_VERSION)


def build_info():
    sass, ptx = [], []
    if WITH_CUDA:
        # The -gencode flags torch passes to nvcc (from TORCH_CUDA_ARCH_LIST): what is really compiled.
        sass, ptx = _build.parse_gencode_flags(cpp_extension._get_cuda_arch_flags())
    return {
        "version": VERSION,
        "torch_version": torch.__version__,
        "cuda_version": CUDA_VERSION,
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if WITH_CUDA else None,
        "sass_archs": sass,
        "ptx_archs": ptx,
        "limited_api": f"cp3{LIMITED_API_MINOR}",
        "debug": os.environ.get("DEBUG", "0") == "1",
    }


class BuildExtensionWithInfo(BuildExtension):
    """Builds deconv_ext._C, then writes deconv_ext/_build_info.py beside it (in build/lib for a wheel, in the
    source tree for in-place and editable builds)."""

    def run(self):
        super().run()
        folder = os.path.dirname(self.get_ext_fullpath("deconv_ext._C"))
        with open(os.path.join(folder, _build.INFO_MODULE), "w") as f:
            f.write(_build.render_info(build_info()))


def extensions():
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    extra = {"cxx": opt + ["-fdiagnostics-color=always"]}
    if sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for is a header template whose OpenMP backend is a `#pragma omp parallel`: without
        # -fopenmp it compiles to a serial loop and every CPU kernel ran on one thread. Compile flag only:
        # the GOMP_* calls resolve to the OpenMP runtime torch already loaded (no second runtime linked).
        extra["cxx"].append("-fopenmp")
    # py_limited_api=True makes BuildExtension pass -DPy_LIMITED_API itself (torch >= 2.6, at the
    # floor LIMITED_API_HEX records); defining it here too only warns "redefined" in every unit.
    kwargs = dict(py_limited_api=True)
    if WITH_CUDA:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # No -std here: BuildExtension picks the standard torch's headers need (C++20 for torch >= 2.10).
        extra["nvcc"] = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        return [CUDAExtension("deconv_ext._C", sources, extra_compile_args=extra, **kwargs)]
    return [CppExtension("deconv_ext._C", sources, extra_compile_args=extra, **kwargs)]


setup(
    name="deconv_ext",
    version=VERSION,
    description="2-D transposed convolution for PyTorch: CPU and CUDA kernels, autograd, drop-in nn layer",
    packages=find_packages(include=["deconv_ext", "deconv_ext.*"]),
    package_data={"deconv_ext": ["sr/weights/*.pt"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtensionWithInfo.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": f"cp3{LIMITED_API_MINOR}"}},
    python_requires=f">=3.{LIMITED_API_MINOR}",
    install_requires=["torch", "numpy"],
    # The super-resolution app (deconv_ext.sr, `deconv-ext sr`): pip install "deconv_ext[sr]". Keep in step with
    # deconv_ext/sr/__init__.py's REQUIRES, which names what is missing.
    extras_require={"sr": ["pillow", "scikit-image", "tqdm"]},
    entry_points={"console_scripts": ["deconv-ext = deconv_ext.cli:main"]},
)
