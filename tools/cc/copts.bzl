"""Compiler flags shared by every kindling target."""

# Project code is warning-free; third-party headers come from /usr/include
# as system headers, so their warnings do not count.
KINDLING_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-missing-field-initializers",
]
