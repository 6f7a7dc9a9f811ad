/* SPDX-License-Identifier: MIT */
/* Sophia's diagonal-Hessian estimators and the counter-based RNG they draw u ~ N(0, I) from.
 *
 * randn: Philox-4x32-10 (philox4x32_10 in storage.cl). Work-item i encrypts
 * the counter c = counter_base + i, as (lo32(c), hi32(c), 0, 0), with the key (lo32(seed),
 * hi32(seed)), and turns the four 32-bit words (x0, x1, x2, x3) into out[4i .. 4i+3] by
 * Box-Muller on their top 24 bits: u1 = (x0>>8 + 1) 2^-24 in (0, 1], u2 = (x1>>8) 2^-24,
 * r = sqrt(-2 ln u1), out[4i] = r cos(2π u2), out[4i+1] = r sin(2π u2); likewise x2, x3. */

static inline float2 box_muller(uint a, uint b)
{
    const float two_pi = 6.28318530717958647692f;
    float u1 = (float)((a >> 8) + 1u) * (1.0f / 16777216.0f);
    float u2 = (float)(b >> 8) * (1.0f / 16777216.0f);
    float r = sqrt(-2.0f * log(u1));
    return (float2)(r * cos(two_pi * u2), r * sin(two_pi * u2));
}

__kernel void randn(__global float *out_, const ulong oo, const ulong n, const ulong seed,
                    const ulong counter_base)
{
    out_ += oo;
    const ulong i = get_global_id(0);
    const ulong base = i * 4;
    if (base >= n)
        return;
    const ulong c = counter_base + i;
    uint4 x = philox4x32_10((uint4)((uint)c, (uint)(c >> 32), 0u, 0u),
                            (uint2)((uint)seed, (uint)(seed >> 32)));
    float2 z01 = box_muller(x.x, x.y), z23 = box_muller(x.z, x.w);
    float z[4] = {z01.x, z01.y, z23.x, z23.y};
    for (uint k = 0; k < 4 && base + k < n; k++)
        out_[base + k] = z[k];
}

/* Hutchinson: ĥ = u ⊙ (H u). */
__kernel void hutchinson(__global const float *u_, const ulong uo, __global const float *hv_,
                         const ulong hvo, __global float *out_, const ulong oo, const ulong n)
{
    u_ += uo;
    hv_ += hvo;
    out_ += oo;
    ELEMENTWISE_BEGIN
    STORE(LOAD(u_) * LOAD(hv_), out_);
    ELEMENTWISE_END
}

/* Gauss-Newton-Bartlett: ĥ = B ĝ ⊙ ĝ. */
__kernel void gnb(__global const float *g_, const ulong go, __global float *out_,
                  const ulong oo, const ulong n, const float batch)
{
    g_ += go;
    out_ += oo;
    ELEMENTWISE_BEGIN
    floatV g = LOAD(g_);
    STORE(batch * g * g, out_);
    ELEMENTWISE_END
}
