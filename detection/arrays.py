"""Per-sensor state arrays: growing them as new sensors (or slots) appear, prefetching them in compiled loops."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["borrowed", "grown", "prefetch"]


def grown(a: np.ndarray, rows: int, fill: object) -> np.ndarray:
    """``a`` with ``rows`` rows: existing rows kept, new rows set to ``fill`` (any trailing shape)."""
    out = np.full((rows, *a.shape[1:]), fill, a.dtype)
    out[: a.shape[0]] = a
    return out


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to load the cache line of ``arr[index]`` for writing (numba-compiled code only).

    A row of a batch sorted by sensor does much work, so the out-of-order core cannot reach the next
    rows' state on its own: fetching it a few rows ahead overlaps the memory latency with that work.
    """
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # write intent, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def borrowed(typingctx, arr):
    """``arr`` without its reference count (numba-compiled code only), for use while ``arr`` itself is alive.

    numba increfs and decrefs an array (atomically) each time an inlined helper binds it to a parameter,
    and cannot prune the pairs around helpers with loops: a fused kernel paid some 20 % of its time for
    that. NRT skips a null reference, so a kernel binds its state arrays to borrowed views once, at its
    start; they must not outlive the call (never returned or stored).
    """
    if not isinstance(arr, types.Array):
        return None
    sig = arr(arr)

    def codegen(context, builder, signature, args):
        meminfo = context.make_array(signature.args[0])(context, builder, args[0]).meminfo
        return builder.insert_value(args[0], cgutils.get_null_value(meminfo.type), 0)

    return sig, codegen
