/*
 * tests/fuzz/fuzz_reply_stripe.c — libFuzzer target for the stripe adapter's
 * reply parsers (see reply_oracle.h for the input layout and the oracle).
 */
#define ADAPTER "stripe"
#include "tests/fuzz/reply_oracle.h"
