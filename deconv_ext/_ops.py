"""Autograd, forward-mode AD and torch.func support for the C++ ops in csrc/ops.cpp (their schemas, meta
kernels and autocast live there).

The forward y = T(x, w) + b is bilinear in (x, w), and its three adjoints are ops of the same family:
    grad_input  gx = T*(gy, w)     grad_weight  gw = W(x, gy)     grad_bias  gb = sum(gy)
Each of those is linear in each argument, so its own derivative is again a member of the family
(e.g. d<T*(gy, w), ggx> / dgy = T(ggx, w)). That gives, with no extra kernels:
  backward  the adjoints above; the backward calls the same ops, so double and higher backward work;
  jvp       the product rule, two calls of the same op: dy = T(dx, w) + T(x, dw) + db (likewise for the
            three adjoint ops), so forward AD, forward-over-reverse and reverse-over-forward work.

Design. Each op's Autograd dispatch key gets a Python kernel that applies one autograd.Function
(forward / setup_context / backward / jvp) when the call is differentiated, and otherwise goes straight to the
backend kernel. That is what torch.library.register_autograd does, but the Function it generates has no
jvp (torch 2.14 has no register_jvp), so forward AD saw no formula and dropped the tangent (a silent zero
from torch.func.jvp), and torch.func refused it (no setup_context).
Why behind the dispatcher rather than a Function called from functional.py: the ops stay the entry point.
torch.compile and torch.export see one opaque op, as before (the kernel only runs when AOTAutograd traces
the backward); opcheck tests the ops users call; torch.ops.deconv_ext.* called directly differentiates the
same way; and the formulas call the ops, so every derivative of a derivative takes the same path.
Why a _SingleLevelFunction: the kernel runs at one functorch level, like a built-in op's autograd kernel
(functorch has already unwrapped the outer levels' transforms into this dispatch). A plain
autograd.Function would be re-routed through functorch's custom_function_call from there, which the
dispatcher cannot serve at the Autograd key. A _SingleLevelFunction applied under
enable_single_level_autograd_function() records at this level only, which is how functorch's own
per-level Functions run (torch/_functorch/autograd_function.py); the lower levels are reached by the
redispatch in forward, with the caller's grad modes restored (autograd.Function turns them off), so
nested transforms (hessian, jacfwd(jacrev), vmap(grad)) record at every level.
torch.func.vmap reaches the op before autograd: each op has a batching rule (register_vmap) that makes one call
of the same op for the whole batch (below), so vmap(grad(...)) per-sample gradients are one call per op too.

The kernel applies the Function when grad mode is on and an input requires grad, or when a forward-AD dual
level is active and forward grad mode is on; so under forward AD the Function always runs, its jvp handles
a tangent on any tensor input, and no tangent is ever dropped.
"""
import typing

import torch
import torch.autograd.forward_ad as fwAD
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd.function import _SingleLevelFunction

from . import _C  # noqa: F401  (loads the library: registers the ops)

ops = torch.ops.deconv_ext


def _params(ctx):
    return ctx.stride, ctx.padding, ctx.output_padding, ctx.groups, ctx.dilation


def _save_params(ctx, stride, padding, output_padding, groups, dilation):
    ctx.stride, ctx.padding, ctx.output_padding = stride, padding, output_padding
    ctx.groups, ctx.dilation = groups, dilation


class _Call(typing.NamedTuple):
    """How the op was called: its dispatch key set and the grad modes, for the Function to redispatch with."""
    keyset: torch._C.DispatchKeySet
    grad_enabled: bool
    fwd_grad_enabled: bool


def _below_autograd(op, keyset, *args):
    """The backend kernel (past the Autograd key), as a built-in op's autograd kernel redispatches."""
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)


def _forward(op, call, *args):
    """Function.forward: autograd.Function runs it with grad and forward grad off; they are restored for the
    redispatch so that, under nested torch.func transforms, the lower levels (reached through the same
    redispatch) still record and carry tangents, as they do for a built-in op."""
    with torch.set_grad_enabled(call.grad_enabled), fwAD._set_fwd_grad_enabled(call.fwd_grad_enabled):
        return _below_autograd(op, call.keyset, *args)


def _sum(terms):
    """The sum of the tangent terms present; at least one is, since jvp runs only for a tangent."""
    terms = [t for t in terms if t is not None]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


# ---- forward: y = T(x, w) + b ----------------------------------------------------------------------
class ConvTranspose2dFn(_SingleLevelFunction):
    @staticmethod
    def forward(x, w, b, stride, padding, output_padding, groups, dilation, call):
        return _forward(ops.conv_transpose2d.default, call, x, w, b, stride, padding, output_padding, groups,
                        dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, *params, _ = inputs
        _save_params(ctx, *params)
        ctx.has_bias = b is not None
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_w else None, w if need_x else None)
        ctx.save_for_forward(x, w)
        ctx.kernel_size = tuple(w.shape[2:])
        ctx.output_shape = output.shape

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        if torch.is_grad_enabled():  # a graph of the backward is wanted (double backward): the single ops
            gx, gw, gb = _backward_by_single_ops(gy, x, w, ctx.kernel_size, *_params(ctx), mask)
        else:  # one call, which shares work between the gradients (the CPU's deinterleaved gy)
            gx, gw, gb = ops.conv_transpose2d_backward(gy, x, w, ctx.kernel_size, *_params(ctx), mask)
        return gx, gw, gb, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dw, db, *_):
        x, w = ctx.saved_tensors
        return _sum([
            None if dx is None else ops.conv_transpose2d(dx, w, None, *_params(ctx)),
            None if dw is None else ops.conv_transpose2d(x, dw, None, *_params(ctx)),
            None if db is None else db.reshape(1, -1, 1, 1).expand(ctx.output_shape),
        ])


# ---- grad_input: gx = T*(gy, w) ----------------------------------------------------------------------
class GradInputFn(_SingleLevelFunction):
    @staticmethod
    def forward(gy, w, stride, padding, output_padding, groups, dilation, call):
        return _forward(ops.conv_transpose2d_grad_input.default, call, gy, w, stride, padding, output_padding,
                        groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, w, *params, _ = inputs
        _save_params(ctx, *params)
        ctx.save_for_backward(gy if ctx.needs_input_grad[1] else None, w if ctx.needs_input_grad[0] else None)
        ctx.save_for_forward(gy, w)
        ctx.kernel_size = tuple(w.shape[2:])

    @staticmethod
    def backward(ctx, ggx):
        gy, w = ctx.saved_tensors
        d_gy = d_w = None
        if ctx.needs_input_grad[0]:
            d_gy = ops.conv_transpose2d(ggx, w, None, *_params(ctx))
        if ctx.needs_input_grad[1]:
            d_w = ops.conv_transpose2d_grad_weight(gy, ggx, ctx.kernel_size, *_params(ctx))
        return d_gy, d_w, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dgy, dw, *_):
        gy, w = ctx.saved_tensors
        return _sum([
            None if dgy is None else ops.conv_transpose2d_grad_input(dgy, w, *_params(ctx)),
            None if dw is None else ops.conv_transpose2d_grad_input(gy, dw, *_params(ctx)),
        ])


# ---- grad_weight: gw = W(x, gy) ----------------------------------------------------------------------
class GradWeightFn(_SingleLevelFunction):
    @staticmethod
    def forward(gy, x, kernel_size, stride, padding, output_padding, groups, dilation, call):
        return _forward(ops.conv_transpose2d_grad_weight.default, call, gy, x, kernel_size, stride, padding,
                        output_padding, groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, x, kernel_size, *params, _ = inputs
        _save_params(ctx, *params)
        ctx.kernel_size = kernel_size
        ctx.save_for_backward(gy if ctx.needs_input_grad[1] else None, x if ctx.needs_input_grad[0] else None)
        ctx.save_for_forward(gy, x)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        d_gy = d_x = None
        if ctx.needs_input_grad[0]:
            d_gy = ops.conv_transpose2d(x, ggw, None, *_params(ctx))
        if ctx.needs_input_grad[1]:
            d_x = ops.conv_transpose2d_grad_input(gy, ggw, *_params(ctx))
        return d_gy, d_x, None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dgy, dx, *_):
        gy, x = ctx.saved_tensors
        return _sum([
            None if dgy is None else ops.conv_transpose2d_grad_weight(dgy, x, ctx.kernel_size, *_params(ctx)),
            None if dx is None else ops.conv_transpose2d_grad_weight(gy, dx, ctx.kernel_size, *_params(ctx)),
        ])


# ---- grad_bias: gb = sum over (N, H, W) of gy -----------------------------------------------------------
class GradBiasFn(_SingleLevelFunction):
    @staticmethod
    def forward(gy, call):
        return _forward(ops.conv_transpose2d_grad_bias.default, call, gy)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, ggb):
        return ggb.reshape(1, -1, 1, 1).expand(ctx.shape), None

    @staticmethod
    def jvp(ctx, dgy, _):
        return ops.conv_transpose2d_grad_bias(dgy)


# ---- backward: the three gradients an output mask asks for, in one call ---------------------------------------
def _backward_by_single_ops(gy, x, w, kernel_size, stride, padding, output_padding, groups, dilation, mask):
    """What conv_transpose2d_backward computes, as calls of the three single ops, each differentiable."""
    params = (stride, padding, output_padding, groups, dilation)
    return (ops.conv_transpose2d_grad_input(gy, w, *params) if mask[0] else None,
            ops.conv_transpose2d_grad_weight(gy, x, kernel_size, *params) if mask[1] else None,
            ops.conv_transpose2d_grad_bias(gy) if mask[2] else None)


def _backward_kernel(keyset, gy, x, w, kernel_size, stride, padding, output_padding, groups, dilation, mask):
    """Autograd kernel of conv_transpose2d_backward: differentiated through the single ops (their formulas
    and jvps), else the backend's fused kernel."""
    if _differentiating([t for t in (gy, x, w) if t is not None]):
        return _backward_by_single_ops(gy, x, w, kernel_size, stride, padding, output_padding, groups, dilation,
                                       mask)
    return _below_autograd(ops.conv_transpose2d_backward.default, keyset, gy, x, w, kernel_size, stride, padding,
                           output_padding, groups, dilation, mask)


# ---- the Autograd kernels -------------------------------------------------------------------------------
def _differentiating(args):
    """Whether this call must record a backward or carry a tangent (see the module docstring)."""
    if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
        return True
    return torch._C._is_fwd_grad_enabled() and fwAD._current_level >= 0


def _autograd_kernel(op, function):
    def kernel(keyset, *args):
        if _differentiating(args):
            with enable_single_level_autograd_function():
                return function.apply(*args, _Call(keyset, torch.is_grad_enabled(),
                                                   torch._C._is_fwd_grad_enabled()))
        return _below_autograd(op, keyset, *args)
    return kernel


_lib = torch.library.Library("deconv_ext", "IMPL")  # held: dropping it would unregister the kernels
for _name, _function in (("conv_transpose2d", ConvTranspose2dFn), ("conv_transpose2d_grad_input", GradInputFn),
                         ("conv_transpose2d_grad_weight", GradWeightFn),
                         ("conv_transpose2d_grad_bias", GradBiasFn)):
    _lib.impl(_name, _autograd_kernel(getattr(ops, _name).default, _function), "Autograd", with_keyset=True)
_lib.impl("conv_transpose2d_backward", _backward_kernel, "Autograd", with_keyset=True)


# ---- vmap: batching rules -----------------------------------------------------------------------------------
# One call of the same op for the whole vmapped batch B, instead of functorch's fallback (B calls). A batch on the
# data tensors only folds into N. A batch on the weight (or on both) becomes B times the groups: channels
# (N, B*C, ...) and weight (B*C_in, ...) with groups B*g keep sample b's channels in groups b*g ... b*g + g - 1,
# so the groups do not mix samples; a tensor not batched is repeated along its channels to match.
def _front(t, bdim):
    return t if bdim is None else t.movedim(bdim, 0)


def _fold(t):
    """(B, N, ...) -> (B*N, ...)."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _into_channels(t, bdim, batch_size):
    """(B, N, C, H, W) -> (N, B*C, H, W) if batched, else (N, C, H, W) repeated B times along C."""
    if bdim is None:
        return t.repeat(1, batch_size, 1, 1)
    t = t.movedim(bdim, 1)
    return t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:])


def _out_of_channels(t, batch_size):
    """(N, B*C, H, W) -> (N, B, C, H, W): the batch at dim 1."""
    return t.reshape(t.shape[0], batch_size, t.shape[1] // batch_size, *t.shape[2:])


def _vmap_conv_transpose2d(info, in_dims, x, w, b, stride, padding, output_padding, groups, dilation):
    x_bdim, w_bdim, b_bdim = in_dims[:3]
    B = info.batch_size
    if w_bdim is None:
        if x_bdim is None:  # only the bias is batched
            y = ops.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation)
            return _front(b, b_bdim).reshape(B, 1, -1, 1, 1) + y, 0
        x = _front(x, x_bdim)
        y = ops.conv_transpose2d(_fold(x), w, b if b_bdim is None else None, stride, padding, output_padding,
                                 groups, dilation)
        y = y.reshape(B, x.shape[1], *y.shape[1:])
        return (y if b_bdim is None else y + _front(b, b_bdim).reshape(B, 1, -1, 1, 1)), 0
    w = _front(w, w_bdim)
    bias = None if b is None else (b.repeat(B) if b_bdim is None else _front(b, b_bdim).reshape(-1))
    y = ops.conv_transpose2d(_into_channels(x, x_bdim, B), w.reshape(-1, *w.shape[2:]), bias, stride, padding,
                             output_padding, groups * B, dilation)
    return _out_of_channels(y, B), 1


def _vmap_grad_input(info, in_dims, gy, w, stride, padding, output_padding, groups, dilation):
    gy_bdim, w_bdim = in_dims[:2]
    B = info.batch_size
    if w_bdim is None:
        gy = _front(gy, gy_bdim)
        gx = ops.conv_transpose2d_grad_input(_fold(gy), w, stride, padding, output_padding, groups, dilation)
        return gx.reshape(B, gy.shape[1], *gx.shape[1:]), 0
    w = _front(w, w_bdim)
    gx = ops.conv_transpose2d_grad_input(_into_channels(gy, gy_bdim, B), w.reshape(-1, *w.shape[2:]), stride,
                                         padding, output_padding, groups * B, dilation)
    return _out_of_channels(gx, B), 1


def _vmap_grad_weight(info, in_dims, gy, x, kernel_size, stride, padding, output_padding, groups, dilation):
    gy_bdim, x_bdim = in_dims[:2]
    B = info.batch_size
    gw = ops.conv_transpose2d_grad_weight(_into_channels(gy, gy_bdim, B), _into_channels(x, x_bdim, B),
                                          kernel_size, stride, padding, output_padding, groups * B, dilation)
    return gw.reshape(B, gw.shape[0] // B, *gw.shape[1:]), 0


def _vmap_grad_bias(info, in_dims, gy):
    gb = ops.conv_transpose2d_grad_bias(_into_channels(gy, in_dims[0], info.batch_size))
    return gb.reshape(info.batch_size, -1), 0


def _vmap_backward(info, in_dims, gy, x, w, kernel_size, stride, padding, output_padding, groups, dilation, mask):
    gy_bdim, x_bdim, w_bdim = in_dims[:3]
    params = (stride, padding, output_padding, groups, dilation)
    gx, gx_dim = _vmap_grad_input(info, (gy_bdim, w_bdim), gy, w, *params) if mask[0] else (None, None)
    gw, gw_dim = _vmap_grad_weight(info, (gy_bdim, x_bdim), gy, x, kernel_size, *params) if mask[1] else (None, None)
    gb, gb_dim = _vmap_grad_bias(info, (gy_bdim,), gy) if mask[2] else (None, None)
    return (gx, gw, gb), (gx_dim, gw_dim, gb_dim)


for _name, _rule in (("conv_transpose2d", _vmap_conv_transpose2d), ("conv_transpose2d_grad_input", _vmap_grad_input),
                     ("conv_transpose2d_grad_weight", _vmap_grad_weight),
                     ("conv_transpose2d_grad_bias", _vmap_grad_bias), ("conv_transpose2d_backward", _vmap_backward)):
    torch.library.register_vmap(f"deconv_ext::{_name}", _rule, lib=_lib)


# ---- ONNX: the standard ConvTranspose node ---------------------------------------------------------------
# ONNX has this op (ConvTranspose), so both exporters emit it, with every attribute, from the op itself:
#   dynamo exporter      a decomposition into aten.convolution(transposed=True), which torchlib translates. It
#                        sits in torch._decomp's global table, which the ONNX exporter consults for ops it has
#                        no translation for; torch.export's and inductor's default tables are curated lists of
#                        aten ops, so they keep running our kernel.
#   TorchScript exporter a symbolic function for the traced deconv_ext::conv_transpose2d node.
@torch._decomp.register_decomposition(ops.conv_transpose2d.default)
def _as_aten_convolution(x, w, b, stride, padding, output_padding, groups, dilation):
    return torch.ops.aten.convolution.default(x, w, b, stride, padding, dilation, True, output_padding, groups)


def _onnx_symbolic(g, x, w, b, stride, padding, output_padding, groups, dilation):
    from torch.onnx import symbolic_helper as sh

    stride, padding, output_padding, dilation = (sh._get_const(v, "is", name) for v, name in (
        (stride, "stride"), (padding, "padding"), (output_padding, "output_padding"), (dilation, "dilation")))
    inputs = (x, w) if sh._is_none(b) else (x, w, b)
    kernel_shape = sh._get_tensor_sizes(w)[2:]
    attrs = dict(strides_i=stride, pads_i=padding + padding, output_padding_i=output_padding,
                 dilations_i=dilation, group_i=sh._get_const(groups, "i", "groups"))
    if kernel_shape and None not in kernel_shape:
        attrs["kernel_shape_i"] = kernel_shape
    return g.op("ConvTranspose", *inputs, **attrs)


torch.onnx.register_custom_op_symbolic("deconv_ext::conv_transpose2d", _onnx_symbolic, 9)
