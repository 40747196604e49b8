"""Explicit 16-wide float32 vectors for numba kernels (one AVX-512 register each).

Why this exists: on some x86 CPUs (Intel Ice Lake and later) LLVM's loop
vectorizer *prefers* 256-bit vectors even where 512-bit ones are available,
and it does not reliably keep a register-blocked accumulator tile in registers.
The fast convolution kernels therefore spell their registers out, the way a C
programmer writes ``__m512`` intrinsics: ``acc = vfma(vbcast(x), w, acc)``.
Each ``f32x16`` value is one LLVM ``<16 x float>`` SSA value, which the code
generator keeps in a zmm register (or in two ymm/four xmm registers on CPUs
without AVX-512: the code stays correct everywhere, only slower).

Operations (all float32, lane-wise):

    vzero()                 -> (0, ..., 0)
    vbcast(s)               -> (s, ..., s)
    vload(a, i)             -> (a[i], ..., a[i+15])      a: 1-D C-contiguous float32
    vbcast_at(a, i)         -> (a[i], ..., a[i])         (= vbcast(a[i]) without numba's
                                                          negative-index wraparound code)
    vstore(a, i, v)            a[i:i+16] = v
    vfma(a, b, c)           -> a * b + c                 (one fused multiply-add)
    vadd(a, b), vsub(a, b), vmul(a, b) -> a + b, a - b, a * b   (each rounded once)
    a + b, a - b, a * b        the same, as operators; either side may also be a
                               number (broadcast to all lanes), so code written
                               for numbers (``kernels.sgd.sgd_update``) runs on vectors
    vsum(v)                 -> v[0] + v[1] + ... + v[15]  (a float32; pairwise order)
    prefetch(a, i)             hint: bring a[i]'s cache line in soon (no effect on results)

No bounds checks: the caller guarantees 0 <= i and i + 16 <= a.size.
With ``NUMBA_DISABLE_JIT=1`` these intrinsics cannot run; use the ``*_reference``
twins of the kernels to step through the math instead.
"""
import operator

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, overload, register_model

LANES = 16
_VEC = ir.VectorType(ir.FloatType(), LANES)


def _host_has_avx512():
    """True when this CPU has AVX-512 (32 vector registers of 16 floats); without it an
    ``f32x16`` is two 8-float ymm registers and only 16 of those exist, so register-blocked
    kernels use smaller blocks (see ``fused_conv``) rather than spill their accumulators."""
    import llvmlite.binding as llvm
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


AVX512 = _host_has_avx512()


class F32x16(types.Type):
    """numba type of a 16-lane float32 vector value."""

    def __init__(self):
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _elem_ptr(context, builder, arrty, arr, idx, idxty):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    ptr = builder.gep(ary.data, [i])
    return builder.bitcast(ptr, _VEC.as_pointer())


def _check_array(arr):
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float32
            and arr.layout == "C")


@intrinsic
def vload(typingctx, arr, idx):
    if not (_check_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1]),
                            align=4)
    return f32x16(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    if not (_check_array(arr) and isinstance(idx, types.Integer) and v == f32x16):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1]),
                      align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)
    return f32x16(), codegen


@intrinsic
def vbcast(typingctx, s):
    if not isinstance(s, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.float32)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), mask)
    return f32x16(s), codegen


@intrinsic
def vbcast_at(typingctx, arr, idx):
    if not (_check_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        x = builder.load(builder.gep(ary.data, [i]), align=4)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), mask)
    return f32x16(arr, idx), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (a == f32x16 and b == f32x16 and c == f32x16):
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.v16f32")
        return builder.call(fn, args)
    return f32x16(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (a == f32x16 and b == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return f32x16(a, b), codegen


@intrinsic
def vsub(typingctx, a, b):
    if not (a == f32x16 and b == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])
    return f32x16(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):
    if not (a == f32x16 and b == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return f32x16(a, b), codegen


def _operator(vop):
    """``a OP b`` for f32x16 operands, or one f32x16 and one number (broadcast)."""
    def typer(a, b):
        number = (types.Float, types.Integer)
        if a == f32x16 and b == f32x16:
            return lambda a, b: vop(a, b)
        if isinstance(a, number) and b == f32x16:
            return lambda a, b: vop(vbcast(a), b)
        if a == f32x16 and isinstance(b, number):
            return lambda a, b: vop(a, vbcast(b))
        return None
    return typer


overload(operator.add, inline="always")(_operator(vadd))
overload(operator.sub, inline="always")(_operator(vsub))
overload(operator.mul, inline="always")(_operator(vmul))


@intrinsic
def vsum(typingctx, v):
    if v != f32x16:
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        width = LANES
        while width > 1:                     # add the upper half onto the lower half
            width //= 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(width))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                                          list(range(width, 2 * width))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, ir.Constant(ir.IntType(32), 0))
    return types.float32(v), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(ary.data, [i])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        i32 = ir.IntType(32)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])   # read, keep, data
        return context.get_dummy_value()
    return types.none(arr, idx), codegen
