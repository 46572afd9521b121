"""Eight-lane float32 vectors for numba kernels, so that accumulators can live in registers.

numba vectorises loops whose accumulator is an array in memory: every multiply-add then also loads and stores the
accumulator, and a sparse kernel's short inner loops (one weight row per active input) run at roughly half the speed
the arithmetic allows. With `F32x8` a kernel holds, say, 64 output channels in eight vector registers across a whole
loop over active inputs and touches memory only to read weights (`axpy_segments`).

The intrinsics read and write contiguous 1-D float32 arrays at an element offset; the caller keeps offsets in range
(no bounds checks, as in every kernel here). `vfma` is a fused multiply-add (one rounding), so sums can differ from
PyTorch's in the last bits, as any change of summation order does.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from frugalnet.kernels._jit import JIT

LANES = 8
_VEC = ir.VectorType(ir.FloatType(), LANES)


class F32x8Type(types.Type):
    """Eight float32 lanes held in one (AVX) register."""

    def __init__(self) -> None:
        super().__init__(name="F32x8")


f32x8 = F32x8Type()


@register_model(F32x8Type)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VEC)


def _vec_ptr(context, builder, arrty, arr, offset):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())


def _check_f32_array(arr) -> None:
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1):
        raise TypeError(f"simd intrinsics take a 1-D float32 array, got {arr}")


@intrinsic
def vload(typingctx, arr, offset):
    """arr[offset:offset + 8] as a vector."""
    _check_f32_array(arr)

    def codegen(context, builder, sig, args):
        return builder.load(_vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
    return f32x8(arr, types.intp), codegen


@intrinsic
def vstore(typingctx, arr, offset, vec):
    """arr[offset:offset + 8] = vec."""
    _check_f32_array(arr)

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.void(arr, types.intp, f32x8), codegen


def _splat(builder, scalar):
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


@intrinsic
def vfma(typingctx, arr, offset, scale, acc):
    """acc + scale * arr[offset:offset + 8], fused."""
    _check_f32_array(arr)

    def codegen(context, builder, sig, args):
        w = builder.load(_vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        s = context.cast(builder, args[2], sig.args[2], types.float32)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]),
                                             "llvm.fma.v8f32")
        return builder.call(fma, [w, _splat(builder, s), args[3]])
    return f32x8(arr, types.intp, types.float32, f32x8), codegen


@intrinsic
def vmax_nan(typingctx, new, cur):
    """Lanewise `new if (new > cur or new is NaN) else cur`: a running max that keeps the earlier of equal values
    and propagates NaN, as torch's max pooling does when it scans a window in order."""
    if not (isinstance(new, F32x8Type) and isinstance(cur, F32x8Type)):
        raise TypeError(f"vmax_nan takes two F32x8 vectors, got {new}, {cur}")

    def codegen(context, builder, sig, args):
        a, r = args
        take = builder.or_(builder.fcmp_ordered(">", a, r), builder.fcmp_unordered("uno", a, a))
        return builder.select(take, a, r)
    return f32x8(f32x8, f32x8), codegen


@njit(**JIT)
def axpy_segments(w, seg_lo, seg_hi, seg_base, nseg, offs, vals, out, col0, ncols):
    """out[col0:col0 + ncols] += sum over segments s < nseg, j in seg_lo[s]..seg_hi[s] of
    vals[j] * w[seg_base[s] + offs[j] + col0 + (0..ncols)] (w flat).

    A gathered GEMV: the rows are the weight rows of active inputs, the columns output units; segments let a
    caller name rows as (shared base + per-entry offset) without copying, e.g. the active channels at one input
    position under one kernel tap. Columns are taken 64, then 8 at a time with the partial sums in registers,
    the last ncols % 8 as scalars."""
    c = col0
    end = col0 + ncols
    while c + 8 * LANES <= end:
        a0 = vload(out, c)
        a1 = vload(out, c + 8)
        a2 = vload(out, c + 16)
        a3 = vload(out, c + 24)
        a4 = vload(out, c + 32)
        a5 = vload(out, c + 40)
        a6 = vload(out, c + 48)
        a7 = vload(out, c + 56)
        for s in range(nseg):
            base = seg_base[s] + c
            for j in range(seg_lo[s], seg_hi[s]):
                b = base + offs[j]
                v = vals[j]
                a0 = vfma(w, b, v, a0)
                a1 = vfma(w, b + 8, v, a1)
                a2 = vfma(w, b + 16, v, a2)
                a3 = vfma(w, b + 24, v, a3)
                a4 = vfma(w, b + 32, v, a4)
                a5 = vfma(w, b + 40, v, a5)
                a6 = vfma(w, b + 48, v, a6)
                a7 = vfma(w, b + 56, v, a7)
        vstore(out, c, a0)
        vstore(out, c + 8, a1)
        vstore(out, c + 16, a2)
        vstore(out, c + 24, a3)
        vstore(out, c + 32, a4)
        vstore(out, c + 40, a5)
        vstore(out, c + 48, a6)
        vstore(out, c + 56, a7)
        c += 8 * LANES
    while c + LANES <= end:
        a0 = vload(out, c)
        for s in range(nseg):
            base = seg_base[s] + c
            for j in range(seg_lo[s], seg_hi[s]):
                a0 = vfma(w, base + offs[j], vals[j], a0)
        vstore(out, c, a0)
        c += LANES
    for cc in range(c, end):
        acc = out[cc]
        for s in range(nseg):
            base = seg_base[s] + cc
            for j in range(seg_lo[s], seg_hi[s]):
                acc += vals[j] * w[base + offs[j]]
        out[cc] = acc
