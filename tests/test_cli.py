"""The `deconv-ext` command meets bad input with one line on stderr and an exit status (2: bad usage, 1: a failed
job), keeps going through a folder past broken files, never leaves a partial output, shows progress only on a
terminal, and works without the super-resolution extra for everything but `sr`. Run through the entry point
(deconv_ext.cli.main in this process; a subprocess where the process itself matters); images are tiny."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deconv_ext import cli
from deconv_ext.sr import infer
from deconv_ext.sr.model import FSRCNN, PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
ENV.pop("DECONV_EXT_DEBUG", None)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output names land in the test's folder
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _image(path, size=(12, 10), seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _run(capsys, *argv):
    """main(argv) -> (status, stdout, stderr lines)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def _one_error_line(err):
    """The one `deconv-ext: error:` line of stderr (and no traceback)."""
    assert not any("Traceback" in line for line in err), err
    lines = [line for line in err if line.startswith("deconv-ext")]
    assert len(lines) == 1, err
    return lines[0]


# ---- upscale: one file -------------------------------------------------------------------------------
def test_upscale_missing_input(capsys):
    status, _, err = _run(capsys, "sr", "upscale", "-i", "missing.jpg", "-o", "out.png", "-s", "2")
    line = _one_error_line(err)
    assert status == 2 and "missing.jpg" in line and "no such file" in line and "-i" in line
    assert not os.path.exists("out.png")


def test_upscale_not_an_image_keeps_existing_output(capsys):
    with open("notes.jpg", "w") as f:
        f.write("not a picture\n")
    _image("out.png")
    before = open("out.png", "rb").read()
    status, _, err = _run(capsys, "sr", "upscale", "-i", "notes.jpg", "-o", "out.png")
    line = _one_error_line(err)
    assert status == 1 and "notes.jpg" in line and "not an image" in line
    assert open("out.png", "rb").read() == before


def test_upscale_unsupported_mode(capsys, monkeypatch):
    _image("odd.png")
    real_open = Image.open
    # no file format Pillow writes yields a mode without an RGB conversion, so one is made up: "La"
    monkeypatch.setattr(Image, "open", lambda p, *a: Image.new("La", (6, 5)) if "odd" in str(p) else real_open(p, *a))
    status, _, err = _run(capsys, "sr", "upscale", "-i", "odd.png")
    line = _one_error_line(err)
    assert status == 1 and "odd.png" in line and "'La'" in line and "not supported" in line


@pytest.mark.parametrize("output, expected", [("blocker/big.png", "is a file"), ("big.xyz", "extension .xyz"),
                                              ("big", "no image file extension"), (".", "is a folder")])
def test_upscale_unusable_output(capsys, output, expected):
    _image("small.png")
    open("blocker", "w").close()
    status, _, err = _run(capsys, "sr", "upscale", "-i", "small.png", "-o", output)
    line = _one_error_line(err)
    assert status == 2 and expected in line and "-o" in line, line


def test_upscale_failed_write_leaves_no_partial_file(capsys, monkeypatch):
    _image("small.png")
    _image("big.png", seed=1)
    before = open("big.png", "rb").read()

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    status, _, err = _run(capsys, "sr", "upscale", "-i", "small.png", "-o", "big.png")
    line = _one_error_line(err)
    assert status == 1 and "big.png" in line and "No space left" in line
    assert open("big.png", "rb").read() == before
    assert sorted(os.listdir(".")) == ["big.png", "small.png"]  # no temporary file left behind


def test_upscale_writes_output(capsys):
    _image("small.png", size=(9, 5))
    status, out, err = _run(capsys, "sr", "upscale", "-i", "small.png", "-s", "3")
    assert status == 0 and not err and "small_x3.png" in out
    assert Image.open("small_x3.png").size == (27, 15)


def test_no_weights(capsys, monkeypatch, tmp_path):
    _image("small.png")
    status, _, err = _run(capsys, "sr", "upscale", "-i", "small.png", "--preset", "fsrcnn-s")
    line = _one_error_line(err)
    assert status == 2 and "fsrcnn-s" in line and "--weights" in line
    monkeypatch.setattr(infer, "WEIGHTS_DIR", str(tmp_path / "empty"))  # an installation missing its weights
    status, _, err = _run(capsys, "sr", "upscale", "-i", "small.png", "-s", "3")
    line = _one_error_line(err)
    assert status == 1 and "scale 3" in line and "reinstall" in line


def _oom_on_inputs_wider_than(monkeypatch, width):
    real_forward = FSRCNN.forward

    def forward(self, x):
        if x.shape[-1] > width:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(self, x)

    monkeypatch.setattr(FSRCNN, "forward", forward)


def test_upscale_out_of_memory_on_a_tile(capsys, monkeypatch):
    _image("photo.png", size=(40, 20))
    _oom_on_inputs_wider_than(monkeypatch, 8)
    status, _, err = _run(capsys, "sr", "upscale", "-i", "photo.png", "--tile", "16")
    line = _one_error_line(err)
    assert status == 1 and "photo.png" in line and "out of memory on a 16x16 tile" in line and "--tile 8" in line
    assert not os.path.exists("photo_x2.png")


# ---- upscale: a folder -------------------------------------------------------------------------------
def test_batch_goes_past_broken_files(capsys, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a_broken.jpg").write_text("not a picture")  # first in sorted order
    _image(src / "b.png")
    _image(src / "sub" / "c.png", seed=2)
    os.symlink(tmp_path / "nowhere.png", src / "d_dangling.png")  # listed, but cannot be read
    dst.mkdir()
    _image(dst / "a_broken.png", seed=3)  # a good output of an earlier run must survive
    before = (dst / "a_broken.png").read_bytes()

    status, out, err = _run(capsys, "sr", "upscale", "-i", str(src), "-o", str(dst))
    assert status == 1
    assert Image.open(dst / "b.png").size == (24, 20) and Image.open(dst / "sub" / "c.png").size == (24, 20)
    assert (dst / "a_broken.png").read_bytes() == before and not (dst / "d_dangling.png").exists()
    assert "b.png" in out and "c.png" in out
    failed = [line for line in err if line.startswith("deconv-ext: failed:")]
    assert len(failed) == 2 and "a_broken.jpg" in failed[0] and "not an image" in failed[0]
    assert "d_dangling.png" in failed[1] and "no such file" in failed[1]
    summary = [line for line in err if line.startswith("deconv-ext: error:")]
    assert len(summary) == 1 and "2 of 4 images failed" in summary[0]
    assert "a_broken.jpg" in summary[0] and "d_dangling.png" in summary[0]
    assert sorted(os.listdir(dst)) == ["a_broken.png", "b.png", "sub"]  # no temporary files


def test_batch_same_stem_different_extensions(capsys, tmp_path):
    """a.jpg and a.png must not both become out/a.png (one would overwrite the other)."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _image(src / "a.png", seed=1)
    Image.open(src / "a.png").save(src / "a.jpg")
    _image(src / "b.png", seed=2)
    status, _, _ = _run(capsys, "sr", "upscale", "-i", str(src), "-o", str(dst))
    assert status == 0
    assert sorted(os.listdir(dst)) == ["a_jpg.png", "a_png.png", "b.png"]


def test_batch_out_of_memory_on_one_image(capsys, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    _image(tmp_path / "in" / "big.png", size=(30, 8))
    _image(tmp_path / "in" / "small.png", size=(6, 8))
    _oom_on_inputs_wider_than(monkeypatch, 20)
    status, _, err = _run(capsys, "sr", "upscale", "-i", "in", "-o", "out", "--tile", "0")
    assert status == 1 and "1 of 2 images failed" in err[-1] and "big.png" in err[-1]
    assert any("out of memory on the whole image" in line and "--tile 15" in line for line in err)
    assert Image.open(tmp_path / "out" / "small.png").size == (12, 16)


def test_batch_bad_folders(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = _run(capsys, "sr", "upscale", "-i", "empty")
    assert status == 2 and "empty: no image files" in _one_error_line(err)
    (tmp_path / "in").mkdir()
    _image(tmp_path / "in" / "a.png")
    open("file", "w").close()
    status, _, err = _run(capsys, "sr", "upscale", "-i", "in", "-o", "file")
    assert status == 2 and "file: is a file" in _one_error_line(err)


# ---- progress ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("terminal, quiet", [(True, False), (True, True), (False, False)])
def test_progress_only_on_a_terminal(capsys, monkeypatch, tmp_path, terminal, quiet):
    (tmp_path / "in").mkdir()
    for k in range(2):
        _image(tmp_path / "in" / f"{k}.png", size=(20, 10), seed=k)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    status, _, err = _run(capsys, "sr", "upscale", "-i", "in", "-o", "out", "--tile", "8",
                          *(["--quiet"] if quiet else []))
    err = "\n".join(err)
    assert status == 0
    shown = terminal and not quiet
    assert ("2/2" in err and "image" in err) == shown, err  # the bar over the images of the batch
    assert ("tiles" in err and "/6 " in err) == shown, err  # 20x10 LR pixels in 8x8 tiles: 3 x 2


# ---- debug -------------------------------------------------------------------------------------------
def test_debug_shows_traceback(capsys, monkeypatch):
    for argv in (["--debug", "sr", "upscale", "-i", "missing.jpg"], ["sr", "upscale", "-i", "missing.jpg", "--debug"]):
        status, _, err = _run(capsys, *argv)
        assert status == 2 and "Traceback" in "\n".join(err) and err[-1].startswith("deconv-ext: error: missing.jpg")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    status, _, err = _run(capsys, "sr", "upscale", "-i", "missing.jpg")
    assert status == 2 and "Traceback" in "\n".join(err)


def test_bad_option_is_one_line():
    res = subprocess.run([sys.executable, "-m", "deconv_ext", "sr", "upscale", "-s", "5"], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "invalid choice: 5" in res.stderr
    res = subprocess.run([sys.executable, "-m", "deconv_ext", "sr", "upscale", "-i", "missing.jpg"], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == "deconv-ext: error: missing.jpg: no such file or folder; check -i\n"


# ---- every command -----------------------------------------------------------------------------------
def test_bench_unwritable_json_and_unexpected_errors(capsys, monkeypatch):
    open("blocker", "w").close()
    status, _, err = _run(capsys, "bench", "--quick", "--shapes", "fsrcnn_x3", "--modes", "fwd", "--json",
                          "blocker/b.json")
    line = _one_error_line(err)
    assert status == 1 and "blocker/b.json" in line
    status, _, err = _run(capsys, "bench", "--quick", "--shapes", "no-such-shape")
    assert status == 2 and "no shape matches" in _one_error_line(err)
    from deconv_ext import info

    monkeypatch.setattr(info, "collect", lambda: 1 / 0)  # a bug: still one line, pointing at --debug
    status, _, err = _run(capsys, "info")
    line = _one_error_line(err)
    assert status == 1 and "unexpected ZeroDivisionError" in line and "--debug" in line


def test_info_reports_the_cpu_kernels(capsys, monkeypatch):
    from deconv_ext import dispatch

    status, out, _ = _run(capsys, "info", "--json")
    cpu = json.loads(out)["cpu"]
    assert status == 0 and cpu["isa"] == dispatch.cpu_isas()[-1] and cpu["isas"] == dispatch.cpu_isas()[::-1]
    monkeypatch.setenv("DECONV_EXT_CPU_ISA", "baseline")  # a cap below avx512: bfloat16 is widened
    status, out, _ = _run(capsys, "info")
    assert status == 0 and "CPU kernels:  direct path baseline" in out and "bfloat16 GEMMs widened to float32" in out


# ---- eval --------------------------------------------------------------------------------------------
def _save_weights(path, scale=2, preset="fsrcnn", checkpoint=False):
    state = FSRCNN(scale, *PRESETS[preset]).state_dict()
    torch.save({"model": state, "optimizer": {}, "args": {"scale": scale, "preset": preset}} if checkpoint else state,
               path)
    return str(path)


def test_eval_errors(capsys, tmp_path):
    status, _, err = _run(capsys, "sr", "eval", "--data", "nowhere")
    assert status == 2 and "nowhere: no such file or folder" in _one_error_line(err)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.png").write_text("garbage")
    status, _, err = _run(capsys, "sr", "eval", "--data", "photos")
    line = _one_error_line(err)
    assert status == 1 and "x.png" in line and "not an image" in line
    small = _save_weights(tmp_path / "small.pt", preset="fsrcnn-s")
    status, _, err = _run(capsys, "sr", "eval", "--weights", small)
    line = _one_error_line(err)
    assert status == 2 and "small.pt" in line and "--preset fsrcnn-s" in line
    x3 = _save_weights(tmp_path / "x3.pt", scale=3, checkpoint=True)
    status, _, err = _run(capsys, "sr", "eval", "--weights", x3, "--scale", "2")
    line = _one_error_line(err)
    assert status == 2 and "x3.pt" in line and "--scale 3" in line
    status, _, err = _run(capsys, "sr", "eval", "--weights", "missing.pt")
    assert status == 2 and "missing.pt: no such file" in _one_error_line(err)
    status, _, err = _run(capsys, "sr", "eval", "--json", "photos/x.png/e.json")
    assert status == 2 and "is a file" in _one_error_line(err)


# ---- train -------------------------------------------------------------------------------------------
def _train(capsys, tmp_path, *extra):
    (tmp_path / "photos").mkdir(exist_ok=True)
    _image(tmp_path / "photos" / "p.png", size=(40, 40))
    return _run(capsys, "sr", "train", "--scale", "2", "--preset", "fsrcnn-s", "--steps", "1", "--batch", "2",
                "--patch", "8", "--device", "cpu", "--out", "run", "--quiet", "--eval-every", "0", *extra)


def test_train_bad_data(capsys, tmp_path):
    status, _, err = _run(capsys, "sr", "train", "--data", "nowhere")
    assert status == 2 and "nowhere: no such folder; --data" in _one_error_line(err)
    (tmp_path / "empty").mkdir()
    status, _, err = _run(capsys, "sr", "train", "--data", "empty")
    assert status == 2 and "empty: no image files" in _one_error_line(err)
    (tmp_path / "tiny").mkdir()
    _image(tmp_path / "tiny" / "t.png", size=(20, 40))
    status, _, err = _run(capsys, "sr", "train", "--data", "tiny", "--patch", "16", "--scale", "2")
    line = _one_error_line(err)
    assert status == 2 and "tiny: no image is at least 32 px" in line and "--patch" in line
    (tmp_path / "tiny" / "junk.jpg").write_text("garbage")
    status, _, err = _run(capsys, "sr", "train", "--data", "tiny")
    line = _one_error_line(err)
    assert status == 2 and "junk.jpg" in line and "not an image" in line and "--data" in line


def test_train_bad_checkpoints(capsys, tmp_path):
    status, _, err = _train(capsys, tmp_path, "--data", "photos", "--resume")
    assert status == 2 and "run/latest.pt: no checkpoint to resume" in _one_error_line(err)
    x3 = _save_weights(tmp_path / "x3.pt", scale=3, preset="fsrcnn-s", checkpoint=True)
    status, _, err = _train(capsys, tmp_path, "--data", "photos", "--resume", x3)
    line = _one_error_line(err)
    assert status == 2 and "x3.pt" in line and "--scale 3" in line and "--resume" in line
    plain = _save_weights(tmp_path / "plain.pt", preset="fsrcnn-s")
    status, _, err = _train(capsys, tmp_path, "--data", "photos", "--resume", plain)
    line = _one_error_line(err)
    assert status == 2 and "plain.pt" in line and "--init" in line
    big = _save_weights(tmp_path / "big.pt", scale=3, preset="fsrcnn")
    status, _, err = _train(capsys, tmp_path, "--data", "photos", "--init", big)
    line = _one_error_line(err)
    assert status == 2 and "big.pt" in line and "--preset fsrcnn " in line and "(--init)" in line
    # another scale is what --init is for: it starts, and a training checkpoint can seed it too
    assert _train(capsys, tmp_path, "--data", "photos", "--init", x3)[0] == 0
    assert os.path.exists("run/fsrcnn_x2.pt")


# ---- without the sr extra ----------------------------------------------------------------------------
def test_without_the_sr_extra():
    script = (
        "import sys\n"
        "sys.modules['skimage'] = None  # as if scikit-image were not installed\n"
        "import deconv_ext\n"
        "from deconv_ext import cli\n"
        "assert 'PIL.Image' not in sys.modules  # the op needs none of the app's packages (torch loads tqdm)\n"
        "try:\n"
        "    import deconv_ext.sr\n"
        "except ImportError as e:\n"
        "    print('IMPORT:', e)\n"
        "print('SR:', cli.main(['sr', 'upscale', '-i', 'x.png']))\n"
        "print('INFO:', cli.main(['info', '--json']))\n")
    res = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [imp] = [line for line in res.stdout.splitlines() if line.startswith("IMPORT:")]
    assert "scikit-image" in imp and 'pip install "deconv_ext[sr]"' in imp
    assert "SR: 1" in res.stdout and "INFO: 0" in res.stdout
    assert res.stderr.count("deconv-ext: error:") == 1 and "scikit-image" in res.stderr
