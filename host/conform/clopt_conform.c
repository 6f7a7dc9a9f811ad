/* SPDX-License-Identifier: MIT */
/*
 * clopt-conform: replay golden-vector cases through clopt's optimizer level.
 *
 *   clopt-conform [--device D] [--allow-unsupported] [--verbose] DIR...
 *
 * Each DIR is a case directory (holding meta.json) or a folder of cases (listed by its
 * index.json, else every subdirectory holding meta.json, in name order). One line per
 * case: name, max abs error, max rel error, verdict (and the reason of a FAIL or an
 * UNSUPPORTED). The last line is "N passed, N failed" (", N skipped" with
 * --allow-unsupported, which counts unsupported cases as skipped instead of failed).
 * --verbose adds, under each case, one line per compared file: the largest fraction of its
 * tolerance an element used, and how many elements differ from the expected values (of how
 * many the tolerance allows).
 * Exit status: 0 when nothing failed, 1 otherwise, 2 for a usage error.
 */
#include "golden.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clopt-conform [--device D] [--allow-unsupported] [--verbose] DIR...\n"
            "\n"
            "Replays golden optimizer cases through clopt and compares the results.\n"
            "  DIR                  a case directory (with meta.json) or a folder of cases\n"
            "                       (index.json, else every subdirectory with meta.json)\n"
            "  --device D           OpenCL device: index or name substring (as CLOPT_DEVICE)\n"
            "  --allow-unsupported  count cases clopt cannot express as skipped, not failed\n"
            "  --verbose            per compared file: the fraction of its tolerance used and\n"
            "                       the elements that differ from the expected values\n"
            "  --version            print the versions of clopt-conform and the library\n"
            "  -h, --help           show this text\n");
}

static void fmt_err(char *buf, size_t len, const golden_result *r, double v)
{
    if (r->files_compared == 0)
        snprintf(buf, len, "-");
    else if (isnan(v))
        snprintf(buf, len, "nan");
    else
        snprintf(buf, len, "%.3e", v);
}

static void print_reports(const golden_result *r)
{
    for (size_t i = 0; i < r->nreports; i++) {
        const golden_file_report *p = &r->report[i];
        char allowed[32];
        if (p->allowed >= p->count)
            snprintf(allowed, sizeof allowed, "any");
        else
            snprintf(allowed, sizeof allowed, "%zu", p->allowed);
        printf("    %-32s %8.3g of tolerance, %zu of %zu differ (%s allowed)\n", p->name, p->used,
               p->mismatches, p->count, allowed);
    }
}

int main(int argc, char **argv)
{
    const char *device = NULL;
    int allow_unsupported = 0, verbose = 0, options_done = 0;
    const char **dirs = calloc((size_t)(argc > 0 ? argc : 1), sizeof(char *));
    size_t ndirs = 0;
    if (dirs == NULL) {
        fprintf(stderr, "clopt-conform: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                options_done = 1;
            } else if (strcmp(a, "--device") == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "clopt-conform: --device needs a value\n");
                    usage(stderr);
                    free(dirs);
                    return 2;
                }
                device = argv[++i];
            } else if (strncmp(a, "--device=", 9) == 0) {
                device = a + 9;
            } else if (strcmp(a, "--allow-unsupported") == 0) {
                allow_unsupported = 1;
            } else if (strcmp(a, "--verbose") == 0) {
                verbose = 1;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                usage(stdout);
                free(dirs);
                return 0;
            } else if (strcmp(a, "--version") == 0) {
                printf("clopt-conform %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                       CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
                free(dirs);
                return 0;
            } else {
                fprintf(stderr, "clopt-conform: unknown option %s\n", a);
                usage(stderr);
                free(dirs);
                return 2;
            }
        } else {
            dirs[ndirs++] = a;
        }
    }
    if (ndirs == 0) {
        fprintf(stderr, "clopt-conform: no case directory given\n");
        usage(stderr);
        free(dirs);
        return 2;
    }
    if (device != NULL && device[0] == '\0') {
        fprintf(stderr, "clopt-conform: --device needs a non-empty value\n");
        usage(stderr);
        free(dirs);
        return 2;
    }

    clopt_ctx *ctx = NULL;
    clopt_status st = device != NULL ? clopt_ctx_create_device(device, &ctx)
                                     : clopt_ctx_create(&ctx);
    if (st != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-conform: cannot create a clopt context%s%s: %s (%s)\n",
                device ? " on device " : "", device ? device : "", clopt_status_name(st),
                clopt_status_str(st));
        free(dirs);
        return 1;
    }
    fprintf(stderr, "clopt-conform: device %s\n", clopt_ctx_device_name(ctx));

    size_t passed = 0, failed = 0, skipped = 0;
    for (size_t d = 0; d < ndirs; d++) {
        golden_case_list list;
        char reason[GOLDEN_REASON_MAX];
        if (golden_list_cases(dirs[d], &list, reason, sizeof reason) != 0) {
            printf("%-20s %-10s %-10s FAIL: %s\n", dirs[d], "-", "-", reason);
            failed++;
            continue;
        }
        for (size_t i = 0; i < list.count; i++) {
            golden_result r;
            golden_run_case(ctx, list.dirs[i], &r);
            char ea[32], er[32];
            fmt_err(ea, sizeof ea, &r, r.max_abs_err);
            fmt_err(er, sizeof er, &r, r.max_rel_err);
            switch (r.verdict) {
            case GOLDEN_PASS:
                printf("%-20s %-10s %-10s PASS\n", r.name, ea, er);
                passed++;
                break;
            case GOLDEN_FAIL:
                printf("%-20s %-10s %-10s FAIL: %s\n", r.name, ea, er, r.reason);
                failed++;
                break;
            case GOLDEN_UNSUPPORTED:
                if (allow_unsupported) {
                    printf("%-20s %-10s %-10s SKIPPED (UNSUPPORTED: %s)\n", r.name, ea, er,
                           r.reason);
                    skipped++;
                } else {
                    printf("%-20s %-10s %-10s UNSUPPORTED: %s\n", r.name, ea, er, r.reason);
                    failed++;
                }
                break;
            }
            if (verbose)
                print_reports(&r);
            fflush(stdout);
        }
        golden_case_list_free(&list);
    }
    if (allow_unsupported)
        printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    else
        printf("%zu passed, %zu failed\n", passed, failed);

    clopt_ctx_destroy(ctx);
    free(dirs);
    return failed == 0 ? 0 : 1;
}
