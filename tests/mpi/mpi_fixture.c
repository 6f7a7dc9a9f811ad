/* SPDX-License-Identifier: MIT */
#include "mpi_fixture.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

int fx_rank, fx_size;
clopt_ctx *fx_ctx;

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "check failed: a rank waited 60 s (another rank left a collective)\n";
    if (write(2, m, sizeof m - 1) < 0)
        _exit(4);
    _exit(3);
}

void fx_watchdog(void) { signal(SIGALRM, on_alarm); }

void fx_tmp_path(char *buf, size_t cap, const char *stem, const char *suffix)
{
    long pid = (long)getpid();
    MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    CHECK(snprintf(buf, cap, "%s/%s_%ld%s", dir, stem, pid, suffix) < (int)cap,
          "%s: path too long", stem);
}

void fx_remove_checkpoint(const char *prefix)
{
    char f[1024];
    remove(prefix);
    for (int r = -1; r < fx_size; r++) {
        if (r < 0)
            snprintf(f, sizeof f, "%s.manifest", prefix);
        else
            snprintf(f, sizeof f, "%s.%d", prefix, r);
        remove(f);
    }
}

void fx_init(int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &fx_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &fx_size);
    char why[512];
    const clopt_status s = clopt_ctx_create_device_ex(NULL, &fx_ctx, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "no OpenCL device: %s", why);
}

int fx_finish(const char *name)
{
    clopt_ctx_destroy(fx_ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    if (fx_rank == 0)
        printf("%s (%d ranks): ok\n", name, fx_size);
    MPI_Finalize();
    return 0;
}

static void finish_layout(fx_layout *L)
{
    size_t p = 5, g = 2;
    L->total = 0;
    for (size_t i = 0; i < L->nt; i++) {
        size_t n = 1;
        for (size_t k = 0; k < L->ndim[i]; k++)
            n *= L->shape[i][k];
        L->n[i] = n;
        L->poff[i] = p;
        L->goff[i] = g;
        p += n + 3;
        g += n;
        L->total += n;
    }
    L->plen = p;
    L->glen = g + 1;
}

static void set_layout(fx_layout *L, size_t nt, const size_t *nd, const size_t (*sh)[3])
{
    memset(L, 0, sizeof *L);
    L->nt = nt;
    for (size_t i = 0; i < nt; i++) {
        L->ndim[i] = nd[i];
        memcpy(L->shape[i], sh[i], sizeof sh[i]);
    }
    finish_layout(L);
}

void fx_layout_main(fx_layout *L)
{
    static const size_t nd[] = {2, 1, 3, 1, 1};
    static const size_t sh[][3] = {{3, 5, 0}, {7, 0, 0}, {2, 2, 3}, {1, 0, 0}, {11, 0, 0}};
    set_layout(L, 5, nd, sh);
}

void fx_layout_wide(fx_layout *L)
{
    static const size_t nd[] = {2, 1, 3};
    static const size_t sh[][3] = {{8, 40, 0}, {33, 0, 0}, {6, 7, 5}};
    set_layout(L, 3, nd, sh);
}

void fx_layout_matrices(fx_layout *L)
{
    static const size_t nd[] = {2, 2, 2};
    static const size_t sh[][3] = {{12, 20, 0}, {16, 8, 0}, {5, 30, 0}};
    set_layout(L, 3, nd, sh);
}

void fx_layout_vector(fx_layout *L, size_t n)
{
    memset(L, 0, sizeof *L);
    L->nt = 1;
    L->ndim[0] = 1;
    L->shape[0][0] = n;
    finish_layout(L);
}

void fx_range_group(const fx_layout *L, cl_mem p, cl_mem g, clopt_param_desc *d,
                    clopt_range_group *rg)
{
    for (size_t i = 0; i < L->nt; i++) {
        clopt_param_desc_init(&d[i]);
        d[i].param = (clopt_tensor){p, L->poff[i]};
        d[i].grad = (clopt_tensor){g, L->goff[i]};
        d[i].ndim = L->ndim[i];
        for (size_t k = 0; k < L->ndim[i]; k++)
            d[i].shape[k] = L->shape[i][k];
    }
    clopt_range_group_init(rg);
    rg->ntensors = L->nt;
    rg->tensors = d;
}

cl_mem fx_buffer(size_t n, float fill)
{
    cl_int e;
    cl_mem b = clCreateBuffer(clopt_ctx_cl_context(fx_ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                              NULL, &e);
    CHECK(b != NULL, "clCreateBuffer: %d", (int)e);
    float *h = malloc(n * sizeof *h);
    CHECK(h != NULL, "malloc");
    for (size_t i = 0; i < n; i++)
        h[i] = fill;
    fx_write(b, h, n);
    free(h);
    return b;
}

void fx_release(clopt_mpi_optimizer *sh, clopt_optimizer *ref, cl_mem p, cl_mem g, cl_mem rp,
                cl_mem rg)
{
    clopt_mpi_optimizer_destroy(sh);
    clopt_optimizer_destroy(ref);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    clReleaseMemObject(rp);
    clReleaseMemObject(rg);
}

void fx_write(cl_mem b, const float *host, size_t n)
{
    const cl_int e = clEnqueueWriteBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, 0,
                                          n * sizeof(float), host, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
}

void fx_read(cl_mem b, float *host, size_t n)
{
    const cl_int e = clEnqueueReadBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, 0,
                                         n * sizeof(float), host, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueReadBuffer: %d", (int)e);
}

void fx_scatter(const fx_layout *L, int grad, cl_mem b, const float *flat)
{
    size_t at = 0;
    for (size_t i = 0; i < L->nt; i++) {
        const size_t off = grad ? L->goff[i] : L->poff[i];
        const cl_int e =
            clEnqueueWriteBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, off * sizeof(float),
                                 L->n[i] * sizeof(float), flat + at, 0, NULL, NULL);
        CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
        at += L->n[i];
    }
}

float fx_val(unsigned seed, size_t i)
{
    uint64_t x = (uint64_t)seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull + 1;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return (float)((double)(x >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

clopt_optimizer *fx_reference(clopt_rule rule, const clopt_hparams *hp, const fx_layout *L,
                              cl_mem p, cl_mem g)
{
    return fx_reference_typed(rule, hp, L, p, g, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32);
}

clopt_optimizer *fx_reference_typed(clopt_rule rule, const clopt_hparams *hp, const fx_layout *L,
                                    cl_mem p, cl_mem g, clopt_dtype pdt, clopt_dtype gdt)
{
    clopt_optimizer *o = NULL;
    CHECK_OK(clopt_optimizer_create(fx_ctx, rule, hp, &o));
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group rg;
    fx_range_group(L, p, g, d, &rg);
    for (size_t i = 0; i < L->nt; i++) {
        d[i].param_dtype = pdt;
        d[i].grad_dtype = gdt;
    }
    const clopt_status s = clopt_optimizer_add_range_group(o, hp, &rg, NULL, NULL);
    CHECK(s == CLOPT_SUCCESS, "reference range group: %s", clopt_ctx_last_error(fx_ctx));
    return o;
}

/* State k of tensor `param` as raw bytes (float32, the 16-bit words of bf16 state and
   remainders, the codes of 8-bit state). */
static unsigned char *read_raw(clopt_optimizer *o, size_t param, size_t k, size_t len,
                               size_t *esize)
{
    float *f = malloc(len * sizeof *f);
    CHECK(f != NULL, "malloc");
    clopt_status s = clopt_optimizer_read_state(o, param, k, f, len);
    *esize = 4;
    if (s == CLOPT_ERR_UNSUPPORTED) { /* 16-bit words or 8-bit codes */
        clopt_tensor t;
        CHECK_OK(clopt_optimizer_state(o, param, k, &t));
        clopt_state_entry en;
        *esize = 0;
        for (size_t i = 0; i < clopt_optimizer_state_entry_count(o); i++)
            if (clopt_optimizer_state_entry(o, i, &en) == CLOPT_SUCCESS && en.param == param &&
                en.index == k)
                *esize = clopt_dtype_size(en.dtype);
        CHECK(*esize == 1 || *esize == 2, "state %zu of tensor %zu: no 8/16-bit entry", k, param);
        const cl_int e = clEnqueueReadBuffer(clopt_ctx_cl_queue(fx_ctx), t.buffer, CL_TRUE,
                                             t.offset * *esize, len * *esize, f, 0, NULL,
                                             NULL);
        CHECK(e == CL_SUCCESS, "clEnqueueReadBuffer: %d", (int)e);
        s = CLOPT_SUCCESS;
    }
    CHECK_OK(s);
    return (unsigned char *)f;
}

/* Every state of every piece of the shard equals the same slice of the unsharded state. */
void fx_check_states(const char *what, clopt_mpi_optimizer *sh, clopt_optimizer *ref,
                         const fx_layout *L)
{
    size_t first, count;
    CHECK_OK(clopt_mpi_optimizer_shard(sh, &first, &count, NULL));
    clopt_optimizer *loc = clopt_mpi_optimizer_local(sh);
    size_t flat = 0, piece = 0;
    for (size_t i = 0; i < L->nt; i++) {
        const size_t lo = flat > first ? flat : first;
        const size_t hi = flat + L->n[i] < first + count ? flat + L->n[i] : first + count;
        if (lo < hi) {
            const size_t ns = clopt_optimizer_state_count(ref, i);
            CHECK(clopt_optimizer_state_count(loc, piece) == ns, "%s: state count", what);
            for (size_t k = 0; k < ns; k++) {
                size_t rlen = 0, llen = 0;
                const char *rname = NULL, *lname = NULL;
                CHECK_OK(clopt_optimizer_state_info(ref, i, k, &rname, &rlen));
                CHECK_OK(clopt_optimizer_state_info(loc, piece, k, &lname, &llen));
                const int whole = hi - lo == L->n[i]; /* Adafactor: factored lengths */
                /* an 8-bit state's absmax: one float per block of 256 from the tensor's start
                   (a piece starts on a block) */
                const size_t len = strstr(rname, ".absmax") ? 256 : 1;
                CHECK(strcmp(rname, lname) == 0 &&
                          (whole ? llen == rlen
                                 : llen == (hi - lo + len - 1) / len &&
                                       rlen == (L->n[i] + len - 1) / len &&
                                       (lo - flat) % len == 0),
                      "%s: state %zu layout", what, k);
                size_t es = 0, es2 = 0;
                unsigned char *r = read_raw(ref, i, k, rlen, &es);
                unsigned char *l = read_raw(loc, piece, k, llen, &es2);
                CHECK(es == es2, "%s: state %zu element sizes", what, k);
                CHECK(memcmp(r + (lo - flat) / len * es, l, llen * es) == 0,
                      "%s: state %s of tensor %zu differs from the unsharded one", what, rname, i);
                free(r);
                free(l);
            }
            piece++;
        }
        flat += L->n[i];
    }
    CHECK(clopt_optimizer_param_count(loc) == piece, "%s: %zu pieces", what, piece);
}

/* Adafactor: every piece of the shard is a whole tensor (cut ones replicated): its states
   equal the unsharded tensor's, byte for byte. */
void fx_check_whole_states(const char *what, clopt_mpi_optimizer *sh, clopt_optimizer *ref,
                           const fx_layout *L)
{
    size_t first, count;
    CHECK_OK(clopt_mpi_optimizer_shard(sh, &first, &count, NULL));
    clopt_optimizer *loc = clopt_mpi_optimizer_local(sh);
    size_t piece = 0;
    for (size_t i = 0, flat = 0; i < L->nt; flat += L->n[i++]) {
        if (!count || flat + L->n[i] <= first || flat >= first + count)
            continue;
        const size_t ns = clopt_optimizer_state_count(ref, i);
        CHECK(clopt_optimizer_state_count(loc, piece) == ns, "%s: state count", what);
        for (size_t k = 0; k < ns; k++) {
            size_t rl = 0, ll = 0;
            CHECK_OK(clopt_optimizer_state_info(ref, i, k, NULL, &rl));
            CHECK_OK(clopt_optimizer_state_info(loc, piece, k, NULL, &ll));
            CHECK(rl == ll, "%s: tensor %zu: state %zu length %zu, unsharded %zu", what, i, k, ll,
                  rl);
            float *r = malloc(rl * sizeof *r), *l = malloc(rl * sizeof *l);
            CHECK(r && l, "malloc");
            CHECK_OK(clopt_optimizer_read_state(ref, i, k, r, rl));
            CHECK_OK(clopt_optimizer_read_state(loc, piece, k, l, ll));
            CHECK(memcmp(r, l, rl * sizeof *r) == 0, "%s: tensor %zu: state %zu differs", what,
                  i, k);
            free(r);
            free(l);
        }
        piece++;
    }
    CHECK(clopt_optimizer_param_count(loc) == piece, "%s: %zu pieces", what, piece);
}

void fx_expect_create(const char *what, clopt_rule rule, const clopt_hparams *hp,
                      clopt_dtype pdt0, clopt_dtype pdt, clopt_dtype gdt, long long sr_stream,
                      clopt_status want, const char *text)
{
    fx_layout L;
    fx_layout_main(&L);
    cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(&L, p, g, d, &desc);
    for (size_t i = 0; i < L.nt; i++) {
        d[i].param_dtype = i ? pdt : pdt0;
        d[i].grad_dtype = gdt;
    }
    desc.sr_stream = sr_stream;
    clopt_mpi_optimizer *sh = (clopt_mpi_optimizer *)&L; /* must be reset to NULL */
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, rule, hp, MPI_COMM_WORLD, &desc, NULL,
                                                      &sh, why, sizeof why);
    CHECK(s == want, "%s: create: %s (%s), wanted %s", what, clopt_mpi_status_name(s), why,
          clopt_mpi_status_name(want));
    CHECK(sh == NULL, "%s: *out not NULL after a failure", what);
    CHECK(why[0] != '\0', "%s: no reason given", what);
    CHECK(!text || strstr(why, text), "%s: the reason: %s", what, why);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}
