// EXPECT_SY_ERROR(statement, code): statement throws switchyard::Error with that ErrorCode (any other
// exception escapes and fails the test; no exception fails it too).
#pragma once

#include <gtest/gtest.h>

#include "base/error.h"

#define EXPECT_SY_ERROR(statement, error_code)                                     \
  do {                                                                             \
    try {                                                                          \
      statement;                                                                   \
      ADD_FAILURE() << "no switchyard::Error thrown by " #statement;               \
    } catch (const ::switchyard::Error& sy_error_) {                               \
      EXPECT_EQ(sy_error_.code(), (error_code))                                    \
          << ::switchyard::error_code_name(sy_error_.code()) << ": " << sy_error_.what(); \
    }                                                                              \
  } while (0)
