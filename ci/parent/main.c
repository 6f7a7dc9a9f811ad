/* SPDX-License-Identifier: MIT */
/* The parent's program: its static library calls clopt, which was vendored with
 * add_subdirectory; checks one SGD step against the closed form. */
#include "engine.h"

#include <clopt.h>
#include <math.h>
#include <stdio.h>

int main(void)
{
    float p[5] = {1, 2, 3, 4, 5}, g[5] = {2, -2, 0, 1, -1}, out[5] = {0};
    int bad = engine_sgd_step(out, p, g, 5) != 0;
    for (int i = 0; i < 5 && !bad; i++)
        bad |= fabsf(out[i] - (p[i] - 0.5f * g[i])) > 1e-6f;
    printf("parent: clopt %s vendored, SGD step %s\n", clopt_version(), bad ? "FAILED" : "ok");
    return bad;
}
