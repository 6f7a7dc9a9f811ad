/* SPDX-License-Identifier: MIT */
/* The OpenCL interposer of the tests (see clshim.h): its state, the gate and the public
 * calls; the wrappers are in clshim_wrap.c, the scheme in clshim_internal.h. */
#define _GNU_SOURCE
#include "clshim_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int fallible;
} fn_info[NFN] = {
#define X_INFO(name, fallible) {#name, fallible},
    CLSHIM_FUNCS(X_INFO)
#undef X_INFO
};

/* ---- state ---------------------------------------------------------------------------- */

static atomic_int enabled;
static atomic_uint enable_gen;           /* bumped by clshim_enable(1) */
static _Thread_local unsigned my_gen;    /* == enable_gen on the enabled thread */
_Thread_local int clshim_depth_;         /* > 0 inside a wrapper */

static atomic_uint_fast64_t fn_count[NFN];
static atomic_uint_fast64_t n_calls;
atomic_uint_fast64_t clshim_n_blocking_, clshim_n_builds_, clshim_max_fill_;
atomic_uint_fast64_t clshim_obj_created_[CLSHIM_NOBJ], clshim_obj_released_[CLSHIM_NOBJ];

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t fault_left; /* 0: disarmed */
static cl_int fault_err;
static int fault_fired;
static const char *fault_site = "";
static size_t wg_cap; /* clshim_cap_work_group */
static _Atomic uint64_t null_local; /* launches without a local size (clshim_null_local) */

/* cl_mem handles seen created by clCreateSubBuffer (and not reused by clCreateBuffer since) */
static cl_mem *subs;
static size_t nsubs, cap_subs;

static _Atomic(void *) real_fn[NFN];

/* The function of every fallible call since the last reset (clshim_call_name), by id. */
static unsigned char *call_log;
static uint64_t call_log_len, call_log_cap;

/* ---- resolution ------------------------------------------------------------------------ */

void *clshim_resolve_(int id)
{
    void *p = atomic_load(&real_fn[id]);
    if (p)
        return p;
    p = dlsym(RTLD_NEXT, fn_info[id].name);
    if (!p) {
        /* the executable does not link the ICD loader itself (static libclopt with
           --as-needed): ask it directly */
        static void *icd;
        if (!icd)
            icd = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
        if (icd)
            p = dlsym(icd, fn_info[id].name);
    }
    if (!p) {
        fprintf(stderr, "clshim: cannot find the real %s\n", fn_info[id].name);
        abort();
    }
    atomic_store(&real_fn[id], p);
    return p;
}

__attribute__((constructor)) static void resolve_all(void)
{
    for (int i = 0; i < NFN; i++)
        clshim_resolve_(i);
}


/* ---- the gate -------------------------------------------------------------------------- */


gate clshim_enter_(int id)
{
    gate g = {0, 0, CL_SUCCESS};
    if (clshim_depth_ > 0 || !atomic_load(&enabled))
        return g;
    g.count = 1;
    atomic_fetch_add(&fn_count[id], 1);
    if (!fn_info[id].fallible || my_gen != atomic_load(&enable_gen))
        return g;
    atomic_fetch_add(&n_calls, 1);
    pthread_mutex_lock(&lock);
    if (call_log_len == call_log_cap) {
        uint64_t cap = call_log_cap ? 2 * call_log_cap : 4096;
        unsigned char *p = realloc(call_log, cap);
        if (p)
            call_log = p, call_log_cap = cap;
    }
    if (call_log_len < call_log_cap)
        call_log[call_log_len++] = (unsigned char)id;
    if (fault_left > 0 && --fault_left == 0) {
        g.fail = 1;
        g.err = fault_err;
        fault_fired = 1;
        fault_site = fn_info[id].name;
        if (getenv("CLSHIM_TRACE"))
            fprintf(stderr, "clshim: fault %d injected into %s\n", (int)fault_err, fault_site);
    }
    pthread_mutex_unlock(&lock);
    return g;
}


void clshim_bump_(atomic_uint_fast64_t *c, const gate *g)
{
    if (g->count)
        atomic_fetch_add(c, 1);
}

void clshim_note_event_(const gate *g, cl_int r, const cl_event *event)
{
    if (g->count && r == CL_SUCCESS && event)
        atomic_fetch_add(&clshim_obj_created_[CLSHIM_EVENT], 1);
}

static int is_sub(cl_mem m)
{
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i] == m)
            return 1;
    return 0;
}

void clshim_forget_sub_(cl_mem m)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i] == m)
            subs[i] = subs[--nsubs];
    pthread_mutex_unlock(&lock);
}

void clshim_remember_sub_(cl_mem m)
{
    pthread_mutex_lock(&lock);
    if (!is_sub(m)) {
        if (nsubs == cap_subs) {
            size_t cap = cap_subs ? 2 * cap_subs : 64;
            cl_mem *p = realloc(subs, cap * sizeof *p);
            if (p)
                subs = p, cap_subs = cap;
        }
        if (nsubs < cap_subs)
            subs[nsubs++] = m;
    }
    pthread_mutex_unlock(&lock);
}

clshim_obj clshim_mem_kind_(cl_mem m)
{
    pthread_mutex_lock(&lock);
    int s = is_sub(m);
    pthread_mutex_unlock(&lock);
    return s ? CLSHIM_SUBBUFFER : CLSHIM_BUFFER;
}

/* ---- public ---------------------------------------------------------------------------- */

void clshim_enable(int on)
{
    if (on)
        my_gen = atomic_fetch_add(&enable_gen, 1) + 1;
    atomic_store(&enabled, on ? 1 : 0);
}

int clshim_enabled(void) { return atomic_load(&enabled); }

void clshim_reset(void)
{
    for (int i = 0; i < NFN; i++)
        atomic_store(&fn_count[i], 0);
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        atomic_store(&clshim_obj_created_[k], 0), atomic_store(&clshim_obj_released_[k], 0);
    atomic_store(&n_calls, 0);
    atomic_store(&clshim_n_blocking_, 0);
    atomic_store(&clshim_n_builds_, 0);
    atomic_store(&clshim_max_fill_, 0);
    atomic_store(&null_local, 0);
    clshim_fail_nth(0, CL_SUCCESS);
    pthread_mutex_lock(&lock);
    call_log_len = 0;
    pthread_mutex_unlock(&lock);
}

const char *clshim_call_name(uint64_t i)
{
    pthread_mutex_lock(&lock);
    const char *name = i >= 1 && i <= call_log_len ? fn_info[call_log[i - 1]].name : "";
    pthread_mutex_unlock(&lock);
    return name;
}

int clshim_wraps(const char *name)
{
    for (int i = 0; i < NFN; i++)
        if (!strcmp(fn_info[i].name, name))
            return 1;
    return 0;
}

uint64_t clshim_count(const char *name)
{
    for (int i = 0; i < NFN; i++)
        if (!strcmp(fn_info[i].name, name))
            return atomic_load(&fn_count[i]);
    return 0;
}

uint64_t clshim_blocking(void) { return atomic_load(&clshim_n_blocking_); }
uint64_t clshim_builds(void) { return atomic_load(&clshim_n_builds_); }
uint64_t clshim_calls(void) { return atomic_load(&n_calls); }
uint64_t clshim_max_fill(void) { return atomic_load(&clshim_max_fill_); }

void clshim_fail_nth(uint64_t n, cl_int err)
{
    pthread_mutex_lock(&lock);
    fault_left = n;
    fault_err = err;
    fault_fired = 0;
    fault_site = "";
    pthread_mutex_unlock(&lock);
}

void clshim_cap_work_group(size_t cap)
{
    pthread_mutex_lock(&lock);
    wg_cap = cap;
    pthread_mutex_unlock(&lock);
}

size_t clshim_wg_cap_(void)
{
    pthread_mutex_lock(&lock);
    const size_t cap = wg_cap;
    pthread_mutex_unlock(&lock);
    return atomic_load(&enabled) ? cap : 0;
}

void clshim_note_local_(const size_t *local)
{
    if (!local && atomic_load(&enabled))
        atomic_fetch_add(&null_local, 1);
}

uint64_t clshim_null_local(void) { return atomic_load(&null_local); }

int clshim_fault_fired(void)
{
    pthread_mutex_lock(&lock);
    int f = fault_fired;
    pthread_mutex_unlock(&lock);
    return f;
}

const char *clshim_fault_site(void)
{
    pthread_mutex_lock(&lock);
    const char *s = fault_site;
    pthread_mutex_unlock(&lock);
    return s;
}

uint64_t clshim_created(clshim_obj kind)
{
    return kind < CLSHIM_NOBJ ? atomic_load(&clshim_obj_created_[kind]) : 0;
}

uint64_t clshim_released(clshim_obj kind)
{
    return kind < CLSHIM_NOBJ ? atomic_load(&clshim_obj_released_[kind]) : 0;
}

const char *clshim_obj_name(clshim_obj kind)
{
    static const char *names[CLSHIM_NOBJ] = {"buffer", "sub-buffer", "event", "kernel",
                                             "program", "queue",  "context", "device"};
    return kind < CLSHIM_NOBJ ? names[kind] : "?";
}

void clshim_dump(FILE *out)
{
    fprintf(out, "clshim: %llu fallible calls, %llu blocking, %llu builds\n",
            (unsigned long long)clshim_calls(), (unsigned long long)clshim_blocking(),
            (unsigned long long)clshim_builds());
    for (int i = 0; i < NFN; i++)
        if (atomic_load(&fn_count[i]))
            fprintf(out, "  %-30s %llu\n", fn_info[i].name,
                    (unsigned long long)atomic_load(&fn_count[i]));
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        if (clshim_created((clshim_obj)k) || clshim_released((clshim_obj)k))
            fprintf(out, "  %-12s created %llu released %llu\n", clshim_obj_name((clshim_obj)k),
                    (unsigned long long)clshim_created((clshim_obj)k),
                    (unsigned long long)clshim_released((clshim_obj)k));
}

