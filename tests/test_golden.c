/* SPDX-License-Identifier: MIT */
/*
 * test_golden: replays every vendored golden case (tests/data/golden) through clopt's
 * optimizer level with host/conform/golden.c, one cmocka test per case. A case whose
 * optimizer is in golden.c's mapping table must PASS; any other case must be reported
 * UNSUPPORTED (not silently pass). Further tests check that malformed cases (missing file,
 * truncated or oversized .f32, bad JSON, wrong shape, corrupted expected values, a state
 * the rule does not have) give a FAIL whose message names the file, and never crash.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "golden.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOLDEN_DIR CLOPT_TEST_DATA_DIR "/golden"
/* The small case the malformed-data tests copy and damage. */
#define BASE_CASE "sgd_momentum"

static clopt_ctx *g_ctx;

/* Optimizer ids the library implements (they must be in golden.c's table) and those it
   does not (yet). */
static const char *const k_supported[] = {
    "sgd",   "sgd_momentum", "sgd_nesterov", "adagrad", "adadelta", "rmsprop",
    "rmsprop_centered", "adam", "adam_l2", "amsgrad", "adamw", "adamax",
    "nadam", "radam", "lion", "sophia", "adamod", "diffgrad", "adafactor", "lamb",
    "lookahead_adam", "ranger", "adam_gc", "schedule_free_adamw", "schedule_free_sgd",
    "adopt", "ademamix", "cautious_adamw", "stable_adamw", "muon",
};
/* Optimizers of other libraries that clopt does not implement. */
static const char *const k_unsupported[] = {"shampoo", "adahessian", "sm3"};

/* ------------------------------------------------------------------------------------ */
/* Helpers: temporary copies of a case                                                   */
/* ------------------------------------------------------------------------------------ */

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    assert_non_null(p);
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static unsigned char *slurp(const char *path, size_t *size)
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
    buf[n] = 0;
    *size = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    unsigned char *b = slurp(from, &n);
    spit(to, b, n);
    free(b);
}

/* mkdtemp directory holding a copy of case `name`; the caller frees and removes it. */
static char *copy_case_into(const char *parent, const char *name, const char *as)
{
    char *src = join(GOLDEN_DIR, name);
    char *dst;
    if (parent == NULL) {
        const char *tmp = getenv("TMPDIR");
        char *tmpl = join(tmp && tmp[0] ? tmp : "/tmp", "clopt_golden_XXXXXX");
        dst = mkdtemp(tmpl);
        assert_non_null(dst);
    } else {
        dst = join(parent, as);
        assert_int_equal(mkdir(dst, 0700), 0);
    }
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *f = join(src, e->d_name), *t = join(dst, e->d_name);
        copy_file(f, t);
        free(f);
        free(t);
    }
    closedir(d);
    free(src);
    return dst;
}

static char *copy_case(const char *name) { return copy_case_into(NULL, name, NULL); }

/* Remove a directory tree made by these tests (files and one level of subdirectories). */
static void remove_tree(char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *p = join(dir, e->d_name);
            struct stat sb;
            if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                remove_tree(p);
            else {
                unlink(p);
                free(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static cJSON *load_meta(const char *dir)
{
    char *p = join(dir, "meta.json");
    size_t n;
    unsigned char *text = slurp(p, &n);
    cJSON *j = cJSON_Parse((const char *)text);
    assert_non_null(j);
    free(text);
    free(p);
    return j;
}

static void save_meta(const char *dir, cJSON *meta)
{
    char *p = join(dir, "meta.json");
    char *text = cJSON_Print(meta);
    assert_non_null(text);
    spit(p, text, strlen(text));
    free(text);
    free(p);
    cJSON_Delete(meta);
}

static cJSON *meta_file(cJSON *meta, const char *name)
{
    cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(meta, "files"))
    {
        cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return f;
    }
    fail_msg("meta.json has no file %s", name);
    return NULL;
}

static void set_shape(cJSON *obj, const int *dims, int nd)
{
    cJSON_ReplaceItemInObjectCaseSensitive(obj, "shape", cJSON_CreateIntArray(dims, nd));
}

static golden_result run(const char *dir)
{
    golden_result r;
    golden_run_case(g_ctx, dir, &r);
    print_message("  %-28s %-11s max_abs %.3e max_rel %.3e %s\n", r.name,
                  golden_verdict_str(r.verdict), r.max_abs_err, r.max_rel_err, r.reason);
    return r;
}

static void expect_fail_naming(const golden_result *r, const char *what)
{
    if (r->verdict != GOLDEN_FAIL)
        fail_msg("%s: expected FAIL, got %s (%s)", r->name, golden_verdict_str(r->verdict),
                 r->reason);
    if (strstr(r->reason, what) == NULL)
        fail_msg("%s: FAIL message does not name %s: %s", r->name, what, r->reason);
}

/* Overwrite float i of an .f32 file. */
static void poke_f32(const char *dir, const char *name, size_t i, float v)
{
    char *p = join(dir, name);
    size_t n;
    unsigned char *b = slurp(p, &n);
    assert_true((i + 1) * 4 <= n);
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int k = 0; k < 4; k++)
        b[i * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
    spit(p, b, n);
    free(b);
    free(p);
}

static float peek_f32(const char *dir, const char *name, size_t i)
{
    char *p = join(dir, name);
    size_t n;
    unsigned char *b = slurp(p, &n);
    assert_true((i + 1) * 4 <= n);
    uint32_t u = (uint32_t)b[i * 4] | (uint32_t)b[i * 4 + 1] << 8 |
                 (uint32_t)b[i * 4 + 2] << 16 | (uint32_t)b[i * 4 + 3] << 24;
    float v;
    memcpy(&v, &u, 4);
    free(b);
    free(p);
    return v;
}

static int steps_of(const char *dir)
{
    cJSON *m = load_meta(dir);
    int v = cJSON_GetObjectItemCaseSensitive(m, "steps")->valueint;
    cJSON_Delete(m);
    return v;
}

static int numel_of(const char *dir)
{
    cJSON *m = load_meta(dir);
    int v = 1;
    cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(m, "shape")) v *= d->valueint;
    cJSON_Delete(m);
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* One test per vendored case                                                            */
/* ------------------------------------------------------------------------------------ */

/* CLOPT_TEST_SKIP_GOLDEN: a comma-separated list of case names to skip (ci/oclgrind.sh skips
   muon: CLBlast's GEMM kernels take minutes in the simulator). */
static int skipped_case(const char *dir)
{
    const char *list = getenv("CLOPT_TEST_SKIP_GOLDEN");
    const char *slash = strrchr(dir, '/');
    const char *name = slash ? slash + 1 : dir;
    const size_t len = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static void test_case(void **state)
{
    const char *dir = *state;
    if (skipped_case(dir)) {
        print_message("skipped (CLOPT_TEST_SKIP_GOLDEN): %s\n", dir);
        skip();
    }
    golden_result r = run(dir);
    clopt_rule rule = CLOPT_RULE_COUNT;
    if (golden_optimizer_supported(r.optimizer, &rule) && rule == CLOPT_MUON && !clopt_has_muon()) {
        /* a library built without CLBlast refuses Muon: reported, not passed */
        if (r.verdict != GOLDEN_UNSUPPORTED)
            fail_msg("%s: expected UNSUPPORTED without CLBlast, got %s", r.name,
                     golden_verdict_str(r.verdict));
    } else if (golden_optimizer_supported(r.optimizer, NULL)) {
        if (r.verdict != GOLDEN_PASS)
            fail_msg("%s (%s): %s: %s", r.name, r.optimizer, golden_verdict_str(r.verdict),
                     r.reason);
        assert_true(r.files_compared >= 2);
        assert_int_equal(r.files_failed, 0);
    } else {
        /* Not implemented by clopt: must be reported, never silently passed. */
        if (r.verdict != GOLDEN_UNSUPPORTED)
            fail_msg("%s (%s): expected UNSUPPORTED, got %s (%s)", r.name, r.optimizer,
                     golden_verdict_str(r.verdict), r.reason);
        assert_true(r.reason[0] != '\0');
    }
}

/* ------------------------------------------------------------------------------------ */
/* Mapping table and listing                                                             */
/* ------------------------------------------------------------------------------------ */

static void test_mapping_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_supported / sizeof k_supported[0]; i++) {
        clopt_rule rule = CLOPT_RULE_COUNT;
        if (!golden_optimizer_supported(k_supported[i], &rule))
            fail_msg("optimizer %s missing from the golden mapping table", k_supported[i]);
        assert_true(rule < CLOPT_RULE_COUNT);
    }
    for (size_t i = 0; i < sizeof k_unsupported / sizeof k_unsupported[0]; i++)
        assert_false(golden_optimizer_supported(k_unsupported[i], NULL));
    clopt_rule rule;
    assert_true(golden_optimizer_supported("amsgrad", &rule));
    assert_int_equal(rule, CLOPT_ADAM);
    assert_true(golden_optimizer_supported("rmsprop_centered", &rule));
    assert_int_equal(rule, CLOPT_RMSPROP);
    assert_true(golden_optimizer_supported("adamw", &rule));
    assert_int_equal(rule, CLOPT_ADAMW);
    assert_true(golden_optimizer_supported("sophia", &rule));
    assert_int_equal(rule, CLOPT_SOPHIA);
    assert_true(golden_optimizer_count() >= sizeof k_supported / sizeof k_supported[0]);
    for (size_t i = 0; i < golden_optimizer_count(); i++)
        assert_true(golden_optimizer_supported(golden_optimizer_name(i), NULL));
    assert_null(golden_optimizer_name(golden_optimizer_count()));
}

static golden_verdict map(const char *opt, const char *hyper_json, clopt_rule *rule,
                          clopt_hparams *hp, char *why, size_t len)
{
    cJSON *h = hyper_json ? cJSON_Parse(hyper_json) : NULL;
    if (hyper_json != NULL)
        assert_non_null(h);
    golden_verdict v = golden_map_hyper(opt, h, rule, hp, why, len);
    cJSON_Delete(h);
    return v;
}

static void test_map_hyper(void **state)
{
    (void)state;
    clopt_rule rule;
    clopt_hparams hp;
    char why[256];
    assert_int_equal(map("sgd_nesterov",
                         "{\"lr\":0.5,\"momentum\":0.9,\"nesterov\":true,\"maximize\":false,"
                         "\"weight_decay\":0.25}",
                         &rule, &hp, why, sizeof why),
                     GOLDEN_PASS);
    assert_int_equal(rule, CLOPT_SGD);
    assert_true(hp.lr == 0.5 && hp.momentum == 0.9 && hp.nesterov == 1 &&
                hp.weight_decay == 0.25 && hp.maximize == 0);
    assert_int_equal(map("sophia", "{\"hess_interval\":7,\"bs\":100,\"rho\":0.5}", &rule, &hp,
                         why, sizeof why),
                     GOLDEN_PASS);
    assert_true(hp.hess_interval == 7 && hp.bs == 100.0 && hp.rho == 0.5);
    /* Defaults come from clopt_hparams_default. */
    clopt_hparams def;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &def), CLOPT_SUCCESS);
    assert_int_equal(map("amsgrad", "{\"amsgrad\":true}", &rule, &hp, why, sizeof why),
                     GOLDEN_PASS);
    assert_true(hp.amsgrad == 1 && hp.beta1 == def.beta1 && hp.eps == def.eps);
    assert_int_equal(map("adam", NULL, &rule, &hp, why, sizeof why), GOLDEN_PASS);
    assert_int_equal(map("nadam", "{\"variant\":\"dozat\"}", &rule, &hp, why, sizeof why),
                     GOLDEN_PASS);
    /* UNSUPPORTED: unknown optimizer, variant, key; a known key the rule ignores. */
    assert_int_equal(map("shampoo", "{}", &rule, &hp, why, sizeof why), GOLDEN_UNSUPPORTED);
    assert_non_null(strstr(why, "shampoo"));
    assert_int_equal(map("nadam", "{\"variant\":\"torch_1.13\"}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    assert_non_null(strstr(why, "torch_1.13"));
    assert_int_equal(map("adam", "{\"foreach\":false}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    assert_non_null(strstr(why, "foreach"));
    assert_int_equal(map("adam", "{\"variant\":\"x\"}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    assert_int_equal(map("adam", "{\"momentum\":0.9}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    assert_int_equal(map("adam", "{\"momentum\":0, \"centered\":false}", &rule, &hp, why,
                         sizeof why),
                     GOLDEN_PASS);
    assert_int_equal(map("adam", "{\"lr\":null}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    /* Out of clopt's valid range. */
    assert_int_equal(map("adam", "{\"beta1\":1.5}", &rule, &hp, why, sizeof why),
                     GOLDEN_UNSUPPORTED);
    /* FAIL: wrong JSON types. */
    assert_int_equal(map("adam", "{\"lr\":\"fast\"}", &rule, &hp, why, sizeof why),
                     GOLDEN_FAIL);
    assert_non_null(strstr(why, "lr"));
    assert_int_equal(map("adam", "{\"amsgrad\":\"yes\"}", &rule, &hp, why, sizeof why),
                     GOLDEN_FAIL);
    assert_int_equal(map("sophia", "{\"hess_interval\":2.5}", &rule, &hp, why, sizeof why),
                     GOLDEN_FAIL);
    assert_int_equal(map("adam", "[1,2]", &rule, &hp, why, sizeof why), GOLDEN_FAIL);
}

static void test_list_cases(void **state)
{
    (void)state;
    golden_case_list l;
    char why[GOLDEN_REASON_MAX];
    assert_int_equal(golden_list_cases(GOLDEN_DIR, &l, why, sizeof why), 0);
    assert_true(l.count >= 23);
    for (size_t i = 0; i < l.count; i++)
        assert_true(golden_is_case_dir(l.dirs[i]));
    golden_case_list_free(&l);

    /* A case directory is a list of itself. */
    char *one = join(GOLDEN_DIR, "adam");
    assert_int_equal(golden_list_cases(one, &l, why, sizeof why), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.dirs[0], one);
    golden_case_list_free(&l);
    free(one);

    /* A folder without index.json: sorted subdirectories that hold meta.json. */
    const char *tmp = getenv("TMPDIR");
    char *tmpl = join(tmp && tmp[0] ? tmp : "/tmp", "clopt_golden_XXXXXX");
    char *root = mkdtemp(tmpl);
    assert_non_null(root);
    assert_int_equal(golden_list_cases(root, &l, why, sizeof why), -1);
    assert_non_null(strstr(why, root));
    free(copy_case_into(root, "sgd", "zz_sgd"));
    free(copy_case_into(root, "adam", "aa_adam"));
    char *junk = join(root, "not_a_case");
    assert_int_equal(mkdir(junk, 0700), 0);
    free(junk);
    assert_int_equal(golden_list_cases(root, &l, why, sizeof why), 0);
    assert_int_equal(l.count, 2);
    assert_non_null(strstr(l.dirs[0], "aa_adam"));
    assert_non_null(strstr(l.dirs[1], "zz_sgd"));
    golden_case_list_free(&l);

    /* index.json wins; a bad one is an error naming it. */
    char *index = join(root, "index.json");
    const char *good = "{\"cases\": [\"zz_sgd\"]}";
    spit(index, good, strlen(good));
    assert_int_equal(golden_list_cases(root, &l, why, sizeof why), 0);
    assert_int_equal(l.count, 1);
    assert_non_null(strstr(l.dirs[0], "zz_sgd"));
    golden_case_list_free(&l);
    const char *bad = "{\"cases\": [\"zz_sgd\",";
    spit(index, bad, strlen(bad));
    assert_int_equal(golden_list_cases(root, &l, why, sizeof why), -1);
    assert_non_null(strstr(why, "index.json"));
    assert_int_equal(l.count, 0);
    free(index);

    /* A path that does not exist. */
    char *none = join(root, "missing");
    assert_int_equal(golden_list_cases(none, &l, why, sizeof why), -1);
    assert_non_null(strstr(why, "missing"));
    free(none);
    remove_tree(root);
}

/* ------------------------------------------------------------------------------------ */
/* Malformed cases                                                                       */
/* ------------------------------------------------------------------------------------ */

static void test_copy_passes(void **state)
{
    (void)state;
    char *dir = copy_case(BASE_CASE);
    golden_result r = run(dir);
    if (r.verdict != GOLDEN_PASS)
        fail_msg("pristine copy of %s: %s", BASE_CASE, r.reason);
    remove_tree(dir);
}

static void test_missing_files(void **state)
{
    (void)state;
    static const char *const files[] = {"param_T.f32", "param_1.f32", "grads.f32",
                                        "param0.f32", "state_momentum_buffer.f32",
                                        "meta.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *dir = copy_case(BASE_CASE);
        char *p = join(dir, files[i]);
        assert_int_equal(unlink(p), 0);
        free(p);
        golden_result r = run(dir);
        expect_fail_naming(&r, files[i]);
        remove_tree(dir);
    }
}

static void test_truncated_and_oversized(void **state)
{
    (void)state;
    static const char *const files[] = {"grads.f32", "param0.f32", "param_T.f32",
                                        "state_momentum_buffer.f32"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        for (int longer = 0; longer < 2; longer++) {
            char *dir = copy_case(BASE_CASE);
            char *p = join(dir, files[i]);
            size_t n;
            unsigned char *b = slurp(p, &n);
            if (longer) {
                unsigned char *nb = realloc(b, n + 4);
                assert_non_null(nb);
                b = nb;
                memset(b + n, 0, 4);
                spit(p, b, n + 4);
            } else {
                spit(p, b, n - 3); /* not even a whole float */
            }
            free(b);
            free(p);
            golden_result r = run(dir);
            expect_fail_naming(&r, files[i]);
            remove_tree(dir);
        }
    }
    /* An empty file. */
    char *dir = copy_case(BASE_CASE);
    char *p = join(dir, "param_1.f32");
    spit(p, "", 0);
    free(p);
    golden_result r = run(dir);
    expect_fail_naming(&r, "param_1.f32");
    remove_tree(dir);
}

static void test_bad_json(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{\"case\": \"x\", \"optimizer\": \"sgd\", ", /* truncated */
        "",                                            /* empty */
        "[1, 2, 3]",                                   /* not an object */
        "{\"case\": \"x\"}",                           /* no optimizer */
        "\xff\xfe garbage",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *dir = copy_case(BASE_CASE);
        char *p = join(dir, "meta.json");
        spit(p, texts[i], strlen(texts[i]));
        free(p);
        golden_result r = run(dir);
        expect_fail_naming(&r, "meta.json");
        remove_tree(dir);
    }
    /* Structurally wrong fields. */
    static const char *const edits[] = {"steps", "shape", "files", "tolerance_of_param_T",
                                        "role", "hyper_type"};
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *dir = copy_case(BASE_CASE);
        cJSON *m = load_meta(dir);
        const char *e = edits[i];
        if (strcmp(e, "steps") == 0)
            cJSON_ReplaceItemInObjectCaseSensitive(m, "steps", cJSON_CreateString("25"));
        else if (strcmp(e, "shape") == 0)
            cJSON_ReplaceItemInObjectCaseSensitive(m, "shape", cJSON_CreateNumber(-1));
        else if (strcmp(e, "files") == 0)
            cJSON_ReplaceItemInObjectCaseSensitive(m, "files", cJSON_CreateObject());
        else if (strcmp(e, "tolerance_of_param_T") == 0)
            cJSON_ReplaceItemInObjectCaseSensitive(meta_file(m, "param_T.f32"), "tolerance",
                                                   cJSON_CreateString("tight"));
        else if (strcmp(e, "role") == 0)
            cJSON_ReplaceItemInObjectCaseSensitive(meta_file(m, "param0.f32"), "role",
                                                   cJSON_CreateString("expected"));
        else
            cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "hyper"),
                                                   "lr", cJSON_CreateString("0.01"));
        save_meta(dir, m);
        golden_result r = run(dir);
        expect_fail_naming(&r, "meta.json");
        remove_tree(dir);
    }
}

static void test_wrong_shape(void **state)
{
    (void)state;
    char *dir;
    cJSON *m;
    golden_result r;
    int n;
    {
        cJSON *m0 = load_meta(GOLDEN_DIR "/" BASE_CASE);
        n = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m0, "shape"), 0)->valueint;
        cJSON_Delete(m0);
    }
    int wrong[1] = {n + 1};

    /* meta.shape disagrees with the files' shapes. */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    set_shape(m, wrong, 1);
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, "param0.f32");
    remove_tree(dir);

    /* grads.f32 listed with fewer steps than "steps". */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    int steps = cJSON_GetObjectItemCaseSensitive(m, "steps")->valueint;
    int gshape[2] = {steps - 1, n};
    set_shape(meta_file(m, "grads.f32"), gshape, 2);
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, "grads.f32");
    remove_tree(dir);

    /* An expected file with another shape. */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    int two[2] = {n, 1};
    set_shape(meta_file(m, "state_momentum_buffer.f32"), two, 2);
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, "state_momentum_buffer.f32");
    remove_tree(dir);

    /* Every shape changed consistently: the byte counts no longer match. */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    set_shape(m, wrong, 1);
    cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(m, "files"))
    {
        const char *name = cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring;
        if (strcmp(name, "grads.f32") == 0) {
            int g[2] = {steps, n + 1};
            set_shape(f, g, 2);
        } else {
            set_shape(f, wrong, 1);
        }
    }
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, ".f32");
    assert_non_null(strstr(r.reason, "bytes"));
    remove_tree(dir);

    /* A zero dimension. */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    int zero[2] = {0, n};
    set_shape(m, zero, 2);
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, "meta.json");
    remove_tree(dir);
}

static void test_wrong_values(void **state)
{
    (void)state;
    static const char *const files[] = {"param_1.f32", "param_T.f32",
                                        "state_momentum_buffer.f32"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        for (int nan = 0; nan < 2; nan++) {
            char *dir = copy_case(BASE_CASE);
            float v = peek_f32(dir, files[i], 17);
            poke_f32(dir, files[i], 17, nan ? NAN : v + 0.01f + fabsf(v) * 1e-3f);
            golden_result r = run(dir);
            expect_fail_naming(&r, files[i]);
            assert_int_equal(r.files_failed, 1);
            if (!nan)
                assert_true(r.max_abs_err >= 0.009);
            remove_tree(dir);
        }
    }
    /* A gradient changed: the replay itself no longer matches param_T. */
    char *dir = copy_case(BASE_CASE);
    size_t last = (size_t)(steps_of(dir) - 1) * (size_t)numel_of(dir) + 5;
    poke_f32(dir, "grads.f32", last, peek_f32(dir, "grads.f32", last) + 1.0f);
    golden_result r = run(dir);
    expect_fail_naming(&r, "param_T.f32");
    remove_tree(dir);

    /* final_scalar_state.step disagrees with the optimizer's count. */
    dir = copy_case(BASE_CASE);
    cJSON *m = load_meta(dir);
    cJSON_ReplaceItemInObjectCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(m, "final_scalar_state"), "step",
        cJSON_CreateNumber(3));
    save_meta(dir, m);
    r = run(dir);
    expect_fail_naming(&r, "meta.json");
    remove_tree(dir);
}

static void test_unknown_state_and_files(void **state)
{
    (void)state;
    /* A state file the rule does not have is a FAIL, not a skip. */
    char *dir = copy_case(BASE_CASE);
    char *from = join(dir, "state_momentum_buffer.f32"), *to = join(dir, "state_bogus.f32");
    copy_file(from, to);
    free(from);
    free(to);
    cJSON *m = load_meta(dir);
    cJSON *copy = cJSON_Duplicate(meta_file(m, "state_momentum_buffer.f32"), 1);
    cJSON_ReplaceItemInObjectCaseSensitive(copy, "name", cJSON_CreateString("state_bogus.f32"));
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(m, "files"), copy);
    save_meta(dir, m);
    golden_result r = run(dir);
    expect_fail_naming(&r, "state_bogus");
    remove_tree(dir);

    /* A .f32 file in the directory that meta.json does not list. */
    dir = copy_case(BASE_CASE);
    from = join(dir, "param_T.f32");
    to = join(dir, "state_extra.f32");
    copy_file(from, to);
    free(from);
    free(to);
    r = run(dir);
    expect_fail_naming(&r, "state_extra.f32");
    remove_tree(dir);

    /* An expected file of an unknown kind. */
    dir = copy_case(BASE_CASE);
    m = load_meta(dir);
    cJSON_ReplaceItemInObjectCaseSensitive(meta_file(m, "param_T.f32"), "name",
                                           cJSON_CreateString("weird.f32"));
    save_meta(dir, m);
    from = join(dir, "param_T.f32");
    to = join(dir, "weird.f32");
    assert_int_equal(rename(from, to), 0);
    free(from);
    free(to);
    r = run(dir);
    expect_fail_naming(&r, "weird.f32");
    remove_tree(dir);
}

static void test_unsupported_copies(void **state)
{
    (void)state;
    /* Renaming the optimizer to one clopt lacks. */
    char *dir = copy_case(BASE_CASE);
    cJSON *m = load_meta(dir);
    cJSON_ReplaceItemInObjectCaseSensitive(m, "optimizer", cJSON_CreateString("shampoo"));
    save_meta(dir, m);
    golden_result r = run(dir);
    assert_int_equal(r.verdict, GOLDEN_UNSUPPORTED);
    assert_non_null(strstr(r.reason, "shampoo"));
    remove_tree(dir);

    /* NAdam as torch 1.13 computed it. */
    dir = copy_case("nadam");
    m = load_meta(dir);
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "hyper"),
                                           "variant", cJSON_CreateString("torch_1.13"));
    save_meta(dir, m);
    r = run(dir);
    assert_int_equal(r.verdict, GOLDEN_UNSUPPORTED);
    assert_non_null(strstr(r.reason, "torch_1.13"));
    remove_tree(dir);

    /* A Hessian schedule clopt cannot express (every 10 steps, but the first after 5). */
    dir = copy_case("sophia");
    m = load_meta(dir);
    cJSON *hs = cJSON_GetObjectItemCaseSensitive(m, "hess_update_after_steps");
    cJSON_ReplaceItemInArray(hs, 0, cJSON_CreateNumber(5));
    save_meta(dir, m);
    r = run(dir);
    assert_int_equal(r.verdict, GOLDEN_UNSUPPORTED);
    remove_tree(dir);
}

/* ------------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    clopt_status st = clopt_ctx_create(&g_ctx);
    if (st != CLOPT_SUCCESS) {
        print_error("clopt_ctx_create: %s\n", clopt_status_name(st));
        return -1;
    }
    print_message("device: %s\n", clopt_ctx_device_name(g_ctx));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    clopt_ctx_destroy(g_ctx);
    g_ctx = NULL;
    return 0;
}

int main(void)
{
    golden_case_list cases;
    char why[GOLDEN_REASON_MAX];
    if (golden_list_cases(GOLDEN_DIR, &cases, why, sizeof why) != 0) {
        fprintf(stderr, "test_golden: %s\n", why);
        return 1;
    }
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_mapping_table),
        cmocka_unit_test(test_map_hyper),
        cmocka_unit_test(test_list_cases),
        cmocka_unit_test(test_copy_passes),
        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_truncated_and_oversized),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_wrong_values),
        cmocka_unit_test(test_unknown_state_and_files),
        cmocka_unit_test(test_unsupported_copies),
    };
    const size_t nfixed = sizeof fixed / sizeof fixed[0];
    const size_t total = cases.count + nfixed;
    struct CMUnitTest *tests = calloc(total, sizeof *tests);
    char **names = calloc(cases.count + 1, sizeof *names);
    if (tests == NULL || names == NULL) {
        fprintf(stderr, "test_golden: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < cases.count; i++) {
        const char *base = strrchr(cases.dirs[i], '/');
        base = base ? base + 1 : cases.dirs[i];
        names[i] = malloc(strlen(base) + 8);
        if (names[i] == NULL)
            return 1;
        sprintf(names[i], "golden/%s", base);
        tests[i].name = names[i];
        tests[i].test_func = test_case;
        tests[i].initial_state = cases.dirs[i];
    }
    for (size_t i = 0; i < nfixed; i++)
        tests[cases.count + i] = fixed[i];
    int rc = _cmocka_run_group_tests("golden", tests, total, group_setup, group_teardown);
    for (size_t i = 0; i < cases.count; i++)
        free(names[i]);
    free(names);
    free(tests);
    golden_case_list_free(&cases);
    return rc;
}
