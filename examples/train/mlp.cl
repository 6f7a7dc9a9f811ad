/* SPDX-License-Identifier: MIT */
/*
 * The small kernels of the MLP example (examples/train/mlp.c); the GEMMs run in CLBlast.
 * Row-major activations: a batch of R rows times C columns, element (r, c) at r*C + c.
 * Every reduction runs in a fixed order, so a run is reproducible on one device.
 */

/* A 32-bit integer mix (xor-shift / multiply rounds) used to draw Sophia's sampled labels. */
static uint mix32(uint x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* x[r, :] = (pixels[i_r, :] / 255 - mean) * inv_std and y[r] = labels[i_r], with i_r = idx[off+r]
   (use_idx) or off + r: one batch out of the uint8 images kept on the device. */
__kernel void gather_batch(__global const uchar *pixels, __global const uchar *labels,
                           __global const int *idx, uint use_idx, uint off, uint rows, uint dim,
                           float mean, float inv_std, __global float *x, __global int *y)
{
    const size_t g = get_global_id(0);
    if (g >= (size_t)rows * dim)
        return;
    const uint r = (uint)(g / dim), c = (uint)(g % dim);
    const size_t src = use_idx ? (size_t)idx[off + r] : (size_t)(off + r);
    x[g] = ((float)pixels[src * dim + c] * (1.0f / 255.0f) - mean) * inv_std;
    if (c == 0)
        y[r] = labels[src];
}

/* z[r, c] += b[c], then ReLU when relu != 0. */
__kernel void bias_act(__global float *z, __global const float *b, uint rows, uint cols,
                       uint relu)
{
    const size_t g = get_global_id(0);
    if (g >= (size_t)rows * cols)
        return;
    const float v = z[g] + b[g % cols];
    z[g] = (relu && !(v > 0.0f)) ? 0.0f : v;
}

/* ReLU backward in place: d = d where the layer's output a > 0, else 0. */
__kernel void relu_backward(__global float *d, __global const float *a, uint n)
{
    const size_t g = get_global_id(0);
    if (g >= n)
        return;
    if (!(a[g] > 0.0f))
        d[g] = 0.0f;
}

/* Bias gradient: out[c] = sum over r of d[r, c], rows in order. */
__kernel void col_sums(__global const float *d, uint rows, uint cols, __global float *out)
{
    const size_t c = get_global_id(0);
    if (c >= cols)
        return;
    float s = 0.0f;
    for (uint r = 0; r < rows; r++)
        s += d[(size_t)r * cols + c];
    out[c] = s;
}

/* Softmax cross-entropy per row: loss = logsumexp(z) - z[t], dz = (softmax(z) - onehot(t)) * scale
   (scale = 1/rows for the batch mean). t is the true label y[r], or with sample != 0 a label
   drawn from the row's own softmax (Sophia's Gauss-Newton-Bartlett estimator) with a hash of
   (seed, r). correct[r] = 1 when the first arg-max of z equals y[r]. */
__kernel void softmax_xent(__global const float *z, __global const int *y, uint rows,
                           uint classes, float scale, uint sample, uint seed,
                           __global float *dz, __global float *loss, __global int *correct)
{
    const size_t r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *zr = z + r * classes;
    __global float *dr = dz + r * classes;
    float m = zr[0];
    uint am = 0;
    for (uint j = 1; j < classes; j++)
        if (zr[j] > m) {
            m = zr[j];
            am = j;
        }
    float s = 0.0f;
    for (uint j = 0; j < classes; j++)
        s += exp(zr[j] - m);
    const float lse = m + log(s);
    uint t = (uint)y[r];
    if (sample) {
        /* inverse CDF on a uniform in [0, 1) from 24 hashed bits */
        const float u = (float)(mix32(seed ^ mix32((uint)r + 0x9e3779b9U)) >> 8) * (1.0f / 16777216.0f);
        float acc = 0.0f;
        t = classes - 1;
        for (uint j = 0; j < classes; j++) {
            acc += exp(zr[j] - lse);
            if (u < acc) {
                t = j;
                break;
            }
        }
    }
    for (uint j = 0; j < classes; j++)
        dr[j] = (exp(zr[j] - lse) - (j == t ? 1.0f : 0.0f)) * scale;
    loss[r] = lse - zr[t];
    correct[r] = am == (uint)y[r] ? 1 : 0;
}

/* One work-item: out[2*slot] = sum of the rows' losses, out[2*slot+1] = number correct (exact
   as a float up to 2^24), in row order. */
__kernel void batch_stats(__global const float *loss, __global const int *correct, uint rows,
                          uint slot, __global float *out)
{
    if (get_global_id(0) != 0)
        return;
    float s = 0.0f;
    int c = 0;
    for (uint r = 0; r < rows; r++) {
        s += loss[r];
        c += correct[r];
    }
    out[2 * (size_t)slot] = s;
    out[2 * (size_t)slot + 1] = (float)c;
}
