/* SPDX-License-Identifier: MIT */
/* The on-disk program cache (CLOPT_CACHE_DIR) against hostile folders and files, its SHA-256,
 * and clopt_ctx_last_error being cleared by every call of the context API that succeeds.
 *
 * The test defines clCreateProgramWithBinary itself (forwarding to the real one) to count
 * what libclopt hands to the driver: a refused entry must never reach it. libclopt binds to
 * the executable's definition because the executable exports the symbols a shared library
 * it links references (and a static libclopt resolves to it directly); the counts of the
 * valid loads below check that the interposition is in effect. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clopt.h"

/* The library's SHA-256 is internal (not exported): compiled into the test as well. */
#include "../host/sha256.c"

/* ---- counting clCreateProgramWithBinary ------------------------------------------------- */

typedef cl_program(CL_API_CALL *create_binary_fn)(cl_context, cl_uint, const cl_device_id *,
                                                  const size_t *, const unsigned char **,
                                                  cl_int *, cl_int *);
static size_t binaries_handed; /* calls that reached the driver */

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithBinary(
    cl_context context, cl_uint num_devices, const cl_device_id *device_list,
    const size_t *lengths, const unsigned char **binaries, cl_int *binary_status,
    cl_int *errcode_ret)
{
    static create_binary_fn real;
    if (!real) {
        void *p = dlsym(RTLD_NEXT, "clCreateProgramWithBinary");
        if (!p) {
            void *icd = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
            p = icd ? dlsym(icd, "clCreateProgramWithBinary") : NULL;
        }
        if (!p) {
            if (errcode_ret)
                *errcode_ret = CL_INVALID_PLATFORM;
            return NULL;
        }
        memcpy(&real, &p, sizeof real); /* object to function pointer without a cast */
    }
    binaries_handed++;
    return real(context, num_devices, device_list, lengths, binaries, binary_status,
                errcode_ret);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* The names in dir ending in suffix ("": every name but . and ..), as a NULL-terminated
   list (free with free_names). */
static char **list_names(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char **names = calloc(64, sizeof *names);
    assert_non_null(names);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (l > s && strcmp(e->d_name + l - s, suffix) == 0 && n < 63) {
            names[n] = strdup(e->d_name);
            assert_non_null(names[n]);
            n++;
        }
    }
    closedir(d);
    return names;
}

static size_t count_names(char **names)
{
    size_t n = 0;
    while (names[n])
        n++;
    return n;
}

static void free_names(char **names)
{
    for (size_t i = 0; names[i]; i++)
        free(names[i]);
    free(names);
}

static size_t count_suffix(const char *dir, const char *suffix)
{
    char **names = list_names(dir, suffix);
    size_t n = count_names(names);
    free_names(names);
    return n;
}

/* Removes dir and everything in it (one level of subfolders is enough here). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = path_join(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* One context with CLOPT_CACHE_DIR=dir that fetches sgd_step; returns how many programs it
   compiled and how many of those came from disk, and how many binaries reached the driver. */
typedef struct run_result {
    size_t compiled, from_disk, handed;
} run_result;

static run_result run_once(const char *dir)
{
    setenv("CLOPT_CACHE_DIR", dir, 1);
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    size_t before = binaries_handed;
    cl_kernel k = NULL;
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    assert_non_null(k);
    cl_uint nargs = 0;
    assert_int_equal(clGetKernelInfo(k, CL_KERNEL_NUM_ARGS, sizeof nargs, &nargs, NULL),
                     CL_SUCCESS);
    assert_true(nargs > 0);
    assert_string_equal(clopt_ctx_last_error(ctx), ""); /* cache trouble is silent */
    run_result r = {0, 0, binaries_handed - before};
    clopt_ctx_program_stats(ctx, &r.compiled, &r.from_disk);
    clopt_ctx_destroy(ctx);
    unsetenv("CLOPT_CACHE_DIR");
    return r;
}

/* A run that must compile from source (nothing usable on disk, nothing handed over). */
static void expect_compiled(const char *dir)
{
    run_result r = run_once(dir);
    assert_int_equal(r.compiled, 1);
    assert_int_equal(r.from_disk, 0);
    assert_int_equal(r.handed, 0);
}

/* A run that must load the program from disk. */
static void expect_from_disk(const char *dir)
{
    run_result r = run_once(dir);
    assert_int_equal(r.compiled, 1);
    assert_int_equal(r.from_disk, 1);
    assert_int_equal(r.handed, 1);
}

static char *make_temp_dir(void)
{
    char *dir = strdup("/tmp/clopt-test-cache-XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

/* A cache folder holding one valid entry; *entry receives its name. */
static char *populated_cache(char **entry)
{
    char *dir = make_temp_dir();
    expect_compiled(dir);
    char **names = list_names(dir, ".bin");
    assert_int_equal(count_names(names), 1);
    *entry = strdup(names[0]);
    assert_non_null(*entry);
    free_names(names);
    assert_int_equal(count_suffix(dir, ".tmp"), 0);
    expect_from_disk(dir);
    return dir;
}

/* ---- SHA-256 ------------------------------------------------------------------------------- */

static void hex(const unsigned char d[CLOPT_SHA256_SIZE], char out[65])
{
    for (int i = 0; i < CLOPT_SHA256_SIZE; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* FIPS 180-4's examples (and NIST's one-million-'a' message), one-shot and fed in pieces of
   every size from 1 to 130 bytes, so that every block boundary and padding case is met. */
static void test_sha256_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        const char *digest;
    } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmno"
         "pqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    unsigned char d[CLOPT_SHA256_SIZE];
    char h[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = strlen(v[i].msg);
        clopt_sha256(v[i].msg, n, d);
        hex(d, h);
        assert_string_equal(h, v[i].digest);
        for (size_t piece = 1; piece <= 130; piece++) {
            clopt_sha256_ctx s;
            clopt_sha256_init(&s);
            for (size_t at = 0; at < n; at += piece)
                clopt_sha256_update(&s, v[i].msg + at, n - at < piece ? n - at : piece);
            clopt_sha256_final(&s, d);
            hex(d, h);
            assert_string_equal(h, v[i].digest);
        }
    }
    /* one million 'a', in pieces of 1000 */
    char a[1000];
    memset(a, 'a', sizeof a);
    clopt_sha256_ctx s;
    clopt_sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        clopt_sha256_update(&s, a, sizeof a);
    clopt_sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* messages of 55, 56, 63, 64 and 65 bytes (padding into one or two blocks), against
       digests from coreutils' sha256sum */
    static const struct {
        size_t n;
        const char *digest;
    } lens[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
    };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        clopt_sha256(a, lens[i].n, d);
        hex(d, h);
        assert_string_equal(h, lens[i].digest);
    }
}

/* ---- the cache folder ---------------------------------------------------------------------- */

/* A CLOPT_CACHE_DIR that does not exist is created (with its missing parents), private to
   the user (0700 whatever the umask), and used. */
static void test_missing_folder_created(void **state)
{
    (void)state;
    char *base = make_temp_dir();
    char *dir = path_join(base, "a/b");
    mode_t old = umask(0);
    expect_compiled(dir);
    umask(old);
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(count_suffix(dir, ".bin"), 1);
    expect_from_disk(dir);
    remove_tree(base);
    free(dir);
    free(base);
}

/* A relative CLOPT_CACHE_DIR is the folder of the working directory when the context is
   created: an engine that changes directory before its first step still uses it (the folder
   was resolved at each lazy build, under whatever directory was current then). */
static void test_relative_folder_at_creation(void **state)
{
    (void)state;
    char old[4096];
    assert_non_null(getcwd(old, sizeof old));
    char *base = make_temp_dir(), *other = make_temp_dir();
    assert_int_equal(chdir(base), 0);
    setenv("CLOPT_CACHE_DIR", "rel", 1);
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    unsetenv("CLOPT_CACHE_DIR");
    assert_int_equal(chdir(other), 0);
    cl_kernel k = NULL;
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    clopt_ctx_destroy(ctx);
    assert_int_equal(chdir(old), 0);
    char *want = path_join(base, "rel"), *wrong = path_join(other, "rel");
    assert_int_equal(count_suffix(want, ".bin"), 1);
    struct stat st;
    assert_int_equal(lstat(wrong, &st), -1);
    remove_tree(base), remove_tree(other);
    free(want), free(wrong), free(base), free(other);
}

/* A folder writable by group or others, or owned by someone else, is not used: nothing is
   read from it or written to it, and the context compiles as if no cache were set. */
static void test_insecure_folder_skipped(void **state)
{
    (void)state;
    char *entry = NULL;
    char *dir = populated_cache(&entry);
    static const mode_t bad[] = {0777, 0770, 0720, 0702, 01777};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(dir, bad[i]), 0);
        expect_compiled(dir);
        assert_int_equal(count_suffix(dir, ".bin"), 1);
        assert_int_equal(count_suffix(dir, ".tmp"), 0);
    }
    /* readable by others is fine, writable is what matters */
    assert_int_equal(chmod(dir, 0755), 0);
    expect_from_disk(dir);
    /* an empty insecure folder stays empty */
    char *dir2 = make_temp_dir();
    assert_int_equal(chmod(dir2, 0777), 0);
    expect_compiled(dir2);
    assert_int_equal(count_suffix(dir2, ""), 0);
    if (geteuid() == 0) {
        /* a folder of another user (root can make one), private otherwise */
        assert_int_equal(chmod(dir2, 0700), 0);
        assert_int_equal(chown(dir2, 65534, 65534), 0);
        expect_compiled(dir2);
        assert_int_equal(count_suffix(dir2, ""), 0);
        assert_int_equal(chown(dir, 65534, 65534), 0);
        expect_compiled(dir);
        assert_int_equal(chown(dir, 0, 0), 0);
        expect_from_disk(dir);
        /* an entry of another user in the user's folder is not read */
        char *p = path_join(dir, entry);
        assert_int_equal(chown(p, 65534, 65534), 0);
        expect_compiled(dir);
        free(p);
    } else {
        print_message("not root: the folder and entry owned by another user are not tried\n");
    }
    remove_tree(dir2);
    remove_tree(dir);
    free(dir2);
    free(dir);
    free(entry);
}

/* ---- entries ------------------------------------------------------------------------------- */

static sigjmp_buf hang_jmp;
static void on_alarm(int sig)
{
    (void)sig;
    siglongjmp(hang_jmp, 1);
}

/* A FIFO, a folder or a symlink at an entry path is not opened for reading as an entry:
   the context compiles instead of hanging (a FIFO blocks an open without O_NONBLOCK until
   someone writes), and the entry is written anew. */
static void test_special_files_at_entry(void **state)
{
    (void)state;
    char *entry = NULL;
    char *dir = populated_cache(&entry);
    char *p = path_join(dir, entry);
    char *aside = path_join(dir, "valid-entry");
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    for (int kind = 0; kind < 3; kind++) {
        /* the valid entry moves aside; a FIFO, an empty folder or a symlink to it takes its
           place */
        assert_int_equal(rename(p, aside), 0);
        if (kind == 0)
            assert_int_equal(mkfifo(p, 0600), 0);
        else if (kind == 1)
            assert_int_equal(mkdir(p, 0700), 0);
        else
            assert_int_equal(symlink("valid-entry", p), 0);
        if (sigsetjmp(hang_jmp, 1) == 0) {
            alarm(60);
            expect_compiled(dir);
            alarm(0);
        } else {
            fail_msg("loading the cache hung on a %s at the entry path",
                     kind == 0 ? "FIFO" : kind == 1 ? "folder" : "symlink");
        }
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        if (kind == 1) {
            /* rename cannot replace a folder: it stays, the cache goes on without it */
            assert_true(S_ISDIR(st.st_mode));
            assert_int_equal(rmdir(p), 0);
        } else {
            assert_true(S_ISREG(st.st_mode)); /* replaced by a fresh entry */
            assert_int_equal(unlink(p), 0);
        }
        assert_int_equal(rename(aside, p), 0);
        expect_from_disk(dir);
    }
    assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
    assert_int_equal(count_suffix(dir, ".tmp"), 0);
    remove_tree(dir);
    free(aside);
    free(p);
    free(dir);
    free(entry);
}

/* Symlinks planted at the temporary names the writer used to use (<entry>.<pid>.<context
   address & 0xffffff>.tmp) and at a few other guesses never make clopt write through them:
   the victim is unchanged, the links stay links, and the entry is a new regular file. */
static void test_planted_symlinks(void **state)
{
    (void)state;
    char *entry = NULL;
    char *dir = populated_cache(&entry);
    char *p = path_join(dir, entry);
    char *vdir = make_temp_dir();
    char *victim = path_join(vdir, "victim");
    static const char precious[] = "precious data that clopt must never overwrite\n";
    write_all(victim, precious, sizeof precious - 1);
    assert_int_equal(unlink(p), 0);

    setenv("CLOPT_CACHE_DIR", dir, 1);
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    char guesses[8][64];
    size_t nguess = 0;
    snprintf(guesses[nguess++], sizeof guesses[0], ".%ld.%llx.tmp", (long)getpid(),
             (unsigned long long)(uintptr_t)ctx & 0xffffffULL);
    snprintf(guesses[nguess++], sizeof guesses[0], ".%ld.tmp", (long)getpid());
    snprintf(guesses[nguess++], sizeof guesses[0], ".tmp");
    snprintf(guesses[nguess++], sizeof guesses[0], ".%ld.0.tmp", (long)getpid());
    snprintf(guesses[nguess++], sizeof guesses[0], "~");
    char *links[8];
    for (size_t i = 0; i < nguess; i++) {
        size_t n = strlen(p) + strlen(guesses[i]) + 1;
        links[i] = malloc(n);
        assert_non_null(links[i]);
        snprintf(links[i], n, "%s%s", p, guesses[i]);
        assert_int_equal(symlink(victim, links[i]), 0);
    }
    size_t before = binaries_handed;
    cl_kernel k = NULL;
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    size_t compiled = 0, from_disk = 0;
    clopt_ctx_program_stats(ctx, &compiled, &from_disk);
    assert_int_equal(compiled, 1);
    assert_int_equal(from_disk, 0);
    assert_int_equal(binaries_handed, before);
    clopt_ctx_destroy(ctx);
    unsetenv("CLOPT_CACHE_DIR");

    size_t len = 0;
    unsigned char *now = read_all(victim, &len);
    assert_int_equal(len, sizeof precious - 1);
    assert_memory_equal(now, precious, len);
    free(now);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    for (size_t i = 0; i < nguess; i++) {
        assert_int_equal(lstat(links[i], &st), 0);
        assert_true(S_ISLNK(st.st_mode));
        unlink(links[i]);
        free(links[i]);
    }
    expect_from_disk(dir);
    remove_tree(vdir);
    remove_tree(dir);
    free(victim);
    free(vdir);
    free(p);
    free(dir);
    free(entry);
}

/* The checksum of the first entry format (FNV-1a 64 over key and binary), which anyone can
   recompute after changing an entry. */
static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* If buf is an entry of the first format ("CLOPTPB1", version 1, key length, key, binary
   size, checksum, binary), stores the checksum its key and binary now have. */
static void refresh_v1_checksum(unsigned char *buf, size_t len)
{
    uint32_t version = 0, keylen = 0;
    uint64_t binlen = 0;
    if (len < 16 || memcmp(buf, "CLOPTPB1", 8) != 0)
        return;
    memcpy(&version, buf + 8, 4);
    memcpy(&keylen, buf + 12, 4);
    if (version != 1 || 16 + (size_t)keylen + 16 > len)
        return;
    memcpy(&binlen, buf + 16 + keylen, 8);
    size_t at = 16 + (size_t)keylen + 16;
    if (binlen != len - at)
        return;
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, buf + 16, keylen);
    h = fnv1a(h, buf + at, (size_t)binlen);
    memcpy(buf + 16 + keylen + 8, &h, 8);
}

/* Entries changed in any byte (with the old checksum recomputed where the old format
   applies), cut short, extended or of another format version are refused before the
   driver sees them; the context compiles and writes a good entry in their place. */
static void test_corrupt_entries_rebuilt(void **state)
{
    (void)state;
    char *entry = NULL;
    char *dir = populated_cache(&entry);
    char *p = path_join(dir, entry);
    size_t len = 0;
    unsigned char *good = read_all(p, &len);
    assert_true(len > 64);
    enum { FLIP_HEAD, FLIP_VERSION, FLIP_KEY, FLIP_MIDDLE, FLIP_LAST, CUT, EXTEND, EMPTY, NKIND };
    for (int kind = 0; kind < NKIND; kind++) {
        unsigned char *bad = malloc(len + 1);
        assert_non_null(bad);
        memcpy(bad, good, len);
        size_t blen = len;
        switch (kind) {
        case FLIP_HEAD:
            bad[0] ^= 0x20;
            break;
        case FLIP_VERSION:
            bad[8] ^= 0x01;
            break;
        case FLIP_KEY:
            bad[20] ^= 0x01;
            break;
        case FLIP_MIDDLE:
            bad[len / 2] ^= 0x55;
            break;
        case FLIP_LAST:
            bad[len - 1] ^= 0x01;
            break;
        case CUT:
            blen = len - 1;
            break;
        case EXTEND:
            bad[len] = 0;
            blen = len + 1;
            break;
        case EMPTY:
            blen = 0;
            break;
        }
        refresh_v1_checksum(bad, blen);
        write_all(p, bad, blen);
        free(bad);
        expect_compiled(dir);
        size_t nlen = 0;
        unsigned char *now = read_all(p, &nlen);
        assert_true(nlen > 64); /* a good entry again */
        free(now);
        expect_from_disk(dir);
    }
    free(good);
    remove_tree(dir);
    free(p);
    free(dir);
    free(entry);
}

/* ---- clopt_ctx_last_error -------------------------------------------------------------- */

/* Every call of the context API that returns a status clears the detail of an earlier
   failure when it succeeds. */
static void test_last_error_cleared(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    assert_string_equal(clopt_ctx_last_error(ctx), "");
    clopt_tuning t, bad;
    cl_kernel k = NULL;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);

    /* one failure, then each successful call in turn */
    for (int call = 0; call < 4; call++) {
        assert_int_equal(clopt_ctx_get_tuning(ctx, &bad), CLOPT_SUCCESS);
        bad.vector_width = 3;
        assert_int_equal(clopt_ctx_set_tuning(ctx, &bad), CLOPT_ERR_INVALID_ARGUMENT);
        assert_true(strlen(clopt_ctx_last_error(ctx)) > 0);
        switch (call) {
        case 0:
            assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
            break;
        case 1:
            assert_int_equal(clopt_ctx_get_rule_tuning(ctx, CLOPT_ADAMW, &hp, &t),
                             CLOPT_SUCCESS);
            break;
        case 2:
            assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k),
                             CLOPT_SUCCESS);
            break;
        case 3:
            assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
            assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
            break;
        }
        assert_string_equal(clopt_ctx_last_error(ctx), "");
    }
    /* a failure of clopt_ctx_kernel, then the same kernel fetched again */
    assert_int_equal(clopt_ctx_kernel(ctx, "no_such_family", "", "x", &k),
                     CLOPT_ERR_UNSUPPORTED);
    assert_true(strlen(clopt_ctx_last_error(ctx)) > 0);
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    assert_string_equal(clopt_ctx_last_error(ctx), "");
    /* a failing call reports its own failure, not an earlier one */
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "no_such_kernel", &k),
                     CLOPT_ERR_OPENCL_BASE + CL_INVALID_KERNEL_NAME);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "clCreateKernel"));
    memset(&t, 0xA5, sizeof t); /* a failed call leaves *out as it was */
    clopt_tuning t0 = t;
    assert_int_equal(clopt_ctx_get_rule_tuning(ctx, (clopt_rule)-1, &hp, &t),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_memory_equal(&t, &t0, sizeof t);
    assert_null(strstr(clopt_ctx_last_error(ctx), "clCreateKernel"));
    assert_true(strlen(clopt_ctx_last_error(ctx)) > 0);
    clopt_ctx_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_last_error_cleared),
        cmocka_unit_test(test_missing_folder_created),
        cmocka_unit_test(test_relative_folder_at_creation),
        cmocka_unit_test(test_insecure_folder_skipped),
        cmocka_unit_test(test_planted_symlinks),
        cmocka_unit_test(test_corrupt_entries_rebuilt),
        cmocka_unit_test(test_special_files_at_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
