/* SPDX-License-Identifier: MIT */
/* Kernel sources turned into byte arrays at build time (cmake/EmbedSources.cmake). */
#ifndef CLOPT_EMBEDDED_H
#define CLOPT_EMBEDDED_H
#include <stddef.h>

typedef struct clopt_embedded_file {
    const char *name; /* file name without directory and ".cl" */
    const char *data; /* NUL-terminated text */
    size_t size;      /* bytes, without the NUL */
} clopt_embedded_file;

#endif
