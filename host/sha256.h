/* SPDX-License-Identifier: MIT */
/* SHA-256 (FIPS 180-4), incremental. Used by the on-disk program cache to check that an
 * entry's key and binary are exactly what was written. Not installed. */
#ifndef CLOPT_SHA256_H
#define CLOPT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CLOPT_SHA256_SIZE 32

typedef struct clopt_sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    unsigned char block[64]; /* pending input, bytes % 64 of it used */
} clopt_sha256_ctx;

void clopt_sha256_init(clopt_sha256_ctx *s);
void clopt_sha256_update(clopt_sha256_ctx *s, const void *data, size_t n);
/* Writes the 32-byte digest; s must be initialised again before reuse. */
void clopt_sha256_final(clopt_sha256_ctx *s, unsigned char out[CLOPT_SHA256_SIZE]);
/* One-shot digest of n bytes. */
void clopt_sha256(const void *data, size_t n, unsigned char out[CLOPT_SHA256_SIZE]);

#endif
