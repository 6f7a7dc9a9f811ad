/* SPDX-License-Identifier: MIT */
/* The tests test_training.c runs from test_training_sched.c (learning-rate schedules). */
#ifndef CLOPT_TEST_TRAINING_H
#define CLOPT_TEST_TRAINING_H

void test_schedules_torch_chainable(void **state);
void test_schedules_restarts_stepped(void **state);
void test_schedules_restarts_huge_counts(void **state);
void test_schedules_edges(void **state);
void test_schedule_in_optimizer(void **state);
void test_schedule_lr_ends(void **state);

#endif
