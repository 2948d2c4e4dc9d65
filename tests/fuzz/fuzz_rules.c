/*
 * tests/fuzz/fuzz_rules.c — libFuzzer target for the rules language.
 *
 * The input bytes are a rules file. It is compiled with file references
 * refused (the fuzzer must not read the disk); when it compiles, one fixed
 * transaction is evaluated against it with a small velocity store holding
 * a little history, recorded, and described, and everything is freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct rules_load_opts opts = { .no_files = 1 };
	struct velocity_opts vo = { .max_events_per_key = 16,
		                        .max_keys = 64,
		                        .max_events = 256 };
	struct rules_input in;
	struct rules_decision d;
	struct fgw_why err;
	struct rules *r = NULL;
	struct velocity *v = NULL;
	char desc[512], msg[600];
	char *text;

	if (size > 1 << 16)
		return 0;
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (rules_load_string(text, "fuzz.rules", &opts, &r, &err) != 0) {
		fgw_why_format(&err, msg, sizeof(msg));
		free(text);
		return 0;
	}
	memset(&in, 0, sizeof(in));
	in.amount = 15000;
	in.currency = "USD";
	in.bin = "424242";
	in.customer_country = "US";
	in.ip = "2001:db8::7";
	in.email = "Alice@Example.com";
	in.processor = "sandbox";
	in.fingerprint = "fp";
	in.threeds = "none";
	in.mode = "production";
	in.now_ms = 1704111300000LL;
	if (velocity_new(&vo, &v) == 0) {
		for (int i = 0; i < 8; i++) {
			in.now_ms -= 30000;
			rules_record(&in, v, i & 1);
		}
		in.now_ms = 1704111300000LL;
	}
	rules_eval(r, &in, v, &d);
	rules_describe_decision(r, &d, desc, sizeof(desc));
	if (v)
		rules_record(&in, v, d.action == RULES_DECLINE);
	in.ip = "10.1.2.3";
	in.bin = "40000025";
	in.customer_country = NULL;
	in.email = NULL;
	rules_eval(r, &in, NULL, &d);
	velocity_free(v);
	rules_unref(r);
	free(text);
	return 0;
}
