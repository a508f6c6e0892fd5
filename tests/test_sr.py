"""FSRCNN super-resolution (deconv_ext.sr): model, data, training, evaluation, upscaling, CLI, DDP."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import deconv_ext
from deconv_ext import sr
from deconv_ext.sr import data as srdata
from deconv_ext.sr.evaluate import evaluate, psnr_y, ssim_y
from deconv_ext.sr.infer import upscale_y

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _cli(*args, cwd, timeout=120):
    res = subprocess.run([sys.executable, "-m", "deconv_ext", "sr", *args], cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


# ---- model -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["fsrcnn", "fsrcnn-s"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_model_shape(preset, scale, device):
    model = sr.FSRCNN.from_preset(scale, preset).to(device)
    for h, w in ((7, 11), (16, 16), (1, 1)):
        out = model(torch.rand(2, 1, h, w, device=device))
        assert out.shape == (2, 1, scale * h, scale * w)


def test_model_structure_and_init():
    model = sr.FSRCNN(3)
    assert isinstance(model.deconv, deconv_ext.ConvTranspose2d)
    assert (model.deconv.stride, model.deconv.padding, model.deconv.output_padding) == ((3, 3), (4, 4), (2, 2))
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (1, 1)] + [(3, 3)] * 4 + [(1, 1)]
    assert sum(isinstance(m, torch.nn.PReLU) for m in model.body) == len(convs)
    assert 0.0005 < model.deconv.weight.std().item() < 0.002 and not model.deconv.bias.any()
    assert all(not c.bias.any() for c in convs)
    # He init for PReLU(0.25): std = sqrt(2 / ((1 + 0.25^2) * fan_in)); the 5x5 layer has 1400 weights
    assert abs(convs[0].weight.std().item() - (2 / (1.0625 * 25)) ** 0.5) < 0.03
    n = sum(p.numel() for p in sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"]).parameters())
    assert n < sum(p.numel() for p in model.parameters()) < 14000


def test_scale_must_be_int():
    with pytest.raises(ValueError, match="scale"):
        sr.FSRCNN(2.5)


# ---- colour and data ---------------------------------------------------------------------------------
def test_ycbcr_convention():
    ycc = srdata.rgb_to_ycbcr(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8))
    np.testing.assert_allclose(ycc[0, :, 0] * 255, [16, 235], atol=1e-3)
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    assert np.abs(srdata.ycbcr_to_rgb(srdata.rgb_to_ycbcr(rgb)).astype(int) - rgb).max() <= 1


def test_split_is_disjoint_and_offline():
    assert not set(srdata.TRAIN_IMAGES) & set(srdata.HELDOUT_IMAGES)
    for name in srdata.TRAIN_IMAGES + srdata.HELDOUT_IMAGES:
        assert min(srdata.skimage_image(name).size) >= 256


def test_patch_sampler_alignment():
    # on a linear ramp, bicubic shrinking (a symmetric, normalised filter) returns the mean of each
    # scale x scale HR block, so every LR patch must match its HR patch's block means, through all
    # 8 flips/rotations (a misaligned or differently rotated pair would be off by tens of grey levels)
    yy, xx = np.mgrid[0:120, 0:120]
    ramp = np.round(0.8 * xx + 1.2 * yy + 20).astype(np.uint8)
    sampler = srdata.PatchSampler([Image.fromarray(ramp).convert("RGB")], 3, 8, seed=1)
    lr, hr = sampler.sample(32)
    assert lr.shape == (32, 1, 8, 8) and hr.shape == (32, 1, 24, 24)
    block_means = hr.reshape(32, 1, 8, 3, 8, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(lr, block_means, atol=0.02)


# ---- evaluation --------------------------------------------------------------------------------------
def test_metrics_on_known_images():
    ref = np.full((20, 20), 0.5)
    noisy = ref.copy()
    noisy[2:-2, 2:-2] += 0.1  # only the interior differs: shaving 2 keeps it, MSE = 0.01 -> 20 dB
    assert psnr_y(noisy, ref, 2) == pytest.approx(20.0)
    assert psnr_y(noisy, ref, 0) > 20.5  # unshaved, the untouched border lowers the MSE
    assert ssim_y(ref, ref, 2) == pytest.approx(1.0)


class _Bicubic(torch.nn.Module):
    """A stand-in "model" whose output is exactly bicubic upscaling: its PSNR must equal bicubic's."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        up = srdata.bicubic_upscale(x[0, 0].numpy(), self.scale)
        return torch.from_numpy(up.copy())[None, None]


def test_evaluate_smooth_image():
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    smooth = (255 * np.stack([0.5 + 0.4 * np.sin(3 * xx + 2 * yy), 0.5 + 0.3 * np.cos(2 * xx),
                              0.4 + 0.3 * yy], -1)).astype(np.uint8)
    res = evaluate(_Bicubic(2), [("smooth", Image.fromarray(smooth))], 2)
    m = res["mean"]
    assert m["psnr"] == pytest.approx(m["bicubic_psnr"]) and m["psnr_gain"] == pytest.approx(0, abs=1e-9)
    assert m["bicubic_psnr"] > 35 and m["bicubic_ssim"] > 0.95  # a smooth image is easy for bicubic


# ---- training ----------------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """torch.set_num_threads(1) for one test; the thread count is process-wide, so it is put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_training_lowers_loss(one_thread):
    model = sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"])
    sampler = srdata.PatchSampler([srdata.skimage_image("astronaut")], 2, 8, seed=0)
    lr, hr = (torch.from_numpy(a) for a in sampler.sample(16))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


# ---- upscale -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(13, 7), (1, 1), (30, 21)])
def test_upscale_exact_size(size):
    model = sr.FSRCNN(3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = sr.upscale(img, 3, model=model)
    assert isinstance(out, Image.Image) and out.size == (3 * size[0], 3 * size[1]) and out.mode == "RGB"


@pytest.mark.parametrize("mode, expected", [("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("P", "RGB"), ("I;16", "L")])
def test_upscale_keeps_grayscale_and_alpha(mode, expected):
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    if "A" in img.getbands():
        img.putalpha(Image.fromarray(np.full((9, 11), 77, np.uint8)))
    out = sr.upscale(img, 2, model=sr.FSRCNN(2))
    assert out.mode == expected and out.size == (22, 18)
    if "A" in expected:
        assert np.asarray(out.getchannel("A")).min() == np.asarray(out.getchannel("A")).max() == 77


def test_tiled_equals_untiled():
    model = sr.FSRCNN(2)
    torch.nn.init.normal_(model.deconv.weight, std=0.02)  # a non-trivial output without the shipped weights
    torch.nn.init.constant_(model.deconv.bias, 0.5)
    y = srdata.rgb_to_ycbcr(np.asarray(srdata.skimage_image("coffee").crop((0, 0, 150, 90))))[..., 0]
    full = upscale_y(model, y, tile=0)
    tiled = upscale_y(model, y, tile=32)  # 5 x 3 tiles
    assert tiled.shape == full.shape == (180, 300)
    np.testing.assert_allclose(tiled, full, atol=1e-5)


def test_upscale_rejects_wrong_scale():
    with pytest.raises(ValueError, match="scale"):
        sr.upscale(Image.new("RGB", (8, 8)), 3, model=sr.FSRCNN(2))


# ---- pretrained --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pretrained_beats_bicubic(scale):
    model = sr.pretrained(scale)
    assert model.scale == scale and not model.training
    assert sum(p.numel() for p in model.parameters()) < 14000
    img = srdata.skimage_image(srdata.HELDOUT_IMAGES[0]).crop((0, 0, 240, 240))
    m = evaluate(model, [("crop", img)], scale)["mean"]
    assert m["psnr"] > m["bicubic_psnr"] + 0.3 and m["ssim"] > m["bicubic_ssim"]


def test_load_checkpoint_plain_training_and_init(tmp_path):
    src = sr.FSRCNN(3, *sr.PRESETS["fsrcnn-s"])
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": src.state_dict(), "optimizer": {}, "args": {"scale": 3}}, tmp_path / "ckpt.pt")
    for name in ("plain.pt", "ckpt.pt"):  # one loader unwraps both
        model = sr.load_model(tmp_path / name, 3, "fsrcnn-s")
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    x2 = sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"])
    fresh_deconv = x2.deconv.weight.clone()
    assert sr.load_checkpoint(tmp_path / "ckpt.pt", x2, init=True)["args"] == {"scale": 3}  # another scale: init
    assert torch.equal(x2.body[0].weight, src.body[0].weight) and torch.equal(x2.deconv.weight, fresh_deconv)
    with pytest.raises(sr.infer.CheckpointError, match=r"ckpt\.pt: a checkpoint for scale x3, not x2"):
        sr.load_checkpoint(tmp_path / "ckpt.pt", x2)
    with pytest.raises(sr.infer.CheckpointError, match=r"plain\.pt: FSRCNN weights of --preset fsrcnn-s"):
        sr.load_model(tmp_path / "plain.pt", 3, "fsrcnn")
    with pytest.raises(sr.infer.CheckpointError, match=r"plain\.pt: weights only"):
        sr.load_checkpoint(tmp_path / "plain.pt", sr.FSRCNN(3, *sr.PRESETS["fsrcnn-s"]), resume=True)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(sr.infer.CheckpointError, match=r"other\.pt: not FSRCNN weights"):
        sr.load_model(tmp_path / "other.pt", 2)


def test_pretrained_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        sr.pretrained(5)


# ---- CLI ---------------------------------------------------------------------------------------------
def test_cli_help(tmp_path):
    assert "train" in _cli("--help", cwd=tmp_path)
    # the three actions' --help in one interpreter (each process start costs seconds on CI)
    script = ("import contextlib, io, sys\nfrom deconv_ext.cli import main\n"
              "for action in ('train', 'eval', 'upscale'):\n"
              "    buf = io.StringIO()\n"
              "    with contextlib.redirect_stdout(buf):\n"
              "        try:\n"
              "            main(['sr', action, '--help'])\n"
              "        except SystemExit as e:\n"
              "            assert e.code == 0, e.code\n"
              "    assert buf.getvalue().startswith('usage: deconv-ext sr ' + action), buf.getvalue()\n"
              "    print(action, 'ok')\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["train", "ok", "eval", "ok", "upscale", "ok"], res.stderr


def test_cli_train_resume_eval_upscale(tmp_path):
    run = tmp_path / "run"
    common = ["--scale", "2", "--preset", "fsrcnn-s", "--batch", "4", "--patch", "8", "--device", "cpu",
              "--threads", "1", "--out", str(run), "--quiet", "--eval-every", "0"]
    _cli("train", "--steps", "2", *common, cwd=tmp_path)
    assert {"latest.pt", "final.pt", "fsrcnn_x2.pt", "train.log"} <= set(os.listdir(run))
    out = _cli("train", "--steps", "3", "--resume", *common, cwd=tmp_path)
    assert "resumed" in out and torch.load(run / "latest.pt", weights_only=False)["step"] == 3

    out = _cli("eval", "--scale", "2", "--preset", "fsrcnn-s", "--weights", str(run / "fsrcnn_x2.pt"),
               "--json", "e.json", cwd=tmp_path)
    res = json.loads((tmp_path / "e.json").read_text())
    assert set(res["images"]) == set(srdata.HELDOUT_IMAGES) and "mean" in out

    _cli("eval", "--scale", "4", cwd=tmp_path)  # shipped weights, default held-out set
    assert json.loads((tmp_path / "sr_eval_x4.json").read_text())["mean"]["psnr_gain"] > 0.2

    Image.new("RGB", (9, 5), (200, 30, 60)).save(tmp_path / "small.png")
    _cli("upscale", "-i", "small.png", "-o", "big.png", "-s", "3", cwd=tmp_path)
    assert Image.open(tmp_path / "big.png").size == (27, 15)
    out = _cli("upscale", "-s", "2", "-o", "side.png", cwd=tmp_path)
    hr = srdata.crop_to_multiple(srdata.skimage_image("chelsea"), 2)
    w, h = Image.open(tmp_path / "side.png").size
    assert w >= 3 * hr.size[0] and h > hr.size[1]  # three panels side by side, a zoomed row below
    assert "bicubic" in out and "FSRCNN" in out and "dB" in out


# ---- DDP ---------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_processes(tmp_path):
    """torchrun with 2 CPU processes (gloo): the run completes and both ranks hold identical weights."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "deconv_ext", "sr", "train", "--steps", "3", "--scale", "2", "--preset", "fsrcnn-s", "--batch",
           "8", "--patch", "8", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet",
           "--eval-every", "0", "--check-ddp-sync"]
    res = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ddp weights identical on 2 ranks" in res.stdout
    assert os.path.exists(out / "fsrcnn_x2.pt") and "world=2" in (out / "train.log").read_text()
