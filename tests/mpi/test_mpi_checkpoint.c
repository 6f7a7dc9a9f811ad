/* SPDX-License-Identifier: MIT */
/* Checkpoints across world sizes: a run on 2 ranks saves, the whole world (2 or 3 ranks)
 * loads and continues bit-identically to the run that went on, saves again, and one rank
 * (MPI_COMM_SELF) as well as the unsharded optimizer load that and continue bit-identically
 * (2 -> 2 -> 1 with 2 ranks, 2 -> 3 -> 1 with 3). Damaged, missing and mismatched files fail
 * on every rank and change nothing. Both forms: one gathered file, and a file per rank with
 * a manifest (the unsharded load takes the gathered form only). */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include "mpi_fixture.h"

#include <string.h>
#include <unistd.h>

typedef struct ck_case {
    const char *name;
    clopt_rule rule;
    int whole;   /* shard_tensors */
    int variant; /* 1: bf16 state, 2: Lookahead, 3: Adafactor's first moment */
} ck_case;

static const ck_case cases[] = {
    {"adamw", CLOPT_ADAMW, 0, 0},
    {"nadam", CLOPT_NADAM, 0, 0},
    {"adamw bf16 state", CLOPT_ADAMW, 0, 1},
    {"adamw lookahead", CLOPT_ADAMW, 0, 2},
    {"adafactor (whole tensors)", CLOPT_ADAFACTOR, 1, 0},
    {"adafactor (cut tensors: replicated)", CLOPT_ADAFACTOR, 0, 0},
    {"adafactor beta1 (cut tensors: replicated)", CLOPT_ADAFACTOR, 0, 3},
};

static fx_layout L;
static char path1[256], path2[256];
static int shards; /* 1: clopt_mpi_optimizer_save_shards / load_shards (path = prefix) */

static clopt_status save(clopt_mpi_optimizer *sh, const char *path)
{
    return shards ? clopt_mpi_optimizer_save_shards(sh, path) : clopt_mpi_optimizer_save(sh, path);
}
static clopt_status load(clopt_mpi_optimizer *sh, const char *path)
{
    return shards ? clopt_mpi_optimizer_load_shards(sh, path) : clopt_mpi_optimizer_load(sh, path);
}

static void hparams(const ck_case *c, clopt_hparams *hp)
{
    CHECK_OK(clopt_hparams_default(c->rule, hp));
    if (c->variant == 1)
        hp->state_dtype = CLOPT_DTYPE_BF16;
    if (c->variant == 2) {
        hp->lookahead_k = 3;
        hp->lookahead_alpha = 0.5;
    }
    if (c->variant == 3)
        hp->use_beta1 = 1;
}

/* A sharded optimizer on comm over fresh buffers holding params (plen floats). */
typedef struct run {
    cl_mem p, g;
    clopt_mpi_optimizer *sh;
} run;

static void run_open(run *R, const ck_case *c, MPI_Comm comm, const float *params)
{
    clopt_hparams hp;
    hparams(c, &hp);
    R->p = fx_buffer(L.plen, 0.0f);
    R->g = fx_buffer(L.glen, 0.0f);
    fx_write(R->p, params, L.plen);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(&L, R->p, R->g, d, &desc);
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.shard_tensors = c->whole;
    char why[512];
    const clopt_status s =
        clopt_mpi_optimizer_create(fx_ctx, c->rule, &hp, comm, &desc, &o, &R->sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", c->name, clopt_mpi_status_name(s), why);
}

static void run_steps(run *R, const ck_case *c, unsigned from, unsigned to)
{
    float *flat = malloc(L.total * sizeof *flat);
    CHECK(flat != NULL, "malloc");
    for (unsigned t = from; t <= to; t++) {
        for (size_t i = 0; i < L.total; i++)
            flat[i] = fx_val(300 + t, i);
        fx_scatter(&L, 1, R->g, flat);
        const clopt_status s = clopt_mpi_optimizer_step(R->sh, NULL);
        CHECK(s == CLOPT_SUCCESS, "%s: step %u: %s: %s", c->name, t, clopt_mpi_status_name(s),
              clopt_mpi_optimizer_last_error(R->sh));
    }
    free(flat);
}

static void run_close(run *R)
{
    clopt_mpi_optimizer_destroy(R->sh);
    clReleaseMemObject(R->p);
    clReleaseMemObject(R->g);
}

static void check_params(const ck_case *c, const char *what, cl_mem p, const float *want)
{
    float *a = malloc(L.plen * sizeof *a);
    CHECK(a != NULL, "malloc");
    fx_read(p, a, L.plen);
    for (size_t i = 0; i < L.plen; i++)
        CHECK(memcmp(&a[i], &want[i], sizeof *a) == 0, "%s: %s: element %zu: %.9g, wanted %.9g",
              c->name, what, i, (double)a[i], (double)want[i]);
    free(a);
}

static void run_case(const ck_case *c)
{
    float *init = malloc(L.plen * sizeof *init), *saved = malloc(L.plen * sizeof *saved);
    float *cont = malloc(L.plen * sizeof *cont), *cont2 = malloc(L.plen * sizeof *cont2);
    CHECK(init && saved && cont && cont2, "malloc");
    for (size_t i = 0; i < L.plen; i++)
        init[i] = fx_val(11, i);

    /* A: the first two ranks train 3 steps, save, train 2 more */
    MPI_Comm a;
    MPI_Comm_split(MPI_COMM_WORLD, fx_rank < 2 ? 0 : MPI_UNDEFINED, fx_rank, &a);
    if (a != MPI_COMM_NULL) {
        run R;
        run_open(&R, c, a, init);
        run_steps(&R, c, 1, 3);
        fx_read(R.p, saved, L.plen);
        CHECK_OK(save(R.sh, path1));
        run_steps(&R, c, 4, 5);
        fx_read(R.p, cont, L.plen);
        run_close(&R);
        MPI_Comm_free(&a);
    }
    MPI_Bcast(saved, (int)L.plen, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(cont, (int)L.plen, MPI_FLOAT, 0, MPI_COMM_WORLD);

    /* B: the whole world loads it (resharding), continues, saves again */
    run B;
    run_open(&B, c, MPI_COMM_WORLD, saved);
    CHECK_OK(load(B.sh, path1));
    CHECK(clopt_mpi_optimizer_step_count(B.sh) == 3, "%s: step count after load", c->name);
    run_steps(&B, c, 4, 5);
    check_params(c, "resumed on the world", B.p, cont);
    CHECK_OK(save(B.sh, path2));
    run_steps(&B, c, 6, 7);
    fx_read(B.p, cont2, L.plen);
    run_close(&B);

    /* C: one rank alone, and the unsharded optimizer */
    if (fx_rank == 0) {
        run C;
        run_open(&C, c, MPI_COMM_SELF, cont);
        CHECK_OK(load(C.sh, path2));
        run_steps(&C, c, 6, 7);
        check_params(c, "resumed on one rank", C.p, cont2);
        run_close(&C);
    }
    if (fx_rank == 0 && !shards) {
        clopt_hparams hp;
        hparams(c, &hp);
        cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
        fx_write(p, cont, L.plen);
        clopt_optimizer *ref = fx_reference(c->rule, &hp, &L, p, g);
        char why[256];
        const clopt_status s =
            clopt_mpi_checkpoint_load_unsharded(fx_ctx, ref, path2, why, sizeof why);
        CHECK(s == CLOPT_SUCCESS, "%s: unsharded load: %s: %s", c->name, clopt_mpi_status_name(s),
              why);
        float *flat = malloc(L.total * sizeof *flat);
        CHECK(flat != NULL, "malloc");
        for (unsigned t = 6; t <= 7; t++) {
            for (size_t i = 0; i < L.total; i++)
                flat[i] = fx_val(300 + t, i);
            fx_scatter(&L, 1, g, flat);
            CHECK_OK(clopt_optimizer_step(ref, NULL));
        }
        check_params(c, "resumed unsharded", p, cont2);
        free(flat);
        clopt_optimizer_destroy(ref);
        clReleaseMemObject(p);
        clReleaseMemObject(g);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    free(init);
    free(saved);
    free(cont);
    free(cont2);
}

/* CRC-32C (Castagnoli), bit by bit, as the format's documentation defines it. */
static uint32_t crc32c_bits(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* Sets the step count of a checkpoint or manifest (the u64 at byte 32, after the magic,
   version, rule, total and tensor count) and seals it again. */
static void patch_steps(const char *path, uint64_t steps)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    unsigned char *b = malloc((size_t)len);
    CHECK(b != NULL && len > 44, "%s: %ld bytes", path, len);
    fseek(f, 0, SEEK_SET);
    CHECK(fread(b, 1, (size_t)len, f) == (size_t)len, "read %s", path);
    for (int k = 0; k < 8; k++)
        b[32 + k] = (unsigned char)(steps >> (8 * k));
    const uint32_t crc = crc32c_bits(b, (size_t)len - 4);
    memcpy(b + len - 4, &crc, 4);
    fseek(f, 0, SEEK_SET);
    CHECK(fwrite(b, 1, (size_t)len, f) == (size_t)len && fclose(f) == 0, "write %s", path);
    free(b);
}

/* Damaged, missing and mismatched files: the same failure on every rank, nothing changes. */
static void test_failures(void)
{
    const ck_case *c = &cases[0];
    float *init = malloc(L.plen * sizeof *init);
    CHECK(init != NULL, "malloc");
    for (size_t i = 0; i < L.plen; i++)
        init[i] = fx_val(11, i);
    run R;
    run_open(&R, c, MPI_COMM_WORLD, init);
    run_steps(&R, c, 1, 1);
    CHECK_OK(save(R.sh, path1));
    clopt_optimizer *loc = clopt_mpi_optimizer_local(R.sh);
    size_t len = 0;
    float *before = NULL, *after = NULL;
    if (clopt_optimizer_param_count(loc)) {
        CHECK_OK(clopt_optimizer_state_info(loc, 0, 0, NULL, &len));
        before = malloc(len * sizeof *before);
        after = malloc(len * sizeof *after);
        CHECK(before && after, "malloc");
        CHECK_OK(clopt_optimizer_read_state(loc, 0, 0, before, len));
    }
    if (fx_rank == 0) { /* flip one byte in the middle (of rank 0's part) */
        char part[300];
        snprintf(part, sizeof part, "%s.0", path1);
        FILE *f = fopen(shards ? part : path1, "r+b");
        CHECK(f != NULL, "open %s", path1);
        fseek(f, 200, SEEK_SET);
        const int ch = fgetc(f);
        fseek(f, 200, SEEK_SET);
        fputc(ch ^ 0x10, f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (!shards) {
        CHECK_STATUS(load(R.sh, path1), CLOPT_ERR_FORMAT);
    } else { /* the damaged part is read by the ranks whose slice overlaps rank 0's */
        const clopt_status s = load(R.sh, path1);
        CHECK(s == CLOPT_ERR_FORMAT || s == (clopt_status)CLOPT_MPI_ERR_REMOTE, "damaged part: %s",
              clopt_mpi_status_name(s));
        int mine = s == CLOPT_ERR_FORMAT, any = 0;
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        CHECK(any, "no rank reported the damaged part");
    }
    CHECK_STATUS(load(R.sh, "/nonexistent/clopt.ckpt"),
                 fx_rank == 0 ? CLOPT_ERR_IO : (clopt_status)CLOPT_MPI_ERR_REMOTE);
    if (before) {
        CHECK_OK(clopt_optimizer_read_state(loc, 0, 0, after, len));
        CHECK(memcmp(before, after, len * sizeof *after) == 0, "a failed load changed the state");
    }
    CHECK(clopt_mpi_optimizer_step_count(R.sh) == 1, "a failed load changed the step count");
    /* a sealed file whose step count no optimizer takes (2^60): refused before anything is
       written (the loaders wrote every state, then set_step_count refused the count) */
    CHECK_OK(save(R.sh, path1));
    if (fx_rank == 0) {
        char man[300];
        snprintf(man, sizeof man, "%s.manifest", path1);
        patch_steps(shards ? man : path1, UINT64_C(1) << 60);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    {
        const clopt_status s = load(R.sh, path1);
        CHECK(s == CLOPT_ERR_FORMAT || s == (clopt_status)CLOPT_MPI_ERR_REMOTE,
              "step count 2^60: %s", clopt_mpi_status_name(s));
        int mine = s == CLOPT_ERR_FORMAT, any = 0;
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        CHECK(any, "no rank reported the step count");
    }
    if (before) {
        CHECK_OK(clopt_optimizer_read_state(loc, 0, 0, after, len));
        CHECK(memcmp(before, after, len * sizeof *after) == 0,
              "a load refused for its step count changed the state");
    }
    CHECK(clopt_mpi_optimizer_step_count(R.sh) == 1, "a failed load changed the step count");
    /* a symlink planted at rank 0's temporary name (path.<pid>.tmp, the part's for the
       per-rank form): the save fails and writes nothing through it (fopen followed it) */
    char victim[300] = "", link_at[400] = "";
    if (fx_rank == 0) {
        snprintf(victim, sizeof victim, "%s.victim", path2);
        FILE *v = fopen(victim, "wb");
        CHECK(v != NULL && fputs("keep", v) >= 0 && fclose(v) == 0, "writing %s", victim);
        snprintf(link_at, sizeof link_at, "%s%s.%ld.tmp", path2, shards ? ".0" : "",
                 (long)getpid());
        CHECK(symlink(victim, link_at) == 0, "symlink %s", link_at);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_STATUS(save(R.sh, path2),
                 fx_rank == 0 ? CLOPT_ERR_IO : (clopt_status)CLOPT_MPI_ERR_REMOTE);
    if (fx_rank == 0) {
        char got[16] = "";
        FILE *v = fopen(victim, "rb");
        CHECK(v != NULL && fgets(got, sizeof got, v) != NULL && strcmp(got, "keep") == 0,
              "the save wrote through the planted link");
        fclose(v);
        remove(link_at);
        remove(victim);
    }
    /* a checkpoint of another layout */
    CHECK_OK(save(R.sh, path1));
    run_close(&R);
    fx_layout keep = L;
    fx_layout_vector(&L, 5);
    run_open(&R, c, MPI_COMM_WORLD, init);
    CHECK_STATUS(load(R.sh, path1), CLOPT_ERR_STATE_MISMATCH);
    run_close(&R);
    L = keep;
    /* another rule */
    const ck_case nadam = {"nadam", CLOPT_NADAM, 0, 0};
    run_open(&R, &nadam, MPI_COMM_WORLD, init);
    CHECK_STATUS(load(R.sh, path1), CLOPT_ERR_STATE_MISMATCH);
    run_close(&R);
    free(before);
    free(after);
    free(init);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    fx_layout_main(&L);
    fx_tmp_path(path1, sizeof path1, "clopt_mpi_ckpt", "_a.bin");
    fx_tmp_path(path2, sizeof path2, "clopt_mpi_ckpt", "_b.bin");
    for (shards = 0; shards < 2; shards++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            run_case(&cases[c]);
        test_failures();
    }
    if (fx_rank == 0) { /* the files of both forms */
        fx_remove_checkpoint(path1);
        fx_remove_checkpoint(path2);
    }
    return fx_finish("test_mpi_checkpoint");
}
