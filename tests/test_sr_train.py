"""FSRCNN training additions: scale augmentation, the mean shift, per-layer diagnostics, the data-gathering script."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deconv_ext import sr
from deconv_ext.sr import data as srdata
from deconv_ext.sr.infer import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _gather_module():
    spec = importlib.util.spec_from_file_location("gather_sr_data", os.path.join(ROOT, "scripts", "gather_sr_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- scale augmentation ------------------------------------------------------------------------------
def test_shrink():
    img = Image.new("RGB", (100, 60), (10, 200, 30))
    assert srdata.shrink(img, 1.0) is img
    assert srdata.shrink(img, 0.7).size == (70, 42)
    for bad in (0, 1.5, -0.5):
        with pytest.raises(ValueError, match="factor in"):
            srdata.shrink(img, bad)


def test_patch_sampler_scale_augmentation():
    yy, xx = np.mgrid[0:120, 0:100]
    ramp = Image.fromarray(np.round(0.8 * xx + 1.2 * yy + 20).astype(np.uint8)).convert("RGB")
    plain = srdata.PatchSampler([ramp], 2, 8, seed=0)
    aug = srdata.PatchSampler([ramp], 2, 8, seed=0, shrinks=srdata.PAPER_SHRINKS)
    assert len(plain.pairs) == 1 and len(aug.pairs) == 5
    # HR sizes: the shrunk image cropped to a multiple of the scale; LR = HR / scale
    expect = [(round(120 * f) // 2 * 2, round(100 * f) // 2 * 2) for f in srdata.PAPER_SHRINKS]
    assert [hr.shape for hr, _ in aug.pairs] == expect
    assert all(lr.shape == (hr.shape[0] // 2, hr.shape[1] // 2) for hr, lr in aug.pairs)
    # a shrunk copy too small for one patch is skipped, not an error
    assert len(srdata.PatchSampler([ramp], 2, 40, seed=0, shrinks=(1.0, 0.6)).pairs) == 1
    lr, hr = aug.sample(16)
    assert lr.shape == (16, 1, 8, 8) and hr.shape == (16, 1, 16, 16)


# ---- the mean shift ----------------------------------------------------------------------------------
def test_center_shift_and_old_weights():
    torch.manual_seed(0)
    model = sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"])
    assert model.center.item() == 0.5 and "center" in model.state_dict()
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        assert torch.allclose(model(x), model.deconv(model.body(x - 0.5)) + 0.5)
    # a state dict from before the mean shift (no "center") is the network without it
    old = {k: v for k, v in model.state_dict().items() if k != "center"}
    loaded = sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"])
    loaded.load_state_dict(old)
    assert loaded.center.item() == 0.0 and "center" not in old
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.deconv(model.body(x)))


def test_init_keeps_the_source_center(tmp_path):
    src = sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"])
    torch.save({k: v for k, v in src.state_dict().items() if k != "center"}, tmp_path / "old.pt")
    torch.save(src.state_dict(), tmp_path / "new.pt")
    for name, center in (("old.pt", 0.0), ("new.pt", 0.5)):
        dst = sr.FSRCNN(3, *sr.PRESETS["fsrcnn-s"])
        load_checkpoint(str(tmp_path / name), dst, init=True)
        assert dst.center.item() == center
        assert torch.equal(dst.body[0].weight, src.body[0].weight)


# ---- diagnostics, --shrinks and --data through the CLI -------------------------------------------------
def test_cli_train_diagnostics_and_shrinks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    srdata.skimage_image("astronaut").crop((0, 0, 96, 80)).save(data / "a.png")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "deconv_ext", "sr", "train", "--steps", "4", "--scale", "2", "--preset", "fsrcnn-s",
           "--batch", "4", "--patch", "8", "--device", "cpu", "--threads", "1", "--out", str(run), "--quiet",
           "--eval-every", "0", "--diag-every", "2", "--shrinks", "1,0.8,0.6", "--data", str(data)]
    res = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    diag = [ln.split() for ln in (run / "train.log").read_text().splitlines() if ln.startswith("diag ")]
    weights = [n for n, p in sr.FSRCNN(2, *sr.PRESETS["fsrcnn-s"]).named_parameters() if p.dim() > 1]
    assert [(d[2], d[3]) for d in diag] == [(s, n) for s in ("2", "4") for n in weights]
    for d in diag:  # |g|, upd/w, drift and sqrt(v)/eps are finite, positive numbers
        vals = [float(d[d.index(key) + 1]) for key in ("|g|", "upd/w", "drift", "sqrt(v)/eps")]
        assert all(np.isfinite(v) and v > 0 for v in vals), d


def test_train_loss_option(tmp_path, monkeypatch):
    # --loss l1 trains on nn.functional.l1_loss (and logs no train_psnr, which is an MSE reading); mse is the default
    from deconv_ext import cli
    calls = {"l1": 0, "mse": 0}
    l1, mse = torch.nn.functional.l1_loss, torch.nn.functional.mse_loss
    monkeypatch.setattr(torch.nn.functional, "l1_loss", lambda *a, **k: (calls.__setitem__("l1", calls["l1"] + 1), l1(*a, **k))[1])
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda *a, **k: (calls.__setitem__("mse", calls["mse"] + 1), mse(*a, **k))[1])
    base = ["sr", "train", "--steps", "3", "--scale", "2", "--preset", "fsrcnn-s", "--batch", "2", "--patch", "8",
            "--device", "cpu", "--threads", "1", "--quiet", "--eval-every", "0", "--log-every", "1"]
    assert cli.main(base + ["--out", str(tmp_path / "l1"), "--loss", "l1"]) in (0, None)
    assert calls == {"l1": 3, "mse": 0}
    log = (tmp_path / "l1" / "train.log").read_text()
    assert "step 3 loss" in log and "train_psnr" not in log
    assert cli.main(base + ["--out", str(tmp_path / "mse")]) in (0, None)
    assert calls == {"l1": 3, "mse": 3}
    assert "train_psnr" in (tmp_path / "mse" / "train.log").read_text()


def test_cli_train_rejects_bad_shrinks(tmp_path):
    cmd = [sys.executable, "-m", "deconv_ext", "sr", "train", "--steps", "1", "--preset", "fsrcnn-s", "--batch", "2",
           "--patch", "8", "--device", "cpu", "--out", str(tmp_path / "r"), "--quiet", "--shrinks", "1,1.2"]
    res = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--shrinks" in res.stderr


# ---- scripts/gather_sr_data.py -----------------------------------------------------------------------
def test_gather_errors_clearly_without_the_package(tmp_path, capsys):
    gather = _gather_module()
    assert gather.main([str(tmp_path / "out"), "--root", str(tmp_path / "no_wallpapers")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y plasma-workspace-wallpapers" in err and "missing" in err
    assert not (tmp_path / "out").exists()


def test_gather_from_a_fake_package(tmp_path):
    gather = _gather_module()
    root = tmp_path / "wallpapers"
    for i, (name, file) in enumerate({**gather.PLASMA_TRAIN, **gather.PLASMA_HELDOUT}.items()):
        (root / name / "contents" / "images").mkdir(parents=True)
        Image.new("RGB", (200, 120), (i * 20, 100, 50)).save(root / name / "contents" / "images" / file)
    out = tmp_path / "out"
    written = gather.gather(str(out), root=str(root), max_side=100, skimage_photos=False, log=lambda *a: None)
    assert len(written["train"]) == len(gather.PLASMA_TRAIN) and len(written["heldout"]) == len(gather.PLASMA_HELDOUT)
    assert not set(gather.PLASMA_TRAIN) & set(gather.PLASMA_HELDOUT)
    assert all(Image.open(p).size == (100, 60) for p in written["train"] + written["heldout"])
    assert srdata.list_images(str(out / "train")) == sorted(written["train"])
