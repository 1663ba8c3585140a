/* The C API tests' check: counts passes and failures, prints each failure with its rank and line
 * and carries on, so that one run reports every broken check ("N passed, M failed"). Each test is
 * a program of its own: the counters are per program. */
#ifndef SWITCHYARD_TESTS_CAPI_CHECK_H_
#define SWITCHYARD_TESTS_CAPI_CHECK_H_

#include <stdio.h>

static int passed = 0, failed = 0, rank = 0;

#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (cond) {                                                       \
      ++passed;                                                       \
    } else {                                                          \
      ++failed;                                                       \
      fprintf(stderr, "[rank %d] %s:%d: ", rank, __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
    }                                                                 \
  } while (0)

#endif /* SWITCHYARD_TESTS_CAPI_CHECK_H_ */
