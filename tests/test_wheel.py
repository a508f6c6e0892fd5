"""Release wheels: the version tag, the build record and its import check, and a CPU wheel built with
scripts/build_wheel.sh, installed into a fresh, isolated virtual environment (seeing only the wheel's declared
dependencies, as installed for the running interpreter) and run there.

The wheel test compiles the library (~1-2 minutes on 2 cores); it is marked `wheel` (and `slow`), so CI can
run it alone (`python -m pytest -m wheel`) or leave it out (`-m "not wheel"`).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_build_module():
    # The source tree's deconv_ext/_build.py, by path: the tests of it need no built library.
    spec = importlib.util.spec_from_file_location("_deconv_ext_build", os.path.join(ROOT, "deconv_ext", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_build = _load_build_module()


# ---- version tag ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("torch_version, cuda, tag", [
    ("2.14.1+cu130", "13.0", "pt2.14cu130"),
    ("2.14.1+cu130", None, "pt2.14cpu"),
    ("2.13.0", None, "pt2.13cpu"),
    ("2.13.0+cpu", None, "pt2.13cpu"),
    ("2.12.0+cu126", "12.6", "pt2.12cu126"),
    ("2.15.0.dev20260101+cu130", "13.0", "pt2.15cu130"),
])
def test_local_tag(torch_version, cuda, tag):
    assert _build.local_tag(torch_version, cuda) == tag
    assert _build.full_version(torch_version, cuda) == f"{_build.BASE_VERSION}+{tag}"


def test_local_tag_rejects_garbage():
    with pytest.raises(ValueError, match="not a version"):
        _build.local_tag("main", None)


# ---- archs ----------------------------------------------------------------------------------------------
def test_parse_gencode_flags():
    flags = ["-gencode=arch=compute_75,code=sm_75", "-gencode=arch=compute_90,code=sm_90",
             "-gencode=arch=compute_120,code=sm_120", "-gencode=arch=compute_120,code=compute_120",
             "-gencode=arch=compute_100,code=sm_100"]
    assert _build.parse_gencode_flags(flags) == (["sm_75", "sm_90", "sm_100", "sm_120"], ["compute_120"])
    assert _build.parse_gencode_flags(["-gencode", "arch=compute_90a,code=[sm_90a,compute_90a]"]) == (
        ["sm_90a"], ["compute_90a"])


SASS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize("cc, sass, ptx, expected", [
    ((9, 0), SASS, ["compute_120"], ("SASS", "sm_90")),
    ((8, 9), SASS, ["compute_120"], ("SASS", "sm_86")),       # same major, newer minor: sm_86 runs on 8.9
    ((8, 7), ["sm_80"], [], ("SASS", "sm_80")),
    ((10, 3), SASS, ["compute_120"], ("SASS", "sm_100")),
    ((12, 1), SASS, ["compute_120"], ("SASS", "sm_120")),
    ((11, 0), SASS, ["compute_120"], (None, None)),             # SASS never crosses majors; PTX only upwards
    ((13, 0), SASS, ["compute_120"], ("PTX", "compute_120")),  # a future GPU: JIT from the newest PTX
    ((10, 0), ["sm_90"], ["compute_90"], ("PTX", "compute_90")),
    ((8, 0), ["sm_86"], [], (None, None)),                      # SASS does not run on an older minor
    ((7, 0), SASS, ["compute_120"], (None, None)),
    ((9, 0), ["sm_90a"], [], ("SASS", "sm_90a")),
    ((10, 0), ["sm_90a"], ["compute_90a"], (None, None)),       # arch-specific code: that arch only
])
def test_arch_coverage(cc, sass, ptx, expected):
    assert _build.arch_coverage(cc, sass, ptx) == expected


# ---- the import check -----------------------------------------------------------------------------------
def _record(torch_version, cuda):
    return {"version": _build.full_version(torch_version, cuda), "torch_version": torch_version,
            "cuda_version": cuda}


def test_check_torch_accepts_same_minor():
    _build.check_torch(_record("2.14.1+cu130", "13.0"), "2.14.0+cu130", "13.0")
    _build.check_torch(_record("2.14.1+cu130", "13.0"), "2.14.2+cu132", "13.2")  # CUDA minor: compatible
    _build.check_torch(_record("2.14.1+cu130", None), "2.14.1+cpu", None)        # CPU build on any variant


def test_check_torch_names_the_torch_it_needs():
    with pytest.raises(ImportError, match=re.escape(
            "deconv_ext 0.1.0+pt2.14cu130 was built for torch 2.14.x, but torch 2.13.0 is installed; "
            "install the deconv_ext wheel built for torch 2.13 (version tag +pt2.13cpu) or rebuild")):
        _build.check_torch(_record("2.14.1+cu130", "13.0"), "2.13.0", None)


def test_check_torch_cuda_build_needs_cuda_torch():
    with pytest.raises(ImportError, match=r"built with CUDA 13\.0, but a CPU-only torch \(2\.14\.1\+cpu\)"):
        _build.check_torch(_record("2.14.1+cu130", "13.0"), "2.14.1+cpu", None)
    with pytest.raises(ImportError, match=r"built with CUDA 13\.0, but torch built with CUDA 12\.8"):
        _build.check_torch(_record("2.14.1+cu130", "13.0"), "2.14.1+cu128", "12.8")


def test_render_info_round_trips():
    record = {"version": "0.1.0+pt2.14cu130", "cuda_version": "13.0", "sass_archs": ["sm_90"], "debug": False}
    namespace = {}
    exec(_build.render_info(record), namespace)
    assert namespace["BUILD"] == record


# ---- a CPU wheel in a fresh virtual environment --------------------------------------------------------
# Python symbols the library may import: its module init only (csrc/ops.cpp), all in the stable ABI
# (https://docs.python.org/3/c-api/stable.html). A new one must be checked against that list before it is added.
STABLE_ABI_ALLOWED = {"PyModule_Create2", "PyModuleDef_Init", "PyModule_FromDefAndSpec2", "PyErr_SetString",
                      "PyExc_ImportError", "PyExc_RuntimeError"}

_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "wheelhouse", "*.egg-info", "*.so", "__pycache__",
                                 ".venv*", ".pytest_cache", "_build_info.py", "runs", "bench_out", "gpu_check_out")


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def cpu_wheel(tmp_path_factory):
    """A CPU wheel built by scripts/build_wheel.sh from a clean copy of the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    env = dict(os.environ, PYTHON=sys.executable, MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    _run(["bash", str(src / "scripts" / "build_wheel.sh"), "cpu", str(tmp / "dist")], env=env, timeout=900)
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _dependency_closure(requirements):
    """The installed distributions that ``requirements`` (Requires-Dist strings) need, transitively, with
    their markers evaluated for this interpreter; by canonical name."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = {}, list(requirements)
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            found[name] = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name}, which the wheel needs (through {requirements}), is not installed here")
        todo.extend(found[name].requires or [])
    return found


def _link_dependencies(wheel, target):
    """Symlink into ``target`` the top-level packages (and dist-info) of the wheel's runtime dependencies as
    installed for this interpreter: torch and what it needs, numpy, pillow, ... and nothing else."""
    with zipfile.ZipFile(wheel) as z:
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    assert any(r.split()[0] == "torch" for r in requires), requires
    target.mkdir()
    for name, dist in _dependency_closure(requires).items():
        assert dist.files is not None, f"{name} has no RECORD: cannot tell its files"
        for top in {f.parts[0] for f in dist.files} - {"..", "__pycache__"}:
            source = dist.locate_file(top)
            if os.path.exists(source) and not (target / top).exists():
                (target / top).symlink_to(source)


@pytest.fixture(scope="module")
def venv(cpu_wheel, tmp_path_factory):
    """A fresh venv holding the wheel. It must see this interpreter's torch even when the tests run inside a
    virtual environment (whose packages a --system-site-packages venv would not see: it sees the *base*
    interpreter's), and nothing that could hide a bug: not this checkout, not a deconv_ext installed here,
    not a package the wheel does not declare. So the venv is isolated, and a .pth file adds one folder of
    symlinks to the wheel's declared dependencies (transitively) as installed here."""
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    [site_packages] = venv.glob("lib/python*/site-packages")
    _link_dependencies(cpu_wheel, tmp / "dependencies")
    (site_packages / "_wheel_test_dependencies.pth").write_text(str(tmp / "dependencies") + "\n")
    # This interpreter's pip installs into the venv's interpreter (pip >= 22.3: --python).
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", str(cpu_wheel)], cwd=tmp)
    return venv


def _venv_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _venv_python(venv, code, check=True):
    """Run code in the venv from an empty cwd outside the source tree."""
    cwd = venv.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    cmd = [str(venv / "bin" / "python"), "-c", textwrap.dedent(code)]
    if check:
        return _run(cmd, cwd=cwd, env=_venv_env(), timeout=300)
    return subprocess.run(cmd, cwd=cwd, env=_venv_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.wheel
@pytest.mark.slow
def test_cpu_wheel_name_and_abi(cpu_wheel):
    mm = "%d.%d" % _build.major_minor(torch.__version__)
    m = re.fullmatch(rf"deconv_ext-{re.escape(_build.BASE_VERSION)}\+pt{re.escape(mm)}cpu-cp3(\d+)-abi3-"
                     r"linux_x86_64\.whl", cpu_wheel.name)
    assert m, cpu_wheel.name
    with zipfile.ZipFile(cpu_wheel) as z:
        names = z.namelist()
        assert "deconv_ext/_build_info.py" in names
        [so] = [n for n in names if n.startswith("deconv_ext/_C")]
        assert so == "deconv_ext/_C.abi3.so"  # not _C.cpython-3XX-...so: built for the limited API
        z.extract(so, cpu_wheel.parent)
    so_path = str(cpu_wheel.parent / so)
    if shutil.which("nm") is None or shutil.which("readelf") is None:
        pytest.skip("binutils (nm, readelf) not installed")
    undefined = _run(["nm", "-D", "--undefined-only", so_path]).stdout.split()
    python_symbols = {s for s in undefined if re.match(r"_?Py", s)}
    assert python_symbols <= STABLE_ABI_ALLOWED, python_symbols - STABLE_ABI_ALLOWED
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", _run(["readelf", "-d", so_path]).stdout)
    assert not [lib for lib in needed if "torch_python" in lib or "libpython" in lib], needed


@pytest.mark.wheel
@pytest.mark.slow
def test_cpu_wheel_runs_in_fresh_venv(venv):
    out = _venv_python(venv, f"""
        import importlib.util, sys, torch, torch.nn.functional as F
        import deconv_ext
        assert deconv_ext.__file__.startswith({str(venv)!r}), deconv_ext.__file__
        # isolated: torch comes from the dependency folder, and what the wheel does not declare is not there
        assert torch.__file__.startswith({str(venv.parent / "dependencies")!r}), torch.__file__
        assert importlib.util.find_spec("pytest") is None
        assert sys.modules["deconv_ext._C"].__file__.startswith({str(venv)!r})
        torch.manual_seed(0)
        x, w, b = torch.randn(2, 4, 5, 6), torch.randn(4, 3, 3, 2), torch.randn(6)
        args = dict(stride=(2, 1), padding=1, output_padding=(1, 0), groups=2, dilation=(1, 2))
        torch.testing.assert_close(deconv_ext.conv_transpose2d(x, w, b, **args), F.conv_transpose2d(x, w, b, **args))
        print(deconv_ext.__version__)
    """).stdout
    assert out.strip() == _build.full_version(torch.__version__, None)

    info = _run([str(venv / "bin" / "deconv-ext"), "info"], cwd=venv.parent, env=_venv_env()).stdout
    assert f"deconv_ext {_build.full_version(torch.__version__, None)}" in info
    assert f"torch {torch.__version__}" in info
    assert "none (CPU-only build)" in info
    assert "CPU kernels:  direct path" in info


@pytest.mark.wheel
@pytest.mark.slow
def test_wheel_for_other_torch_fails_before_loading_library(venv):
    """Rewrite the installed record as if built for another torch minor: import must fail with the message,
    and without loading _C (so no undefined-symbol error can come first)."""
    [record] = venv.glob("lib/python*/site-packages/deconv_ext/_build_info.py")
    original = record.read_text()
    major, minor = _build.major_minor(torch.__version__)
    other = f"{major}.{minor + 1}.0"
    record.write_text(original.replace(repr(torch.__version__), repr(other)))
    try:
        result = _venv_python(venv, """
            import sys
            try:
                import deconv_ext
            except ImportError as e:
                print(e)
                print("_C loaded:", "deconv_ext._C" in sys.modules)
        """)
    finally:
        record.write_text(original)
    assert f"was built for torch {major}.{minor + 1}.x, but torch {torch.__version__} is installed" in result.stdout
    assert "_C loaded: False" in result.stdout
