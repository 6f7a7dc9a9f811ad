/* SPDX-License-Identifier: MIT */
/* Shared by test_engine.c (the engine's step, atomicity, prepare, step counts; main) and
   test_engine_limits.c (a device's limits: capped work-groups, and a range group's fills of
   the engine's own state under faults) and test_engine_amp.c (the attached loss scaler). */
#ifndef CLOPT_TEST_ENGINE_H
#define CLOPT_TEST_ENGINE_H

void test_q8_group_too_small(void **state);
void test_range_group_engine_state_faults(void **state);
void test_work_group_fallback(void **state);
void test_reduce_local_too_large(void **state);
void test_alloc_state_out_of_order(void **state);
void test_fill_pieces(void **state);
void test_launch_items_limit(void **state);
void test_launches_name_local(void **state);
void test_master_after_failed_step(void **state);
void test_mode_switch_marker_fails(void **state);
void test_registered_buffers_held(void **state);
void test_loss_scaler_every_verdict(void **state);
void test_loss_scaler_attach_errors(void **state);

#endif
