"""SIMD intrinsics for the packed low-bit kernels (kernels/quant.py): 16 float lanes from 16 packed 4-bit or 8-bit
codes (one table shuffle), fused multiply-adds with the sums in registers, and integer dot products of 4-bit weight
codes with 8-bit activation codes (AVX2 vpmaddubsw/vpmaddwd, or AVX-512 VNNI's vpdpbusd).

Like kernels/simd.py, the intrinsics read contiguous 1-D arrays at an element offset and the caller keeps offsets in
range (no bounds checks). Sixteen float lanes are one AVX-512 register, or two AVX2 registers: LLVM splits the
operations on AVX2-only CPUs, so one source serves both. vpdpbusd exists only with AVX-512 VNNI / AVX-VNNI: compile
a kernel using `idot64_vnni` only where `quant.isa()["vnni"]` is true.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def isa() -> dict[str, bool]:
    """What the host CPU offers the kernels (numba compiles for the host, so LLVM uses these when it can):
    AVX2, FMA, AVX-512 (F/BW/VL), VNNI (AVX-512 or AVX) and AMX."""
    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    has = {k: bool(v) for k, v in feats.items()}
    return {"cpu": llvm.get_host_cpu_name(), "avx2": has.get("avx2", False), "fma": has.get("fma", False),
            "avx512": all(has.get(f, False) for f in ("avx512f", "avx512bw", "avx512vl")),
            "vnni": has.get("avx512vnni", False) or has.get("avxvnni", False),
            "amx": has.get("amx-int8", False) and has.get("amx-tile", False)}


# --- 16 packed codes -> 16 float32 lanes (a 16-byte table shuffle, pshufb, decodes 16 codes at once) -----------
LANES16 = 16
_V16 = ir.VectorType(ir.FloatType(), LANES16)
_I8x16 = ir.VectorType(ir.IntType(8), 16)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_IDX16 = ir.VectorType(ir.IntType(32), 16)


class F32x16Type(types.Type):
    """Sixteen float32 lanes (one AVX-512 register or two AVX2 registers)."""

    def __init__(self) -> None:
        super().__init__(name="F32x16")


f32x16 = F32x16Type()


@register_model(F32x16Type)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _V16)


def _data_ptr(context, builder, arrty, arr, offset, elem_ty):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), elem_ty.as_pointer())


def _check_u8(arr, what):
    if not (isinstance(arr, types.Array) and arr.dtype in (types.uint8, types.int8) and arr.ndim == 1):
        raise TypeError(f"{what} takes a 1-D uint8/int8 array, got {arr}")


def _nibbles(high: bool):
    def impl(typingctx, codes, offset, lut):
        _check_u8(codes, "nib16")
        _check_u8(lut, "nib16 (lut)")

        def codegen(context, builder, sig, args):
            raw = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], _I8x16), align=1)
            if high:
                nib = builder.lshr(raw, ir.Constant(_I8x16, [4] * 16))
            else:
                nib = builder.and_(raw, ir.Constant(_I8x16, [15] * 16))
            table = builder.load(_data_ptr(context, builder, sig.args[2], args[2], ir.Constant(ir.IntType(64), 0),
                                           _I8x16), align=1)
            pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8x16, [_I8x16, _I8x16]),
                                                    "llvm.x86.ssse3.pshuf.b.128")
            looked = builder.call(pshufb, [table, nib])
            return builder.sitofp(builder.sext(looked, _I32x16), _V16)
        return f32x16(codes, types.intp, lut), codegen
    return intrinsic(impl)


nib_lo16 = _nibbles(False)
nib_lo16.__doc__ = "The low nibbles of codes[offset:offset + 16] looked up in the 16-entry int8 `lut`, as 16 floats."
nib_hi16 = _nibbles(True)
nib_hi16.__doc__ = "The high nibbles of codes[offset:offset + 16] looked up in `lut`, as 16 floats."


@intrinsic
def byte16(typingctx, codes, offset):
    """int8 codes[offset:offset + 16] as 16 floats."""
    _check_u8(codes, "byte16")

    def codegen(context, builder, sig, args):
        raw = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], _I8x16), align=1)
        return builder.sitofp(builder.sext(raw, _I32x16), _V16)
    return f32x16(codes, types.intp), codegen


@intrinsic
def vzero(typingctx):
    """Sixteen zero lanes."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_V16, [0.0] * LANES16)
    return f32x16(), codegen


def _fma(builder, a, b, c):
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16, _V16, _V16]),
                                         "llvm.fma.v16f32")
    return builder.call(fma, [a, b, c])


@intrinsic
def vmla(typingctx, w, arr, offset, acc):
    """acc + w * arr[offset:offset + 16] (w a vector, arr a 1-D float32 array), fused."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1):
        raise TypeError(f"vmla takes a 1-D float32 array, got {arr}")

    def codegen(context, builder, sig, args):
        x = builder.load(_data_ptr(context, builder, sig.args[1], args[1], args[2], _V16), align=4)
        return _fma(builder, args[0], x, args[3])
    return f32x16(f32x16, arr, types.intp, f32x16), codegen


def _splat(context, builder, s, sty):
    s = context.cast(builder, s, sty, types.float32)
    splat = builder.insert_element(ir.Constant(_V16, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(splat, ir.Constant(_V16, ir.Undefined), ir.Constant(_IDX16, [0] * LANES16))


@intrinsic
def vscale_add(typingctx, v, s, acc):
    """acc + v * s (s a scalar), fused."""
    def codegen(context, builder, sig, args):
        return _fma(builder, args[0], _splat(context, builder, args[1], sig.args[1]), args[2])
    return f32x16(f32x16, types.float32, f32x16), codegen


@intrinsic
def vscale16(typingctx, v, s):
    """v * s (s a scalar) lanewise."""
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], _splat(context, builder, args[1], sig.args[1]))
    return f32x16(f32x16, types.float32), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b lanewise."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return f32x16(f32x16, f32x16), codegen


@intrinsic
def vsum(typingctx, a):
    """The sum of the sixteen lanes (pairwise halving)."""
    def codegen(context, builder, sig, args):
        v = args[0]
        for shift in (8, 4, 2, 1):
            perm = [(i + shift) % LANES16 for i in range(LANES16)]
            v = builder.fadd(v, builder.shuffle_vector(v, ir.Constant(_V16, ir.Undefined), ir.Constant(_IDX16, perm)))
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))
    return types.float32(f32x16), codegen


# --- integer dot products: 4-bit weight codes x 8-bit unsigned activation codes ----------------------------------
_I8x32 = ir.VectorType(ir.IntType(8), 32)
_I16x16 = ir.VectorType(ir.IntType(16), 16)
_I32x8 = ir.VectorType(ir.IntType(32), 8)


class I32x8Type(types.Type):
    """Eight int32 lanes (one AVX2 register)."""

    def __init__(self) -> None:
        super().__init__(name="I32x8")


i32x8 = I32x8Type()


@register_model(I32x8Type)
class _I32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _I32x8)


@intrinsic
def izero(typingctx):
    """Eight int32 zero lanes."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_I32x8, [0] * 8)
    return i32x8(), codegen


@intrinsic
def isum(typingctx, a):
    """The sum of the eight int32 lanes, as int64."""
    def codegen(context, builder, sig, args):
        v = args[0]
        idx = ir.VectorType(ir.IntType(32), 8)
        for shift in (4, 2, 1):
            perm = [(i + shift) % 8 for i in range(8)]
            v = builder.add(v, builder.shuffle_vector(v, ir.Constant(_I32x8, ir.Undefined), ir.Constant(idx, perm)))
        return builder.sext(builder.extract_element(v, ir.Constant(ir.IntType(32), 0)), ir.IntType(64))
    return types.int64(i32x8), codegen


def _idot64(vnni: bool):
    def impl(typingctx, acc, codes, j, xq, jlo, jhi, lut):
        _check_u8(codes, "idot64")
        _check_u8(xq, "idot64 (x codes)")
        _check_u8(lut, "idot64 (lut)")

        def codegen(context, builder, sig, args):
            acc, codes, j, xq, jlo, jhi, lut = args
            raw = builder.load(_data_ptr(context, builder, sig.args[1], codes, j, _I8x32), align=1)
            lo = builder.and_(raw, ir.Constant(_I8x32, [15] * 32))
            hi = builder.and_(builder.lshr(raw, ir.Constant(_I8x32, [4] * 32)), ir.Constant(_I8x32, [15] * 32))
            t16 = builder.load(_data_ptr(context, builder, sig.args[6], lut, ir.Constant(ir.IntType(64), 0), _I8x16),
                               align=1)
            t32 = builder.shuffle_vector(t16, t16, ir.Constant(ir.VectorType(ir.IntType(32), 32),
                                                               list(range(16)) * 2))
            pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8x32, [_I8x32, _I8x32]),
                                                    "llvm.x86.avx2.pshuf.b")
            w_lo, w_hi = builder.call(pshufb, [t32, lo]), builder.call(pshufb, [t32, hi])
            x_lo = builder.load(_data_ptr(context, builder, sig.args[3], xq, jlo, _I8x32), align=1)
            x_hi = builder.load(_data_ptr(context, builder, sig.args[3], xq, jhi, _I8x32), align=1)
            if vnni:
                dp = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(_I32x8, [_I32x8, _I32x8, _I32x8]), "llvm.x86.avx512.vpdpbusd.256")
                # the high half into a fresh sum, so the two products do not wait on each other's latency
                hi_sum = builder.call(dp, [ir.Constant(_I32x8, [0] * 8), builder.bitcast(x_hi, _I32x8),
                                           builder.bitcast(w_hi, _I32x8)])
                acc = builder.call(dp, [acc, builder.bitcast(x_lo, _I32x8), builder.bitcast(w_lo, _I32x8)])
                return builder.add(acc, hi_sum)
            mub = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I16x16, [_I8x32, _I8x32]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
            mwd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32x8, [_I16x16, _I16x16]),
                                                 "llvm.x86.avx2.pmadd.wd")
            pairs = builder.add(builder.call(mub, [x_lo, w_lo]), builder.call(mub, [x_hi, w_hi]))
            return builder.add(acc, builder.call(mwd, [pairs, ir.Constant(_I16x16, [1] * 16)]))
        return i32x8(i32x8, codes, types.intp, xq, types.intp, types.intp, lut), codegen
    return intrinsic(impl)


idot64_avx2 = _idot64(False)
idot64_avx2.__doc__ = ("acc + the int32 dot products of 64 4-bit weight codes (32 bytes at j, halves layout, through "
                       "`lut`) with unsigned 8-bit activation codes xq[jlo:jlo + 32] and xq[jhi:jhi + 32]: "
                       "vpmaddubsw + vpmaddwd (AVX2; sums of two products fit int16 for |w| <= 12, x <= 255)")
idot64_vnni = _idot64(True)
idot64_vnni.__doc__ = "As idot64_avx2 with AVX-512 VNNI's vpdpbusd (four products summed into int32, one instruction)"



# --- 16-column windows of sparse rows (kernels/quant_sparse.py): two table lookups per 16 entries --------------
@intrinsic
def vfma16(typingctx, a, b, acc):
    """acc + a * b lanewise, fused."""
    def codegen(context, builder, sig, args):
        return _fma(builder, args[0], args[1], args[2])
    return f32x16(f32x16, f32x16, f32x16), codegen


@intrinsic
def vload16(typingctx, arr, offset):
    """arr[offset:offset + 16] (1-D float32) as sixteen lanes."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1):
        raise TypeError(f"vload16 takes a 1-D float32 array, got {arr}")

    def codegen(context, builder, sig, args):
        return builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], _V16), align=4)
    return f32x16(arr, types.intp), codegen


@intrinsic
def vlane(typingctx, v, lane):
    """Lane `lane` (0..15) of v."""
    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], builder.trunc(args[1], ir.IntType(32)))
    return types.float32(f32x16, types.intp), codegen


def _lookup512(builder, table, idx):
    """table[idx & 15] lanewise: one vpermps (AVX-512F)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16, _I32x16]),
                                        "llvm.x86.avx512.permvar.sf.512")
    return builder.call(fn, [table, idx])


def _lookup256(builder, table, idx):
    """table[idx & 15] lanewise on AVX2: per 8-lane half, vpermps into each 8-entry half of the table (it reads the
    low 3 bits of the index) and bit 3 selects between them."""
    i32 = ir.IntType(32)
    v8, i8x = ir.VectorType(ir.FloatType(), 8), ir.VectorType(i32, 8)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, i8x]), "llvm.x86.avx2.permps")
    t_lo = builder.shuffle_vector(table, table, ir.Constant(i8x, list(range(8))))
    t_hi = builder.shuffle_vector(table, table, ir.Constant(i8x, list(range(8, 16))))
    halves = []
    for lanes in (range(8), range(8, 16)):
        e = builder.shuffle_vector(idx, idx, ir.Constant(i8x, list(lanes)))
        high = builder.icmp_unsigned("!=", builder.and_(e, ir.Constant(i8x, [8] * 8)), ir.Constant(i8x, [0] * 8))
        halves.append(builder.select(high, builder.call(fn, [t_hi, e]), builder.call(fn, [t_lo, e])))
    return builder.shuffle_vector(halves[0], halves[1], ir.Constant(_IDX16, list(range(16))))


def _window_fma(lookup, scaled: bool):
    def impl(typingctx, acc, ent, eoff, x, xoff, lut, *scale):
        _check_u8(ent, "window_fma")
        if not (isinstance(x, types.Array) and x.dtype == types.float32 and x.ndim == 1):
            raise TypeError(f"window_fma takes a 1-D float32 input row, got {x}")

        def codegen(context, builder, sig, args):
            acc, ent, eoff, x, xoff, lut = args[:6]
            raw = builder.load(_data_ptr(context, builder, sig.args[1], ent, eoff, _I8x16), align=1)
            e = builder.zext(raw, _I32x16)
            xv = builder.load(_data_ptr(context, builder, sig.args[3], x, xoff, _V16), align=4)
            xs = lookup(builder, xv, builder.and_(e, ir.Constant(_I32x16, [15] * 16)))
            ws = lookup(builder, lut, builder.lshr(e, ir.Constant(_I32x16, [4] * 16)))
            if scaled:      # the weight as the simulated layer has it: code value x block scale, one rounding
                ws = builder.fmul(ws, args[6])
            return _fma(builder, ws, xs, acc)
        extra = (f32x16,) if scaled else ()
        return f32x16(f32x16, ent, types.intp, x, types.intp, f32x16, *extra), codegen
    if scaled:
        return intrinsic(lambda typingctx, acc, ent, eoff, x, xoff, lut, scale:
                         impl(typingctx, acc, ent, eoff, x, xoff, lut, scale))
    return intrinsic(lambda typingctx, acc, ent, eoff, x, xoff, lut: impl(typingctx, acc, ent, eoff, x, xoff, lut))


window_fma512 = _window_fma(_lookup512, False)
window_fma512.__doc__ = ("acc + lut[e >> 4] * x[xoff + (e & 15)] for the 16 bytes e = ent[eoff:eoff + 16] (lut: 16 "
                         "float lanes): two vpermps, AVX-512F only (compile where quant.isa()['avx512'])")
window_fma256 = _window_fma(_lookup256, False)
window_fma256.__doc__ = "As window_fma512 on AVX2 (each 16-lane lookup: four 8-lane vpermps and two blends)"
window_fma512s = _window_fma(_lookup512, True)
window_fma512s.__doc__ = "acc + (lut[e >> 4] * scale) * x[xoff + (e & 15)]: window_fma512 with per-lane block scales"
window_fma256s = _window_fma(_lookup256, True)
window_fma256s.__doc__ = "window_fma256 with per-lane block scales"


def _nibbles_perm(high: bool):
    def impl(typingctx, codes, offset, lutf):
        _check_u8(codes, "nib16p")
        if not (isinstance(lutf, types.Array) and lutf.dtype == types.float32 and lutf.ndim == 1):
            raise TypeError(f"nib16p takes a 1-D float32 table, got {lutf}")

        def codegen(context, builder, sig, args):
            raw = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], _I8x16), align=1)
            e = builder.zext(raw, _I32x16)
            if high:
                e = builder.lshr(e, ir.Constant(_I32x16, [4] * 16))
            table = builder.load(_data_ptr(context, builder, sig.args[2], args[2], ir.Constant(ir.IntType(64), 0),
                                           _V16), align=4)
            return _lookup512(builder, table, e)         # vpermps reads the low 4 bits: no mask for the low nibble
        return f32x16(codes, types.intp, lutf), codegen
    return intrinsic(impl)


nib_lo16p = _nibbles_perm(False)
nib_lo16p.__doc__ = ("As nib_lo16 with a float32 table (16 values) looked up by one vpermps: one instruction from "
                     "codes to float lanes instead of pshufb + sign extension + conversion (AVX-512F only)")
nib_hi16p = _nibbles_perm(True)
nib_hi16p.__doc__ = "As nib_hi16 with a float32 table looked up by one vpermps (AVX-512F only)"


# --- stores (kernels/quant_colseg.py) ----------------------------------------------------------------------------
@intrinsic
def vstore16(typingctx, arr, offset, v):
    """arr[offset:offset + 16] = v (arr 1-D float32; the caller keeps the offset in range)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1):
        raise TypeError(f"vstore16 takes a 1-D float32 array, got {arr}")

    def codegen(context, builder, sig, args):
        builder.store(args[2], _data_ptr(context, builder, sig.args[0], args[0], args[1], _V16), align=4)
        return context.get_dummy_value()
    return types.none(arr, types.intp, f32x16), codegen

