/* SPDX-License-Identifier: MIT */
/* libFuzzer harness: clopt_optimizer_load on a file holding the input (ckp_common.h); every
 * 16th input is loaded through a FIFO instead, which must be refused at once. */
#include "ckp_common.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[] = "/tmp/clopt-fuzz-ckp-XXXXXX";
static char g_path[64], g_fifo[64];

static void cleanup(void)
{
    unlink(g_path);
    unlink(g_fifo);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    FUZZ_REQUIRE(mkdtemp(g_dir) != NULL);
    snprintf(g_path, sizeof g_path, "%s/in.ckpt", g_dir);
    snprintf(g_fifo, sizeof g_fifo, "%s/fifo.ckpt", g_dir);
    FUZZ_REQUIRE(mkfifo(g_fifo, 0600) == 0);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long calls;
    if (++calls % 16 == 0) {
        clopt_status s = clopt_optimizer_load(g_opt, g_fifo);
        FUZZ_REQUIRE(s == CLOPT_ERR_IO);
        fuzz_check(s);
    }
    FILE *f = fopen(g_path, "wb");
    FUZZ_REQUIRE(f && fwrite(data, 1, size, f) == size && fclose(f) == 0);
    fuzz_check(clopt_optimizer_load(g_opt, g_path));
    return 0;
}
