"""Forward-mode AD and torch.func (jvp, jacfwd, jacrev, hessian, grad, vmap, per-sample gradients) against
F.conv_transpose2d on the same calls, in float64; and forward AD of every op against numerical derivatives."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import deconv_ext
from _helpers import make_case

ops = torch.ops.deconv_ext
TIGHT = dict(rtol=1e-9, atol=1e-9)  # float64

# (n, c_in per group, c_out per group, h, w, kernel, params); n = None: unbatched input
CASES = [
    (2, 1, 2, 2, 3, 3, dict()),
    (1, 2, 2, 3, 3, 3, dict(stride=2, padding=1, output_padding=1)),
    (2, 1, 2, 2, 3, (2, 3), dict(stride=(3, 1), padding=(0, 1), dilation=(1, 2))),
    (1, 2, 1, 3, 2, 2, dict(groups=2, stride=2, dilation=2, output_padding=1)),
    (None, 2, 2, 3, 3, 2, dict(stride=2, padding=1, groups=2)),
]
IDS = ["plain", "strided", "dilated", "grouped", "unbatched"]


def _case(case, bias=True):
    n, cin, cout, h, w, k, params = case
    x, wt, b = make_case(n or 1, cin, cout, h, w, k, groups=params.get("groups", 1), bias=bias)
    return (x[0] if n is None else x), wt, b, params


@pytest.fixture(autouse=True)
def _no_batching_fallback():
    """Every op under vmap (also inside jacrev, hessian, per-sample gradients) must take its batching rule:
    with functorch's per-op loop turned off, a missing rule raises."""
    was = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(was)


def _both(fn_of_conv):
    """fn_of_conv(conv) for conv = deconv_ext's and PyTorch's."""
    return fn_of_conv(deconv_ext.conv_transpose2d), fn_of_conv(F.conv_transpose2d)


def _assert_close_tree(ours, ref):
    ours, ref = torch.utils._pytree.tree_leaves(ours), torch.utils._pytree.tree_leaves(ref)
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, **TIGHT)


# ---- forward AD -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias, tangents", [(True, t) for t in ("x", "w", "b", "all")]
                         + [(False, t) for t in ("x", "w", "all")])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp(case, bias, tangents):
    x, w, b, params = _case(case, bias)
    primals = (x, w) + ((b,) if bias else ())
    dirs = tuple(torch.randn_like(p) if tangents in ("all", name) else torch.zeros_like(p)
                 for p, name in zip(primals, "xwb"))

    def run(conv):
        return jvp(lambda *a: conv(a[0], a[1], a[2] if bias else None, **params), primals, dirs)

    (y, dy), (y_ref, dy_ref) = _both(run)
    assert dy_ref.abs().max() > 0  # the comparison would catch a zero tangent
    _assert_close_tree((y, dy), (y_ref, dy_ref))


@pytest.mark.parametrize("no_grad", [False, True])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dual_tensors(case, no_grad):
    """torch.autograd.forward_ad: a tangent on any subset of the inputs, grad mode on or off."""
    x, w, b, params = _case(case)
    tx, tw, tb = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    for with_tangent in ((0,), (1,), (2,), (0, 1, 2)):
        def run(conv):
            with fwAD.dual_level(), torch.set_grad_enabled(not no_grad):
                args = [fwAD.make_dual(p, t) if i in with_tangent else p
                        for i, (p, t) in enumerate(zip((x, w, b), (tx, tw, tb)))]
                y, dy = fwAD.unpack_dual(conv(*args, **params))
                assert dy is not None, "no tangent"
                return y, dy

        _assert_close_tree(*_both(run))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacfwd_and_jacrev(case):
    x, w, b, params = _case(case)
    for argnums in (0, 1, 2):
        for jac in (jacfwd, jacrev):
            _assert_close_tree(*_both(lambda conv: jac(lambda *a: conv(*a, **params), argnums=argnums)(x, w, b)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hessian(case):
    """hessian = jacfwd(jacrev): forward over reverse, through the backward ops' jvp; and reverse over reverse.
    A nonlinear loss, so the Hessian is not zero; the cross term (x, w) is where bilinearity shows."""
    x, w, b, params = _case(case)

    def loss(conv):
        return lambda x, w, b: conv(x, w, b, **params).sin().sum()

    argnums = (0, 1, 2)
    _assert_close_tree(*_both(lambda conv: hessian(loss(conv), argnums=argnums)(x, w, b)))
    _assert_close_tree(*_both(lambda conv: jacrev(jacrev(loss(conv), argnums=argnums), argnums=argnums)(x, w, b)))


def test_hessian_vector_product_forward_over_reverse_dual_tensors():
    """The same forward-over-reverse with plain autograd: forward AD through torch.autograd.grad."""
    x, w, b, params = _case(CASES[1])
    tw = torch.randn_like(w)

    def run(conv):
        xr = x.clone().requires_grad_(True)
        with fwAD.dual_level():
            y = conv(xr, fwAD.make_dual(w, tw), b, **params).sin().sum()
            (gx,) = torch.autograd.grad(y, xr, create_graph=True)
            return fwAD.unpack_dual(gx)

    _assert_close_tree(*_both(run))


# ---- grad, vmap, per-sample gradients -----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad(case):
    x, w, b, params = _case(case)
    _assert_close_tree(*_both(
        lambda conv: grad(lambda *a: conv(*a, **params).square().sum(), argnums=(0, 1, 2))(x, w, b)))


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_per_sample_gradients(case):
    """vmap(grad(...)) over the batch: the per-sample weight and bias gradients of a per-sample loss."""
    x, w, b, params = _case(case)
    x = torch.cat([x, x.flip(0) * 2])  # at least two samples

    def per_sample(conv):
        def loss(xi, w, b):
            return conv(xi.unsqueeze(0), w, b, **params).sin().sum()
        return vmap(grad(loss, argnums=(1, 2)), in_dims=(0, None, None))(x, w, b)

    ours, ref = _both(per_sample)
    assert ours[0].shape == (x.shape[0],) + w.shape
    _assert_close_tree(ours, ref)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_input_weight_and_bias(case):
    x, w, b, params = _case(case)
    xs, ws, bs = torch.stack([x, -x, 2 * x]), torch.stack([w, w.flip(-1), 3 * w]), torch.stack([b, -b, b * b])
    for in_dims in ((0, None, None), (None, 0, None), (None, None, 0), (0, 0, 0), (1, 2, None), (None, 1, 0)):
        args = [one if d is None else many.movedim(0, d) for d, one, many in zip(in_dims, (x, w, b), (xs, ws, bs))]
        _assert_close_tree(*_both(lambda conv: vmap(lambda *a: conv(*a, **params), in_dims=in_dims)(*args)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_of_the_fused_backward(case):
    """conv_transpose2d_backward under vmap (its batching rule: the single ops' rules) is the loop of its calls."""
    x, w, b, params = _case(case)
    if x.dim() == 3:
        x = x[None]
    y = ops.conv_transpose2d(x, w, b, *_op_args(params))
    gys, xs, ws = torch.stack([y, -y, 2 * y]), torch.stack([x, x.flip(-1), -x]), torch.stack([w, 3 * w, -w])
    args = (list(w.shape[2:]), *_op_args(params), [True, True, True])

    def fused(gy, x, w):
        return ops.conv_transpose2d_backward(gy, x, w, *args)

    for in_dims in ((0, None, None), (0, 0, None), (None, None, 0), (0, 0, 0)):
        batched = [many if d == 0 else one for d, one, many in zip(in_dims, (y, x, w), (gys, xs, ws))]
        ours = vmap(fused, in_dims=in_dims)(*batched)
        loop = [fused(*[t[i] if d == 0 else t for d, t in zip(in_dims, batched)]) for i in range(3)]
        _assert_close_tree(ours, [torch.stack(r) for r in zip(*loop)])


def _op_args(params):
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return (pair(params.get("stride", 1)), pair(params.get("padding", 0)), pair(params.get("output_padding", 0)),
            params.get("groups", 1), pair(params.get("dilation", 1)))


def test_grad_of_vmap_and_vmap_of_vmap():
    x, w, b, params = _case(CASES[3])
    xs, ws = torch.stack([x, -x, 2 * x]), torch.stack([w, 3 * w])

    def run(conv):
        f = lambda x, w: conv(x, w, b, **params)  # noqa: E731
        g = grad(lambda ws: vmap(f, in_dims=(None, 0))(x, ws).sin().sum())(ws)
        return g, vmap(vmap(f, in_dims=(None, 0)), in_dims=(0, None))(xs, ws)

    _assert_close_tree(*_both(run))


def test_vmap_of_jvp_and_jvp_of_vmap():
    x, w, b, params = _case(CASES[1])
    xs, txs = torch.stack([x, -x]), torch.randn(2, *x.shape, dtype=x.dtype)

    def run(conv):
        f = lambda x: conv(x, w, b, **params)  # noqa: E731
        return vmap(lambda p, t: jvp(f, (p,), (t,)))(xs, txs), jvp(vmap(f), (xs,), (txs,))

    _assert_close_tree(*_both(run))


# ---- each op's forward AD against numerical derivatives ----------------------------------------------------
def _op_calls(case):
    """(name, op, differentiable inputs, rest) for the four ops at one sample."""
    x, w, b, params = _case(case)

    def pair(name, default):
        v = params.get(name, default)
        return (v, v) if isinstance(v, int) else tuple(v)

    p = (pair("stride", 1), pair("padding", 0), pair("output_padding", 0), params.get("groups", 1),
         pair("dilation", 1))
    gy = torch.randn_like(ops.conv_transpose2d(x, w, b, *p))
    return [
        ("conv_transpose2d", lambda x, w, b: ops.conv_transpose2d(x, w, b, *p), (x, w, b)),
        ("grad_input", lambda gy, w: ops.conv_transpose2d_grad_input(gy, w, *p), (gy, w)),
        ("grad_weight", lambda gy, x: ops.conv_transpose2d_grad_weight(gy, x, w.shape[2:], *p), (gy, x)),
        ("grad_bias", lambda gy: ops.conv_transpose2d_grad_bias(gy), (gy,)),
    ]


# smaller still: gradgradcheck builds numerical Jacobians of the backward
GRADCHECK_CASES = [(1, 1, 2, 2, 3, 2, dict(stride=2, padding=1, output_padding=1)),
                   (1, 1, 1, 2, 2, (2, 3), dict(stride=(1, 2), dilation=(2, 1), groups=2))]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=["strided", "dilated-grouped"])
def test_forward_ad_of_every_op_gradcheck(case):
    """gradcheck with check_forward_ad: each op's jvp against finite differences (an oracle independent of
    PyTorch's convolution), and gradgradcheck forward-over-reverse through each op's backward."""
    for name, fn, inputs in _op_calls(case):
        inputs = tuple(t.detach().clone().requires_grad_(True) for t in inputs)
        assert torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_backward_ad=False), name
        assert torch.autograd.gradgradcheck(fn, inputs, check_fwd_over_rev=True, check_rev_over_rev=False,
                                         check_undefined_grad=False), name


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_jvp_of_the_backward_ops_matches_torch(case):
    """The adjoint ops under torch.func.jvp against the same adjoints of F.conv_transpose2d (via vjp)."""
    x, w, b, params = _case(case)
    gy = torch.randn_like(F.conv_transpose2d(x, w, b, **params))
    tgy, tw, tx = torch.randn_like(gy), torch.randn_like(w), torch.randn_like(x)

    def adjoints(conv):
        grad_input = lambda gy, w: vjp(lambda x: conv(x, w, None, **params), x)[1](gy)[0]  # noqa: E731
        grad_weight = lambda gy, x: vjp(lambda w: conv(x, w, None, **params), w)[1](gy)[0]  # noqa: E731
        return (jvp(grad_input, (gy, w), (tgy, tw)), jvp(grad_weight, (gy, x), (tgy, tx)))

    _assert_close_tree(*_both(adjoints))
