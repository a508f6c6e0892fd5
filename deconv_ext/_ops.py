"""Autograd for the C++ ops in csrc/ops.cpp (their schemas, meta kernels and autocast live there).

The forward y = T(x, w) + b is bilinear in (x, w), and its three adjoints are ops of the same family:
    grad_input  gx = T*(gy, w)     grad_weight  gw = W(x, gy)     grad_bias  gb = sum(gy)
Each of those is linear in each argument, so its own derivative is again a member of the family
(e.g. d<T*(gy, w), ggx> / dgy = T(ggx, w)). Registering all four therefore gives double and higher
backward, traced by torch.compile, with no extra kernels. Only requested gradients are computed.
"""
import torch

from . import _C  # noqa: F401  (loads the library: registers the ops)

ops = torch.ops.deconv_ext


def _params(ctx):
    return ctx.stride, ctx.padding, ctx.output_padding, ctx.groups, ctx.dilation


def _save_params(ctx, stride, padding, output_padding, groups, dilation):
    ctx.stride, ctx.padding, ctx.output_padding = stride, padding, output_padding
    ctx.groups, ctx.dilation = groups, dilation


# ---- forward: y = T(x, w) + b ----------------------------------------------------------------------
def _forward_setup(ctx, inputs, output):
    x, w, b, *params = inputs
    _save_params(ctx, *params)
    ctx.has_bias = b is not None
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(x if need_w else None, w if need_x else None)
    ctx.kernel_size = tuple(w.shape[2:])


def _forward_backward(ctx, gy):
    x, w = ctx.saved_tensors
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = ops.conv_transpose2d_grad_input(gy, w, *_params(ctx))
    if ctx.needs_input_grad[1]:
        gw = ops.conv_transpose2d_grad_weight(gy, x, ctx.kernel_size, *_params(ctx))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = ops.conv_transpose2d_grad_bias(gy)
    return gx, gw, gb, None, None, None, None, None


# ---- grad_input: gx = T*(gy, w) ----------------------------------------------------------------------
def _grad_input_setup(ctx, inputs, output):
    gy, w, *params = inputs
    _save_params(ctx, *params)
    ctx.save_for_backward(gy if ctx.needs_input_grad[1] else None, w if ctx.needs_input_grad[0] else None)
    ctx.kernel_size = tuple(w.shape[2:])


def _grad_input_backward(ctx, ggx):
    gy, w = ctx.saved_tensors
    d_gy = d_w = None
    if ctx.needs_input_grad[0]:
        d_gy = ops.conv_transpose2d(ggx, w, None, *_params(ctx))
    if ctx.needs_input_grad[1]:
        d_w = ops.conv_transpose2d_grad_weight(gy, ggx, ctx.kernel_size, *_params(ctx))
    return d_gy, d_w, None, None, None, None, None


# ---- grad_weight: gw = W(x, gy) ----------------------------------------------------------------------
def _grad_weight_setup(ctx, inputs, output):
    gy, x, kernel_size, *params = inputs
    _save_params(ctx, *params)
    ctx.save_for_backward(gy if ctx.needs_input_grad[1] else None, x if ctx.needs_input_grad[0] else None)


def _grad_weight_backward(ctx, ggw):
    gy, x = ctx.saved_tensors
    d_gy = d_x = None
    if ctx.needs_input_grad[0]:
        d_gy = ops.conv_transpose2d(x, ggw, None, *_params(ctx))
    if ctx.needs_input_grad[1]:
        d_x = ops.conv_transpose2d_grad_input(gy, ggw, *_params(ctx))
    return d_gy, d_x, None, None, None, None, None, None


# ---- grad_bias: gb = sum over (N, H, W) of gy -----------------------------------------------------------
def _grad_bias_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _grad_bias_backward(ctx, ggb):
    return ggb.reshape(1, -1, 1, 1).expand(ctx.shape)


torch.library.register_autograd("deconv_ext::conv_transpose2d", _forward_backward, setup_context=_forward_setup)
torch.library.register_autograd("deconv_ext::conv_transpose2d_grad_input", _grad_input_backward,
                                setup_context=_grad_input_setup)
torch.library.register_autograd("deconv_ext::conv_transpose2d_grad_weight", _grad_weight_backward,
                                setup_context=_grad_weight_setup)
torch.library.register_autograd("deconv_ext::conv_transpose2d_grad_bias", _grad_bias_backward,
                                setup_context=_grad_bias_setup)
