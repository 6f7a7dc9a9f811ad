/* SPDX-License-Identifier: MIT */
/* libFuzzer harness: clopt_optimizer_load_from on arbitrary bytes (ckp_common.h). */
#include "ckp_common.h"

#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a NULL buffer is refused by its own check; the loader never reads past size */
    unsigned char *copy = malloc(size ? size : 1);
    FUZZ_REQUIRE(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    fuzz_check(clopt_optimizer_load_from(g_opt, copy, size));
    free(copy);
    return 0;
}
