/* SPDX-License-Identifier: MIT */
/* clopt_version, clopt_version_number: the version the library was built as, from the CMake
 * project version (CLOPT_BUILD_VERSION*, set on this file only by CMakeLists.txt). */
#include "internal.h"

#ifndef CLOPT_BUILD_VERSION
#error "CLOPT_BUILD_VERSION must be defined by the build (CMakeLists.txt)"
#endif
#ifndef CLOPT_BUILD_VERSION_NUMBER
#error "CLOPT_BUILD_VERSION_NUMBER must be defined by the build (CMakeLists.txt)"
#endif

/* The header a consumer compiles against and the library must not disagree at build time. */
#if CLOPT_BUILD_VERSION_NUMBER != CLOPT_VERSION_NUMBER
#error "include/clopt.h's CLOPT_VERSION_* differ from the CMake project version"
#endif

const char *clopt_version(void) { return CLOPT_BUILD_VERSION; }

unsigned clopt_version_number(void) { return (unsigned)CLOPT_BUILD_VERSION_NUMBER; }

#ifndef CLOPT_HAVE_CLBLAST
#define CLOPT_HAVE_CLBLAST 0
#endif
int clopt_has_muon(void) { return CLOPT_HAVE_CLBLAST; }
