/*
 * tests/fuzz/fuzz_reply_sandbox.c — libFuzzer target for the sandbox adapter's
 * reply parsers (see reply_oracle.h for the input layout and the oracle).
 */
#define ADAPTER "sandbox"
#include "tests/fuzz/reply_oracle.h"
