/*
 * tests/fuzz/fuzz_request.c — libFuzzer target for the transaction request
 * parser (txn_request_parse): any bytes must give 0 or FGW_ERR_INVALID,
 * never a crash, a leak, or undefined behaviour.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "pipeline/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	int r;

	if (!ready) {
		if (sodium_init() < 0)
			return 0;
		ready = 1;
	}
	r = txn_request_parse((const char *)data, size, &rq, &err);
	if (r == FGW_OK) {
		/* A parsed request always has what the stages rely on. */
		if (rq->amount <= 0 || strlen(rq->currency) != 3 ||
		    (rq->has_card == rq->has_encrypted) ||
		    (rq->has_card && rq->card.pan == NULL))
			__builtin_trap();
		txn_request_free(rq);
	} else if (r != FGW_ERR_INVALID && r != FGW_ERR_NOMEM) {
		__builtin_trap();
	}
	return 0;
}
