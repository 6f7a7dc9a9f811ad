# SPDX-License-Identifier: MIT
# The version numbers derived from project(clopt VERSION ...), and the ABI policy of README.md
# ("ABI and versions"):
#   CLOPT_VERSION_NUMBER         MAJOR*10000 + MINOR*100 + PATCH (clopt_version_number())
#   CLOPT_SOVERSION              "0.MINOR" while MAJOR is 0 (every 0.x minor may break the
#                                ABI: libclopt.so.0.1), MAJOR from 1.0 on (libclopt.so.1)
#   CLOPT_PACKAGE_COMPATIBILITY  SameMinorVersion for 0.x, SameMajorVersion from 1.0 on
# Also checks that include/clopt.h's CLOPT_VERSION_* macros agree with the project version.
math(EXPR CLOPT_VERSION_NUMBER
     "${PROJECT_VERSION_MAJOR} * 10000 + ${PROJECT_VERSION_MINOR} * 100 + ${PROJECT_VERSION_PATCH}")
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(CLOPT_SOVERSION "0.${PROJECT_VERSION_MINOR}")
  set(CLOPT_PACKAGE_COMPATIBILITY SameMinorVersion)
else()
  set(CLOPT_SOVERSION "${PROJECT_VERSION_MAJOR}")
  set(CLOPT_PACKAGE_COMPATIBILITY SameMajorVersion)
endif()

file(STRINGS "${PROJECT_SOURCE_DIR}/include/clopt.h" _clopt_hdr_version
     REGEX "^#define CLOPT_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
foreach(_part MAJOR MINOR PATCH)
  set(_found "")
  foreach(_line IN LISTS _clopt_hdr_version)
    if(_line MATCHES "^#define CLOPT_VERSION_${_part} +([0-9]+)")
      set(_found "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(NOT _found STREQUAL "${PROJECT_VERSION_${_part}}")
    message(FATAL_ERROR "include/clopt.h: CLOPT_VERSION_${_part} is '${_found}' but the "
                        "project version is ${PROJECT_VERSION}: update both together")
  endif()
endforeach()
