/*
 * tests/stripe_sigcheck.c — flairgw's Stripe-Signature verdicts for
 * test_stripe_signatures.py, which compares them with Stripe's own Node
 * library on the same headers.
 *
 * Reads lines "SECRET_HEX<TAB>NOW<TAB>TOLERANCE<TAB>HEADER_HEX<TAB>
 * PAYLOAD_HEX" on stdin and prints "accept" or "refuse" per line
 * (mac_verify_stripe_signature, the function the webhook route calls).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "crypto/mac.h"

#define LINE_MAX_LEN 65536

static char *
unhex(const char *s, size_t n)
{
	char *out = malloc(n / 2 + 1);
	size_t len = 0;

	if (out == NULL ||
	    sodium_hex2bin((unsigned char *)out, n / 2 + 1, s, n, NULL, &len, NULL) != 0) {
		free(out);
		return NULL;
	}
	out[len] = '\0';
	return out;
}

int
main(void)
{
	static char line[LINE_MAX_LEN];
	int rc = 0;

	if (sodium_init() < 0)
		return 2;
	while (fgets(line, sizeof(line), stdin) != NULL) {
		char *f[5], *secret, *header, *payload;
		const char *secrets[1];
		size_t n = 0;

		line[strcspn(line, "\n")] = '\0';
		/* strtok_r would merge empty fields: split by hand. */
		f[n++] = line;
		for (char *p = line; *p != '\0' && n < 5; p++)
			if (*p == '\t') {
				*p = '\0';
				f[n++] = p + 1;
			}
		if (n != 5)
			return 2;
		secret = unhex(f[0], strlen(f[0]));
		header = unhex(f[3], strlen(f[3]));
		payload = unhex(f[4], strlen(f[4]));
		if (secret == NULL || header == NULL || payload == NULL)
			return 2;
		secrets[0] = secret;
		printf("%s\n",
		       mac_verify_stripe_signature(header, payload, strlen(payload), secrets, 1,
		                                   strtoll(f[1], NULL, 10),
		                                   strtoll(f[2], NULL, 10), NULL, NULL) == FGW_OK
		           ? "accept"
		           : "refuse");
		free(secret);
		free(header);
		free(payload);
	}
	return rc;
}
