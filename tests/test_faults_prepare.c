/* SPDX-License-Identifier: MIT */
/* test_faults, second sweep: every fallible OpenCL call of clopt_optimizer_prepare in a fresh
   context fails in turn (program creation, builds, kernels); prepare again and two steps
   then succeed and compile nothing, and destroying everything releases every object. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>

#include "clopt.h"
#include "clshim.h"
#include "fixture.h"
#include "test_faults.h"

void test_prepare_fresh_context(void **state)
{
    (void)state;
    const uint64_t errors0 = g_errors;
    uint64_t n = 1, failed = 0;
    for (;; n++) {
        clshim_reset();
        clshim_enable(1);
        clopt_ctx *c = NULL;
        assert_int_equal(clopt_ctx_create(&c), CLOPT_SUCCESS);
        cl_mem p = NULL, g = NULL;
        float init[40];
        for (int i = 0; i < 40; i++)
            init[i] = 0.1f * (float)(i % 7) - 0.3f;
        OWN({
            p = upload(c, init, 40);
            g = upload(c, init, 40);
        });
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAMW, &hp);
        clopt_optimizer *opt = NULL;
        assert_int_equal(clopt_optimizer_create(c, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){p, 0};
        d.grad = (clopt_tensor){g, 0};
        d.ndim = 2, d.shape[0] = 5, d.shape[1] = 8;
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_set_grad_scale(opt, 2.0), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_set_grad_clip(opt, 1.0), CLOPT_SUCCESS);
        clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
        clopt_status s = clopt_optimizer_prepare(opt);
        int fired = clshim_fault_fired();
        const char *site = clshim_fault_site();
        clshim_fail_nth(0, CL_SUCCESS);
        if (fired) {
            g_faults++;
            note_site("fresh-context", "prepare", site);
            if (s < 0) {
                g_failed++;
                failed++;
            } else {
                g_absorbed++;
            }
        } else if (s != CLOPT_SUCCESS) {
            fail_msg("prepare failed without a fault: %s", clopt_status_name(s));
        }
        /* prepare again, then steps that compile nothing */
        s = clopt_optimizer_prepare(opt);
        if (s != CLOPT_SUCCESS)
            fail_msg("prepare after a fault at call %llu (%s): %s (%s)", (unsigned long long)n,
                     site, clopt_status_name(s), clopt_ctx_last_error(c));
        uint64_t builds = clshim_builds();
        for (int t = 0; t < 2; t++) {
            s = clopt_optimizer_step(opt, NULL);
            if (s != CLOPT_SUCCESS)
                fail_msg("step after a fault at call %llu of prepare (%s): %s (%s)",
                         (unsigned long long)n, site, clopt_status_name(s),
                         clopt_ctx_last_error(c));
        }
        if (clshim_builds() != builds)
            fail_msg("the steps after a fault at call %llu of prepare (%s) built programs",
                     (unsigned long long)n, site);
        clopt_optimizer_destroy(opt);
        OWN({
            clReleaseMemObject(p);
            clReleaseMemObject(g);
        });
        clopt_ctx_destroy(c);
        clshim_enable(0);
        if (leaked()) {
            g_leaks++;
            clshim_dump(stderr);
            violation("prepare with call %llu (%s) failing leaked OpenCL objects",
                     (unsigned long long)n, site);
        }
        if (!fired)
            break;
        if (n > 2000)
            fail_msg("the sweep of prepare does not end");
    }
    fprintf(stderr, "    fresh-context prepare: %llu faults, %llu failed cleanly\n",
            (unsigned long long)(n - 1), (unsigned long long)failed);
    assert_true(n > 1);
    assert_int_equal(g_errors, errors0);
}

