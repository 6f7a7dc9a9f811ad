/* SPDX-License-Identifier: MIT */
#ifndef ENGINE_H
#define ENGINE_H
#include <stddef.h>
/* out = param - 0.5 * grad, computed by clopt on the default device; 0 on success. */
int engine_sgd_step(float *out, float *param, const float *grad, size_t n);
#endif
