// The project's one invariant-check macro. A failed CHECK is a bug in glimpse (never bad user
// input, which gets an absl::Status): it prints where and why, then aborts.
#ifndef GLIMPSE_COMMON_CHECK_H_
#define GLIMPSE_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (a glimpse bug; please report)\n", \
                   __FILE__, __LINE__, #cond);                                       \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

#endif  // GLIMPSE_COMMON_CHECK_H_
