"""deconv_ext.ConvTranspose2d as a drop-in nn.ConvTranspose2d, and convert()."""
import copy
import warnings

import pytest
import torch
from torch import nn

import deconv_ext

TIGHT = dict(rtol=1e-9, atol=1e-9)  # float64

CONFIGS = [
    dict(in_channels=4, out_channels=3, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(4, 3), stride=2, padding=1, output_padding=1, groups=2,
         bias=False, dilation=(1, 2)),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_same_construction_and_state_dict(cfg, device):
    torch.manual_seed(3)
    ref = nn.ConvTranspose2d(**cfg).to(device)
    torch.manual_seed(3)
    ours = deconv_ext.ConvTranspose2d(**cfg).to(device)
    assert isinstance(ours, nn.ConvTranspose2d)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k  # same initialisation from the same seed
    assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    # state_dict round trip both ways
    other = nn.ConvTranspose2d(**cfg).to(device)
    other.load_state_dict(ours.state_dict())
    ours2 = deconv_ext.ConvTranspose2d(**cfg).to(device)
    ours2.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 6, device=device)
    torch.testing.assert_close(ours2(x), ref(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(other(x), ours(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("output_size", [(10, 13), [11, 14], torch.Size([2, 6, 11, 13]), None])
def test_forward_output_size(output_size, device):
    cfg = CONFIGS[1]
    ref = nn.ConvTranspose2d(**cfg).to(device).double()
    ours = deconv_ext.ConvTranspose2d(**cfg).to(device).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 6, device=device, dtype=torch.float64)
    out, expected = ours(x, output_size=output_size), ref(x, output_size=output_size)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


def test_unbatched_module_input(device):
    ref = nn.ConvTranspose2d(3, 2, 3, stride=2).to(device).double()
    ours = deconv_ext.convert(copy.deepcopy(ref))
    x = torch.randn(3, 4, 5, device=device, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_bad_output_size(device):
    m = deconv_ext.ConvTranspose2d(2, 2, 3, stride=2).to(device)
    with pytest.raises(ValueError, match="output size"):
        m(torch.randn(1, 2, 4, 4, device=device), output_size=(20, 20))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Sequential(nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), nn.ReLU()))
        self.head = nn.ConvTranspose2d(8, 3, 3, padding=1)
        self.blocks = nn.ModuleList([nn.ConvTranspose2d(3, 3, 1)])


def test_convert_nested_model_keeps_parameters():
    net = _Net().double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = net.blocks[0](net.head(net.body(x)))
    before = {name: p for name, p in net.named_parameters()}
    state = copy.deepcopy(net.state_dict())
    out = deconv_ext.convert(net)
    assert out is net
    convs = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 3 and all(type(m) is deconv_ext.ConvTranspose2d for m in convs)
    after = dict(net.named_parameters())
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)  # same Parameter objects
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    torch.testing.assert_close(net.blocks[0](net.head(net.body(x))), expected)
    # an optimiser built before conversion still trains the converted model
    opt = torch.optim.SGD(before.values(), lr=0.1)
    net.blocks[0](net.head(net.body(x))).sum().backward()
    assert all(p.grad is not None for p in before.values())
    opt.step()


def test_convert_a_bare_layer_and_leaves_subclasses_alone():
    class MyDeconv(nn.ConvTranspose2d):
        pass

    layer = nn.ConvTranspose2d(2, 2, 3)
    new = deconv_ext.convert(layer)
    assert type(new) is deconv_ext.ConvTranspose2d and new.weight is layer.weight
    custom = nn.Sequential(MyDeconv(2, 2, 3))
    with pytest.warns(UserWarning, match=r"0 \(.*MyDeconv\) is a subclass of torch.nn.ConvTranspose2d"):
        assert type(deconv_ext.convert(custom)[0]) is MyDeconv


# ---- ConvTranspose1d: the 2-D op with H = 1 ------------------------------------------------------------
CONFIGS_1D = [
    dict(in_channels=3, out_channels=2, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=4, stride=3, padding=2, output_padding=1, groups=2, bias=False,
         dilation=2),
    dict(in_channels=2, out_channels=2, kernel_size=1, stride=2, padding=0, output_padding=1),
]


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("cfg", CONFIGS_1D)
def test_conv_transpose1d_matches_torch(cfg, unbatched, device):
    torch.manual_seed(5)
    ref = nn.ConvTranspose1d(**cfg).to(device).double()
    torch.manual_seed(5)
    ours = deconv_ext.ConvTranspose1d(**cfg).to(device).double()
    assert isinstance(ours, nn.ConvTranspose1d)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())  # same init
    assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    x = torch.randn(*(() if unbatched else (2,)), cfg["in_channels"], 7, device=device, dtype=torch.float64)
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, expected = ours(xo), ref(xr)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, **TIGHT)
    gy = torch.randn_like(out)
    expected.backward(gy)
    out.backward(gy)
    torch.testing.assert_close(xo.grad, xr.grad, **TIGHT)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, dict(ref.named_parameters())[name].grad, **TIGHT)


def test_conv_transpose1d_output_size_and_state_dict_round_trip(device):
    cfg = CONFIGS_1D[1]
    ref = nn.ConvTranspose1d(**cfg).to(device).double()
    ours = deconv_ext.ConvTranspose1d(**cfg).to(device).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, device=device, dtype=torch.float64)
    for output_size in ([15], (16,), None):
        torch.testing.assert_close(ours(x, output_size=output_size), ref(x, output_size=output_size))
    with pytest.raises(ValueError, match="output size"):
        ours(x, output_size=[40])


def test_convert_swaps_conv_transpose1d():
    net = nn.Sequential(nn.ConvTranspose1d(3, 4, 3, stride=2), nn.ReLU(), nn.ConvTranspose2d(2, 2, 3)).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    expected = net[1](net[0](x))
    weight = net[0].weight
    deconv_ext.convert(net)
    assert type(net[0]) is deconv_ext.ConvTranspose1d and net[0].weight is weight
    assert type(net[2]) is deconv_ext.ConvTranspose2d
    torch.testing.assert_close(net[1](net[0](x)), expected)


# ---- convert() and parametrized layers -------------------------------------------------------------------
P = nn.utils.parametrizations


def _parametrized_nets():
    return {
        "spectral_norm_2d": lambda: P.spectral_norm(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)),
        "weight_norm_2d": lambda: P.weight_norm(nn.ConvTranspose2d(4, 4, 3, groups=2, dilation=2)),
        "spectral_norm_1d": lambda: P.spectral_norm(nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1)),
        "weight_norm_1d": lambda: P.weight_norm(nn.ConvTranspose1d(3, 4, 2), dim=1),
    }


@pytest.mark.parametrize("kind", list(_parametrized_nets()))
def test_convert_parametrized_layers(kind):
    torch.manual_seed(1)
    layer = _parametrized_nets()[kind]().double()
    twin = copy.deepcopy(layer)  # stays on PyTorch
    assert type(layer).__name__.startswith("Parametrized")
    parametrizations = layer.parametrizations
    state = copy.deepcopy(layer.state_dict())
    net = deconv_ext.convert(nn.Sequential(layer))
    new = net[0]
    base = deconv_ext.ConvTranspose1d if "1d" in kind else deconv_ext.ConvTranspose2d
    assert isinstance(new, base) and nn.utils.parametrize.is_parametrized(new, "weight")
    assert new.parametrizations is parametrizations  # the same parametrization objects, with their state
    assert new.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in new.state_dict().items())
    x = torch.randn(2, layer.in_channels, *([5] if "1d" in kind else [5, 4]), dtype=torch.float64)
    for _ in range(2):  # training mode: spectral_norm's power iteration updates its buffers on each call
        out, expected = new(x), twin(x)
        torch.testing.assert_close(out, expected, **TIGHT)
        out.square().sum().backward()
        expected.square().sum().backward()
    originals = [n for n, _ in new.named_parameters() if n.startswith("parametrizations.weight.original")]
    assert originals
    for name in originals:
        ours, ref = new.get_parameter(name).grad, twin.get_parameter(name).grad
        assert ours is not None and ours.abs().max() > 0
        torch.testing.assert_close(ours, ref, **TIGHT)
    for name, buf in twin.named_buffers():  # the power-iteration vectors moved the same way
        torch.testing.assert_close(new.get_buffer(name), buf, **TIGHT)
    nn.utils.parametrize.remove_parametrizations(new, "weight")
    assert type(new) is base
    torch.testing.assert_close(new.weight, twin.weight, **TIGHT)


def test_convert_keeps_hook_based_spectral_norm():
    layer = nn.utils.spectral_norm(nn.ConvTranspose2d(3, 3, 3)).double().eval()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    expected = layer(x)
    new = deconv_ext.convert(layer)
    assert type(new) is deconv_ext.ConvTranspose2d and "weight_orig" in dict(new.named_parameters())
    torch.testing.assert_close(new(x), expected)


def test_convert_verbose_reports_what_it_did(capsys):
    class Custom(nn.ConvTranspose1d):
        pass

    net = nn.Sequential(nn.ConvTranspose2d(2, 2, 3), P.spectral_norm(nn.ConvTranspose2d(2, 2, 3)),
                        deconv_ext.ConvTranspose2d(2, 2, 1), nn.ConvTranspose3d(1, 1, 1), Custom(1, 1, 1),
                        nn.Sequential(nn.ConvTranspose1d(1, 1, 1)))
    with pytest.warns(UserWarning, match="4 .*Custom.* is a subclass of torch.nn.ConvTranspose1d"):
        deconv_ext.convert(net, verbose=True)
    out = capsys.readouterr().out
    assert "swapped:    0 (ConvTranspose2d -> deconv_ext.ConvTranspose2d)" in out
    assert "swapped:    1 (ParametrizedConvTranspose2d -> deconv_ext.ParametrizedConvTranspose2d)" in out
    assert "left alone: 2 (ConvTranspose2d): already deconv_ext" in out
    assert "left alone: 3 (ConvTranspose3d): 3-D" in out
    assert "left alone: 4 (Custom): a subclass of torch.nn.ConvTranspose1d" in out
    assert "swapped:    5.0 (ConvTranspose1d -> deconv_ext.ConvTranspose1d)" in out
    deconv_ext.convert(nn.Linear(2, 2), verbose=True)
    assert "no transposed convolution found" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deconv_ext.convert(nn.Sequential(nn.ConvTranspose2d(1, 1, 1)))  # silent by default
    assert capsys.readouterr().out == ""
