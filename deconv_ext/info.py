"""`deconv-ext info`: what the library was built for, what it runs with, and how each GPU runs its kernels."""
import json
import platform

import torch

from . import _build


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")


def collect():
    build = _build.load_info()
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cc = torch.cuda.get_device_capability(i)
            kind, arch = _build.arch_coverage(cc, build["sass_archs"], build["ptx_archs"])
            devices.append({"index": i, "name": torch.cuda.get_device_name(i), "capability": "%d.%d" % cc,
                            "runs_as": kind, "arch": arch})
    return {
        "build": build,
        "runtime": {"torch_version": torch.__version__, "cuda_version": torch.version.cuda,
                    "cuda_available": torch.cuda.is_available(), "python": platform.python_version()},
        "cpu": _cpu(),
        "devices": devices,
    }


def _cpu():
    """How the CPU kernels run here: the direct path's vector ISA (DECONV_EXT_CPU_ISA applied) and those the CPU
    has (best first), and whether bfloat16 GEMMs run natively (AMX tiles or AVX512-BF16) or on widened
    float32 operands (csrc/cpu/fast_paths.h)."""
    from . import dispatch

    meta = dict(device="meta")
    with dispatch.forced(path="auto"):  # the paths' own rule, whatever DECONV_EXT_CPU_PATH forces
        direct = dispatch.cpu_path(torch.empty(1, 4, 2, 2, **meta), torch.empty(4, 1, 3, 3, **meta))  # direct:<isa>
    return {"isa": direct.split(":")[-1], "isas": list(reversed(dispatch.cpu_isas())),
            "bf16_gemm": {"amx": "native (AMX tiles)", "avx512_bf16": "native (AVX512-BF16)"}.get(
                dispatch.cpu_bf16_gemm(), "widened to float32")}


def _abi3_floor(build):
    tag = build["limited_api"]  # "cp310" -> "3.10"
    return f"{tag[2]}.{tag[3:]}"


def _archs(build):
    if build["cuda_version"] is None:
        return "none (CPU-only build)"
    ptx = " ".join(build["ptx_archs"]) or "none"
    return f"SASS {' '.join(build['sass_archs']) or 'none'}; PTX {ptx}"


def _device_line(d, build):
    head = f"  cuda:{d['index']}  {d['name']} (compute capability {d['capability']}): "
    if build["cuda_version"] is None:
        return head + "not used (CPU-only build)"
    if d["runs_as"] == "SASS":
        return head + f"runs SASS {d['arch']}"
    if d["runs_as"] == "PTX":
        return head + f"runs PTX {d['arch']}, JIT-compiled by the driver on first use"
    return head + "NOT COVERED: no SASS or PTX for this arch; rebuild with TORCH_CUDA_ARCH_LIST=" + d["capability"]


def run(args):
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    build, rt = facts["build"], facts["runtime"]
    print(f"deconv_ext {build['version']}")
    print(f"  built for:    torch {build['torch_version']}, CUDA {build['cuda_version'] or 'none'}, "
          f"CPython >= {_abi3_floor(build)} (abi3)" + (", debug" if build["debug"] else ""))
    print(f"  CUDA archs:   {_archs(build)}")
    print(f"  running with: torch {rt['torch_version']}, CUDA {rt['cuda_version'] or 'none'}, "
          f"Python {rt['python']}")
    cpu = facts["cpu"]
    print(f"  CPU kernels:  direct path {cpu['isa']} (available: {', '.join(cpu['isas'])}); "
          f"bfloat16 GEMMs {cpu['bf16_gemm']}")
    if not facts["devices"]:
        print("  GPUs:         none visible" if rt["cuda_version"] else "  GPUs:         none (CPU-only torch)")
    for d in facts["devices"]:
        print(_device_line(d, build))
    return 0
