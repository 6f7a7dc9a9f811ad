/* SPDX-License-Identifier: MIT */
/* Every rank reaches the same outcome when only some ranks fail or differ:
 *  - an OpenCL fault at each fallible call of the last rank's step (Adam) and Schedule-Free
 *    set_mode (tests/clshim.c): the ranks report the same success or failure, no rank counts
 *    a failed step, all report the same mode, a step after a failed set_mode fails on every
 *    rank (none waits in a collective) and a second set_mode recovers; in the end every
 *    rank's parameter buffer is the same;
 *  - save_shards failing on one rank (an OpenCL fault on the last rank, rank 0's manifest
 *    not writable) keeps the checkpoint already at the prefix loadable: load_shards gives
 *    back the saved state bit for bit and its step count;
 *  - set_group_hparams of a change the core refuses (cautious masking on 8-bit state) is
 *    refused by every rank, also by rank 0, which holds none of the group;
 *  - create with the same element counts but other shapes on some ranks ([7, 30] and
 *    [30, 7], [210] and [210, 1]) fails with CLOPT_MPI_ERR_MISMATCH on every rank;
 *  - a grad scale or clip set on some ranks only fails the step on every rank (MISMATCH,
 *    nothing changed) instead of a skip on some ranks while the others wait;
 *  - clopt_mpi_checkpoint_load_unsharded refuses an optimizer whose tensor has another shape
 *    of the same size. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include "mpi_fixture.h"

#include "clshim.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int last_rank(void)
{
    return fx_rank == fx_size - 1;
}

/* Every rank's int. */
static void all_ints(int v, int *all)
{
    CHECK(MPI_Allgather(&v, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD) == MPI_SUCCESS,
          "MPI_Allgather");
}

/* The statuses of a call that failed on the last rank only (or nowhere): the same outcome on
   every rank, the last rank's own status there and CLOPT_MPI_ERR_REMOTE elsewhere. */
static void check_outcome(const char *what, unsigned long long k, clopt_status s)
{
    int all[64];
    CHECK(fx_size <= 64, "world size");
    all_ints((int)s, all);
    const int failed = all[fx_size - 1] != CLOPT_SUCCESS;
    for (int r = 0; r < fx_size; r++) {
        const clopt_status want_remote = failed && r != fx_size - 1
                                             ? (clopt_status)CLOPT_MPI_ERR_REMOTE
                                             : CLOPT_SUCCESS;
        CHECK(r == fx_size - 1 ? all[r] != CLOPT_MPI_ERR_REMOTE : all[r] == (int)want_remote,
              "%s, fault at call %llu: rank %d returned %s, the last rank %s", what, k, r,
              clopt_mpi_status_name((clopt_status)all[r]),
              clopt_mpi_status_name((clopt_status)all[fx_size - 1]));
    }
}

/* Every rank's parameter buffer equals rank 0's, bit for bit. */
static void check_same_params(const char *what, cl_mem p, size_t n)
{
    float *mine = malloc(n * sizeof *mine), *r0 = malloc(n * sizeof *r0);
    CHECK(mine && r0, "malloc");
    fx_read(p, mine, n);
    memcpy(r0, mine, n * sizeof *r0);
    MPI_Bcast(r0, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(memcmp(mine, r0, n * sizeof *r0) == 0, "%s: this rank's parameters differ from rank 0's",
          what);
    free(mine);
    free(r0);
}

/* The fallible OpenCL calls the last rank makes in op (run once, clean). */
typedef clopt_status (*op_fn)(clopt_mpi_optimizer *sh, int arg);
static unsigned long long count_calls(op_fn op, clopt_mpi_optimizer *sh, int arg)
{
    unsigned long long calls = 0;
    if (last_rank()) {
        clshim_reset();
        clshim_enable(1);
    }
    const clopt_status s = op(sh, arg);
    if (last_rank()) {
        clshim_enable(0);
        calls = clshim_calls();
    }
    CHECK_OK(s);
    MPI_Bcast(&calls, 1, MPI_UNSIGNED_LONG_LONG, fx_size - 1, MPI_COMM_WORLD);
    CHECK(calls > 2, "%llu fallible calls", calls);
    return calls;
}

/* op with the last rank's k-th fallible call failing. */
static clopt_status with_fault(op_fn op, clopt_mpi_optimizer *sh, int arg, unsigned long long k)
{
    if (last_rank()) {
        clshim_reset();
        clshim_fail_nth(k, CL_OUT_OF_RESOURCES);
        clshim_enable(1);
    }
    const clopt_status s = op(sh, arg);
    if (last_rank()) {
        clshim_enable(0);
        CHECK(clshim_fault_fired(), "fault %llu did not fire", k);
        clshim_fail_nth(0, CL_SUCCESS);
    }
    return s;
}

static clopt_status op_step(clopt_mpi_optimizer *sh, int arg)
{
    (void)arg;
    return clopt_mpi_optimizer_step(sh, NULL);
}
static clopt_status op_set_mode(clopt_mpi_optimizer *sh, int train)
{
    return clopt_mpi_optimizer_set_mode(sh, train);
}

typedef struct opt_run {
    fx_layout L;
    cl_mem p, g;
    clopt_param_desc d[FX_MAX_T];
    clopt_mpi_optimizer *sh;
} opt_run;

static void open_run(opt_run *R, clopt_rule rule, const clopt_hparams *hp)
{
    fx_layout_main(&R->L);
    R->p = fx_buffer(R->L.plen, 0.5f);
    R->g = fx_buffer(R->L.glen, 0.0f);
    float *flat = malloc(R->L.total * sizeof *flat);
    CHECK(flat != NULL, "malloc");
    for (size_t i = 0; i < R->L.total; i++)
        flat[i] = fx_val(5, i);
    fx_scatter(&R->L, 1, R->g, flat);
    for (size_t i = 0; i < R->L.total; i++)
        flat[i] = fx_val(6, i);
    fx_scatter(&R->L, 0, R->p, flat);
    free(flat);
    clopt_range_group desc;
    fx_range_group(&R->L, R->p, R->g, R->d, &desc);
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, rule, hp, MPI_COMM_WORLD, &desc,
                                                      NULL, &R->sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "create: %s", why);
}

static void close_run(opt_run *R)
{
    clopt_mpi_optimizer_destroy(R->sh);
    clReleaseMemObject(R->p);
    clReleaseMemObject(R->g);
}

/* A fault at each of the last rank's step calls: the ranks agree, none counts a failed step;
   the step after it works everywhere. */
static void test_step_faults(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp));
    opt_run R;
    open_run(&R, CLOPT_ADAM, &hp);
    CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL)); /* kernels built: a step's calls only */
    const unsigned long long calls = count_calls(op_step, R.sh, 0);
    uint64_t steps = 2;
    int failures = 0;
    for (unsigned long long k = 1; k <= calls; k++) {
        const clopt_status s = with_fault(op_step, R.sh, 0, k);
        check_outcome("step", k, s);
        steps += s == CLOPT_SUCCESS;
        failures += s != CLOPT_SUCCESS;
        int counts[64];
        all_ints((int)clopt_mpi_optimizer_step_count(R.sh), counts);
        for (int r = 0; r < fx_size; r++)
            CHECK(counts[r] == (int)steps, "step, fault at call %llu: rank %d counts %d steps, "
                  "%llu expected", k, r, counts[r], (unsigned long long)steps);
        CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
        steps++;
    }
    CHECK(failures > 0, "no fault failed a step");
    /* the last of the calls: writing the gathered parameters (after every collective) */
    check_same_params("after the step faults", R.p, R.L.plen);
    close_run(&R);
}

/* Schedule-Free set_mode(0) with a fault at each of the last rank's calls: the same outcome
   and mode everywhere; after a failure every rank's step refuses (none waits) and set_mode
   again recovers; the eval parameters are then the clean switch's. */
static void test_set_mode_faults(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp));
    opt_run R;
    open_run(&R, CLOPT_SCHEDULE_FREE_ADAMW, &hp);
    for (int i = 0; i < 3; i++)
        CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
    /* the reference: the parameters of a clean switch to eval and back */
    float *want_eval = malloc(R.L.plen * sizeof *want_eval);
    float *want_train = malloc(R.L.plen * sizeof *want_train);
    float *got = malloc(R.L.plen * sizeof *got);
    CHECK(want_eval && want_train && got, "malloc");
    CHECK_OK(clopt_mpi_optimizer_set_mode(R.sh, 0));
    fx_read(R.p, want_eval, R.L.plen);
    CHECK_OK(clopt_mpi_optimizer_set_mode(R.sh, 1));
    fx_read(R.p, want_train, R.L.plen);
    const unsigned long long calls = count_calls(op_set_mode, R.sh, 0);
    CHECK_OK(clopt_mpi_optimizer_set_mode(R.sh, 1));
    int failures = 0;
    for (unsigned long long k = 1; k <= calls; k++) {
        const clopt_status s = with_fault(op_set_mode, R.sh, 0, k);
        check_outcome("set_mode(0)", k, s);
        int modes[64];
        all_ints(clopt_mpi_optimizer_training(R.sh), modes);
        for (int r = 0; r < fx_size; r++)
            CHECK(modes[r] == (s == CLOPT_SUCCESS ? 0 : 1),
                  "set_mode(0), fault at call %llu (%s): rank %d reports training %d", k,
                  clopt_mpi_status_name(s), r, modes[r]);
        if (s != CLOPT_SUCCESS) {
            failures++;
            alarm(60);
            CHECK_STATUS(clopt_mpi_optimizer_step(R.sh, NULL), CLOPT_ERR_INVALID_ARGUMENT);
            alarm(0);
            CHECK(clopt_mpi_optimizer_step_count(R.sh) == 3, "a refused step was counted");
            CHECK_OK(clopt_mpi_optimizer_set_mode(R.sh, 0)); /* finishes the switch */
        }
        fx_read(R.p, got, R.L.plen);
        for (size_t i = 0; i < R.L.plen; i++)
            CHECK(fabsf(got[i] - want_eval[i]) <= 1e-6f * fabsf(want_eval[i]) + 1e-7f,
                  "set_mode(0), fault at call %llu: eval parameter %zu is %.9g, the clean "
                  "switch's %.9g", k, i, (double)got[i], (double)want_eval[i]);
        CHECK_OK(clopt_mpi_optimizer_set_mode(R.sh, 1));
        fx_read(R.p, got, R.L.plen);
        for (size_t i = 0; i < R.L.plen; i++)
            CHECK(fabsf(got[i] - want_train[i]) <= 1e-6f * fabsf(want_train[i]) + 1e-7f,
                  "set_mode(1) after the fault at call %llu: parameter %zu is %.9g, not %.9g",
                  k, i, (double)got[i], (double)want_train[i]);
    }
    CHECK(failures > 0, "no fault failed set_mode");
    check_same_params("after the set_mode faults", R.p, R.L.plen);
    alarm(60);
    CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
    alarm(0);
    CHECK(clopt_mpi_optimizer_step_count(R.sh) == 4, "step count");
    free(want_eval);
    free(want_train);
    free(got);
    close_run(&R);
}

/* Every state of every piece of this rank's shard, as bytes of float32. */
static float *read_shard_states(clopt_mpi_optimizer *sh, size_t *n)
{
    clopt_optimizer *loc = clopt_mpi_optimizer_local(sh);
    size_t tot = 0;
    for (size_t j = 0; j < clopt_optimizer_param_count(loc); j++)
        for (size_t k = 0; k < clopt_optimizer_state_count(loc, j); k++) {
            size_t len = 0;
            CHECK_OK(clopt_optimizer_state_info(loc, j, k, NULL, &len));
            tot += len;
        }
    float *v = malloc((tot + 1) * sizeof *v), *at = v;
    CHECK(v != NULL, "malloc");
    for (size_t j = 0; j < clopt_optimizer_param_count(loc); j++)
        for (size_t k = 0; k < clopt_optimizer_state_count(loc, j); k++) {
            size_t len = 0;
            CHECK_OK(clopt_optimizer_state_info(loc, j, k, NULL, &len));
            CHECK_OK(clopt_optimizer_read_state(loc, j, k, at, len));
            at += len;
        }
    *n = tot;
    return v;
}

static const char *shards_prefix;
static clopt_status op_save_shards(clopt_mpi_optimizer *sh, int arg)
{
    (void)arg;
    return clopt_mpi_optimizer_save_shards(sh, shards_prefix);
}

/* No temporary file of this rank's part is left behind. */
static void check_no_tmp(const char *prefix)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.%d.%ld.tmp", prefix, fx_rank, (long)getpid());
    struct stat st;
    CHECK(stat(tmp, &st) != 0, "%s was left behind", tmp);
}

/* A save_shards that fails on one rank keeps the checkpoint at the prefix loadable, with its
   state: the last rank's first OpenCL call failing (reading its state), then rank 0 unable
   to create the manifest's temporary file (a directory in the way). */
static void test_shards_keep_previous(const char *prefix)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp));
    opt_run R;
    open_run(&R, CLOPT_ADAM, &hp);
    CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
    size_t n = 0, n2 = 0;
    float *want = read_shard_states(R.sh, &n);
    CHECK(n > 0, "rank %d holds no state", fx_rank);
    CHECK_OK(clopt_mpi_optimizer_save_shards(R.sh, prefix)); /* the state of step 1 */
    shards_prefix = prefix;
    char blocker[512] = "";
    for (int round = 0; round < 2; round++) {
        CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
        float *moved = read_shard_states(R.sh, &n2);
        CHECK(n2 == n && memcmp(moved, want, n * sizeof *want) != 0, "the step changed no state");
        free(moved);
        alarm(60);
        if (round == 0) {
            check_outcome("save_shards", 1, with_fault(op_save_shards, R.sh, 0, 1));
        } else {
            if (fx_rank == 0) {
                snprintf(blocker, sizeof blocker, "%s.manifest.%ld.tmp", prefix, (long)getpid());
                CHECK(mkdir(blocker, 0700) == 0, "mkdir %s", blocker);
            }
            const clopt_status s = clopt_mpi_optimizer_save_shards(R.sh, prefix);
            CHECK(s == (fx_rank == 0 ? CLOPT_ERR_IO : (clopt_status)CLOPT_MPI_ERR_REMOTE),
                  "save_shards, rank 0's manifest not creatable: %s (%s)",
                  clopt_mpi_status_name(s), clopt_mpi_optimizer_last_error(R.sh));
        }
        check_no_tmp(prefix);
        MPI_Barrier(MPI_COMM_WORLD);
        const clopt_status s = clopt_mpi_optimizer_load_shards(R.sh, prefix);
        alarm(0);
        CHECK(s == CLOPT_SUCCESS, "round %d: the previous checkpoint does not load: %s (%s)",
              round, clopt_mpi_status_name(s), clopt_mpi_optimizer_last_error(R.sh));
        CHECK(clopt_mpi_optimizer_step_count(R.sh) == 1, "round %d: step count %llu, not 1",
              round, (unsigned long long)clopt_mpi_optimizer_step_count(R.sh));
        float *back = read_shard_states(R.sh, &n2);
        CHECK(n2 == n && memcmp(back, want, n * sizeof *want) == 0,
              "round %d: the loaded state is not step 1's", round);
        free(back);
    }
    if (fx_rank == 0)
        rmdir(blocker);
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_OK(clopt_mpi_optimizer_save_shards(R.sh, prefix)); /* and a save works again */
    free(want);
    close_run(&R);
}

/* Two groups of 8-bit Adam, 1024 and 16 elements: the shard boundaries fall on multiples of
   256 (512 with 2 ranks; 256 and 768 with 3), so rank 0 holds none of group 1. Cautious
   masking has no 8-bit state: every rank refuses it, group 0's settings stay. */
static void test_group_hparams(void)
{
    const size_t n0 = 1024, n1 = 16;
    cl_mem p = fx_buffer(n0 + n1, 0.5f), g = fx_buffer(n0 + n1, 0.25f);
    clopt_param_desc d[2];
    clopt_range_group rg[2];
    clopt_hparams hp[2];
    for (int i = 0; i < 2; i++) {
        clopt_param_desc_init(&d[i]);
        d[i].param = (clopt_tensor){p, i ? n0 : 0};
        d[i].grad = (clopt_tensor){g, i ? n0 : 0};
        d[i].ndim = 1;
        d[i].shape[0] = i ? n1 : n0;
        clopt_range_group_init(&rg[i]);
        rg[i].ntensors = 1;
        rg[i].tensors = &d[i];
        CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp[i]));
        hp[i].state_dtype = CLOPT_DTYPE_U8;
    }
    hp[1].lr = 3e-4;
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status cs = clopt_mpi_optimizer_create_groups(fx_ctx, CLOPT_ADAM, MPI_COMM_WORLD, 2,
                                                              hp, rg, NULL, &sh, why, sizeof why);
    CHECK(cs == CLOPT_SUCCESS, "create: %s", why);
    size_t first = 0, count = 0;
    CHECK_OK(clopt_mpi_optimizer_shard(sh, &first, &count, NULL));
    CHECK(fx_rank != 0 || first + count <= n0, "rank 0 holds part of group 1: [%zu, %zu)", first,
          first + count);
    CHECK_OK(clopt_mpi_optimizer_step(sh, NULL));
    clopt_hparams h = hp[1];
    h.cautious = 1;
    CHECK_STATUS(clopt_mpi_optimizer_set_group_hparams(sh, 1, &h), CLOPT_ERR_UNSUPPORTED);
    CHECK_STATUS(clopt_mpi_optimizer_set_hparams(sh, &h), CLOPT_ERR_UNSUPPORTED);
    clopt_hparams got;
    for (size_t gi = 0; gi < 2; gi++) {
        CHECK_OK(clopt_mpi_optimizer_get_group_hparams(sh, gi, &got));
        CHECK(got.cautious == 0 && got.lr == hp[gi].lr, "group %zu changed by a refusal", gi);
    }
    /* the internal optimizer's group 0 (empty: the check's) holds group 0's settings */
    CHECK_OK(clopt_optimizer_get_group_hparams(clopt_mpi_optimizer_local(sh), 0, &got));
    CHECK(got.cautious == 0 && got.lr == hp[0].lr, "the internal group 0 was changed");
    /* an accepted change is taken on every rank, group 0's untouched */
    h = hp[1];
    h.lr = 5e-4;
    CHECK_OK(clopt_mpi_optimizer_set_group_hparams(sh, 1, &h));
    CHECK_OK(clopt_mpi_optimizer_get_group_hparams(sh, 1, &got));
    CHECK(got.lr == 5e-4, "group 1's lr %g", got.lr);
    CHECK_OK(clopt_optimizer_get_group_hparams(clopt_mpi_optimizer_local(sh), 0, &got));
    CHECK(got.lr == hp[0].lr, "the internal group 0's lr %g", got.lr);
    alarm(60);
    CHECK_OK(clopt_mpi_optimizer_step(sh, NULL));
    alarm(0);
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* One tensor of 210 elements, its shape given per rank: rank 0's, the others'. */
static clopt_status create_shaped(size_t nd0, const size_t *s0, size_t nd, const size_t *s,
                                  char *why, size_t why_len)
{
    cl_mem p = fx_buffer(210, 0.5f), g = fx_buffer(210, 0.25f);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = fx_rank == 0 ? nd0 : nd;
    for (size_t k = 0; k < d.ndim; k++)
        d.shape[k] = fx_rank == 0 ? s0[k] : s[k];
    if (d.ndim == 0)
        d.shape[0] = 210;
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 1;
    rg.tensors = &d;
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp));
    clopt_mpi_optimizer *sh = NULL;
    const clopt_status st =
        clopt_mpi_optimizer_create(fx_ctx, CLOPT_ADAM, &hp, MPI_COMM_WORLD, &rg, NULL, &sh, why,
                                   why_len);
    CHECK((st == CLOPT_SUCCESS) == (sh != NULL), "out on %s", clopt_mpi_status_name(st));
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    return st;
}

static void test_shapes(void)
{
    static const size_t a[] = {7, 30}, b[] = {30, 7}, v[] = {210}, v1[] = {210, 1};
    char why[512];
    clopt_status s = create_shaped(2, a, 2, b, why, sizeof why);
    CHECK(s == (clopt_status)CLOPT_MPI_ERR_MISMATCH && strstr(why, "shapes"),
          "[7, 30] on rank 0, [30, 7] elsewhere: %s (%s)", clopt_mpi_status_name(s), why);
    s = create_shaped(1, v, 2, v1, why, sizeof why);
    CHECK(s == (clopt_status)CLOPT_MPI_ERR_MISMATCH, "[210] on rank 0, [210, 1] elsewhere: %s",
          clopt_mpi_status_name(s));
    /* ndim 0 is a vector of shape[0] (as the core takes it): the same tensor as [210] */
    s = create_shaped(0, v, 1, v, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "ndim 0 on rank 0, [210] elsewhere: %s (%s)",
          clopt_mpi_status_name(s), why);
    s = create_shaped(2, b, 2, b, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "the same shape everywhere: %s (%s)", clopt_mpi_status_name(s), why);
}

/* Grad scale (AMP) on the last rank only, with a NaN gradient: before the check, the last
   rank skipped the step while the others entered the update's collectives. Clip on rank 0
   only. Both: MISMATCH on every rank, the parameters and the step count unchanged. */
static void test_clip_scale_agreement(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp));
    opt_run R;
    open_run(&R, CLOPT_ADAM, &hp);
    float *flat = malloc(R.L.total * sizeof *flat);
    float *before = malloc(R.L.plen * sizeof *before), *after = malloc(R.L.plen * sizeof *after);
    CHECK(flat && before && after, "malloc");
    for (size_t i = 0; i < R.L.total; i++)
        flat[i] = fx_val(9, i);
    flat[R.L.total - 1] = NAN; /* in the last rank's slice */
    fx_scatter(&R.L, 1, R.g, flat);
    fx_read(R.p, before, R.L.plen);
    for (int c = 0; c < 2; c++) {
        if (c == 0)
            CHECK_OK(clopt_mpi_optimizer_set_grad_scale(R.sh, last_rank() ? 1024.0 : 0.0));
        else
            CHECK_OK(clopt_mpi_optimizer_set_grad_clip(R.sh, fx_rank == 0 ? 0.5 : 0.0));
        alarm(60);
        const clopt_status s = clopt_mpi_optimizer_step(R.sh, NULL);
        alarm(0);
        CHECK(s == (clopt_status)CLOPT_MPI_ERR_MISMATCH, "%s on one rank only: %s (%s)",
              c ? "clip" : "grad scale", clopt_mpi_status_name(s),
              clopt_mpi_optimizer_last_error(R.sh));
        fx_read(R.p, after, R.L.plen);
        CHECK(memcmp(before, after, R.L.plen * sizeof *after) == 0, "a refused step changed θ");
        CHECK(clopt_mpi_optimizer_step_count(R.sh) == 0, "a refused step was counted");
        CHECK_OK(clopt_mpi_optimizer_set_grad_scale(R.sh, 0.0));
        CHECK_OK(clopt_mpi_optimizer_set_grad_clip(R.sh, 0.0));
    }
    /* alike everywhere: AMP skips the NaN step on every rank, then a finite one steps; a clip
       of -0 on rank 0 is "off" as the others' 0 (compared as bytes, it was a mismatch) */
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(R.sh, fx_rank == 0 ? -0.0 : 0.0));
    CHECK_OK(clopt_mpi_optimizer_set_grad_scale(R.sh, 1024.0));
    CHECK_STATUS(clopt_mpi_optimizer_step(R.sh, NULL), CLOPT_STEP_SKIPPED);
    flat[R.L.total - 1] = 1.0f;
    fx_scatter(&R.L, 1, R.g, flat);
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(R.sh, 0.5));
    CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
    CHECK(clopt_mpi_optimizer_step_count(R.sh) == 1, "step count");
    free(flat);
    free(before);
    free(after);
    close_run(&R);
}

/* A gathered checkpoint of the main layout (tensor 0 is 3x5) into an unsharded optimizer
   whose tensor 0 is 5x3: refused; 3x5 loads. */
static void test_unsharded_shapes(const char *path)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAM, &hp));
    opt_run R;
    open_run(&R, CLOPT_ADAM, &hp);
    CHECK_OK(clopt_mpi_optimizer_step(R.sh, NULL));
    CHECK_OK(clopt_mpi_optimizer_save(R.sh, path));
    if (fx_rank == 0) {
        fx_layout T = R.L;
        T.shape[0][0] = 5;
        T.shape[0][1] = 3;
        char why[256];
        clopt_optimizer *o = fx_reference(CLOPT_ADAM, &hp, &T, R.p, R.g);
        const clopt_status s = clopt_mpi_checkpoint_load_unsharded(fx_ctx, o, path, why,
                                                                   sizeof why);
        CHECK(s == CLOPT_ERR_STATE_MISMATCH && strstr(why, "tensor 0"),
              "a 5x3 tensor for the checkpoint's 3x5: %s (%s)", clopt_mpi_status_name(s), why);
        CHECK(clopt_optimizer_step_count(o) == 0, "a refused load changed the step count");
        clopt_optimizer_destroy(o);
        o = fx_reference(CLOPT_ADAM, &hp, &R.L, R.p, R.g);
        CHECK_OK(clopt_mpi_checkpoint_load_unsharded(fx_ctx, o, path, why, sizeof why));
        CHECK(clopt_optimizer_step_count(o) == 1, "the load's step count");
        clopt_optimizer_destroy(o);
        remove(path);
    }
    close_run(&R);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    fx_watchdog();
    char prefix[256], path[256];
    fx_tmp_path(prefix, sizeof prefix, "clopt_mpi_agree", "");
    fx_tmp_path(path, sizeof path, "clopt_mpi_agree", ".ckpt");
    test_step_faults();
    test_set_mode_faults();
    test_shards_keep_previous(prefix);
    test_group_hparams();
    test_shapes();
    test_clip_scale_agreement();
    test_unsharded_shapes(path);
    if (fx_rank == 0)
        fx_remove_checkpoint(prefix);
    return fx_finish("test_mpi_agreement");
}
