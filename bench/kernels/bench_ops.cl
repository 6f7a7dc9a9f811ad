/* SPDX-License-Identifier: MIT */
/* clopt-bench: one-elementary-operation kernels, as a framework without fusion launches
 * them (torch's eager mode: one kernel per tensor operation, each reading its input arrays
 * and writing its output array in full). d may alias x or y (in-place operations), so no
 * pointer is restrict. The host picks the kernel by name (bench_op_kernel in rules.c). */

#define BENCH_OP(NAME)                                                               \
    __kernel void NAME(__global float *d, __global const float *x, __global const float *y, \
                       const float a, const float b, const ulong n)                        \
    {                                                                                      \
        BENCH_ELEMENTWISE(NAME##_body)                                                     \
    }

/* Unary operations read only x; binary ones x and y. */
#define UNARY_BODY(T, LD, ST, EXPR) { const T X = LD(x); ST(EXPR, d); }
#define BINARY_BODY(T, LD, ST, EXPR) { const T X = LD(x); const T Y = LD(y); ST(EXPR, d); }

#define op_copy_body(T, LD, ST) UNARY_BODY(T, LD, ST, X)
#define op_scale_body(T, LD, ST) UNARY_BODY(T, LD, ST, a * X)
#define op_adds_body(T, LD, ST) UNARY_BODY(T, LD, ST, X + a)
#define op_affine_body(T, LD, ST) UNARY_BODY(T, LD, ST, a * X + b)
#define op_axpy_body(T, LD, ST) BINARY_BODY(T, LD, ST, X + a * Y)
#define op_mul_body(T, LD, ST) BINARY_BODY(T, LD, ST, X * Y)
#define op_div_body(T, LD, ST) BINARY_BODY(T, LD, ST, X / Y)
#define op_max_body(T, LD, ST) BINARY_BODY(T, LD, ST, fmax(X, Y))
#define op_min_body(T, LD, ST) BINARY_BODY(T, LD, ST, fmin(X, Y))
#define op_sqrt_body(T, LD, ST) UNARY_BODY(T, LD, ST, sqrt(X))
#define op_abs_body(T, LD, ST) UNARY_BODY(T, LD, ST, fabs(X))
#define op_sign_body(T, LD, ST) UNARY_BODY(T, LD, ST, sign(X))
#define op_exp_body(T, LD, ST) UNARY_BODY(T, LD, ST, exp(X))
#define op_recip_body(T, LD, ST) UNARY_BODY(T, LD, ST, a / X)
#define op_mins_body(T, LD, ST) UNARY_BODY(T, LD, ST, fmin(X, a))
#define op_maxs_body(T, LD, ST) UNARY_BODY(T, LD, ST, fmax(X, a))
#define op_clamp_body(T, LD, ST) UNARY_BODY(T, LD, ST, fmin(fmax(X, a), b))
/* torch.lerp's two forms (weight a, b = 1 - a): the same value up to rounding */
#define op_lerp_body(T, LD, ST) BINARY_BODY(T, LD, ST, a < 0.5f ? X + a * (Y - X) : Y - (Y - X) * b)

BENCH_OP(op_copy)
BENCH_OP(op_scale)
BENCH_OP(op_adds)
BENCH_OP(op_affine)
BENCH_OP(op_axpy)
BENCH_OP(op_mul)
BENCH_OP(op_div)
BENCH_OP(op_max)
BENCH_OP(op_min)
BENCH_OP(op_sqrt)
BENCH_OP(op_abs)
BENCH_OP(op_sign)
BENCH_OP(op_exp)
BENCH_OP(op_recip)
BENCH_OP(op_mins)
BENCH_OP(op_maxs)
BENCH_OP(op_clamp)
BENCH_OP(op_lerp)
