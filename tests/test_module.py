"""deconv_ext.ConvTranspose2d as a drop-in nn.ConvTranspose2d, and convert()."""
import copy

import pytest
import torch
from torch import nn

import deconv_ext

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
    assert type(deconv_ext.convert(custom)[0]) is MyDeconv
