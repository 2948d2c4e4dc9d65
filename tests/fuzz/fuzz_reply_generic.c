/*
 * tests/fuzz/fuzz_reply_generic.c — libFuzzer target for the generic
 * adapter's reply parsers under the shipped mapping
 * etc/processors/sandbox-generic.json (see reply_oracle.h for the input
 * layout and the oracle). Replies are parsed as they are after the
 * decrypt stage opened a sealed one.
 */
#include <stdio.h>
#include <stdlib.h>

#include "processors/adapter.h"
#include "processors/generic.h"

static void
reply_setup(struct proc_config *cfg)
{
	struct fgw_why why = { 0 };

	if (generic_map_load(cfg, "etc/processors/sandbox-generic.json", &why) != 0) {
		fprintf(stderr, "fuzz_reply_generic: %s: %s (run from the repository root)\n",
		        why.where, why.msg);
		abort();
	}
}

#define ADAPTER "generic"
#define REPLY_SETUP
#include "tests/fuzz/reply_oracle.h"
