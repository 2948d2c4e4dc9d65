/*
 * tests/bench_seal.c — the floor of the sealed-card path: what opening one
 * encryptedCard costs on this CPU, next to what the plain path's box to
 * the processor costs per message.
 *
 * An encryptedCard is a sealed box (crypto_box_seal: an ephemeral X25519
 * key per card), so the gateway pays one X25519 per sealed payment that a
 * plain card does not; the processor channel's box uses a shared key
 * computed once (crypto_box_beforenm) and pays XSalsa20-Poly1305 only.
 *
 * Usage: bench_seal [SECONDS_PER_ROW] (default 1). Prints one line per
 * operation: "NAME: N ops in S s of CPU, U us each".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* The bench's card, as tools/bench.sh seals it. */
static const char card[] = "{\"number\":\"4111111111111111\",\"expMonth\":12,"
                           "\"expYear\":2030,\"cvc\":\"123\",\"holderName\":\"John Doe\"}";

#define CARD_LEN (sizeof(card) - 1)
#define N_BOXES 256

/* This thread's CPU time: on a shared machine the wall clock also counts
 * the time other processes had the core. */
static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
report(const char *name, long n, double secs)
{
	printf("%s: %ld ops in %.2f s of CPU, %.1f us each\n", name, n, secs,
	       secs * 1e6 / (double)n);
}

int
main(int argc, char **argv)
{
	static unsigned char sealed[N_BOXES][crypto_box_SEALBYTES + CARD_LEN];
	static unsigned char boxed[N_BOXES][crypto_box_MACBYTES + CARD_LEN];
	static unsigned char nonces[N_BOXES][crypto_box_NONCEBYTES];
	unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
	unsigned char ppk[crypto_box_PUBLICKEYBYTES], psk[crypto_box_SECRETKEYBYTES];
	unsigned char shared[crypto_box_BEFORENMBYTES], q[crypto_scalarmult_BYTES];
	unsigned char out[CARD_LEN];
	double per = argc > 1 ? atof(argv[1]) : 1.0, t0, t;
	long n;
	int i;

	if (sodium_init() < 0 || per <= 0 || per > 60) {
		fprintf(stderr, "usage: bench_seal [SECONDS_PER_ROW (0-60)]\n");
		return 2;
	}
	crypto_box_keypair(pk, sk);
	crypto_box_keypair(ppk, psk);
	if (crypto_box_beforenm(shared, ppk, sk) != 0)
		return 1;
	for (i = 0; i < N_BOXES; i++) {
		crypto_box_seal(sealed[i], (const unsigned char *)card, CARD_LEN, pk);
		randombytes_buf(nonces[i], sizeof(nonces[i]));
		crypto_box_easy_afternm(boxed[i], (const unsigned char *)card, CARD_LEN,
		                        nonces[i], shared);
	}

	/* What a sealed payment adds: open the card's sealed box. */
	for (n = 0, t0 = now_s(); (t = now_s()) - t0 < per; n++)
		if (crypto_box_seal_open(out, sealed[n % N_BOXES], sizeof(sealed[0]), pk, sk) !=
		    0)
			return 1;
	report("crypto_box_seal_open (X25519 + XSalsa20-Poly1305)", n, t - t0);

	/* Its X25519 alone. */
	for (n = 0, t0 = now_s(); (t = now_s()) - t0 < per; n++)
		if (crypto_scalarmult(q, sk, sealed[n % N_BOXES]) != 0)
			return 1;
	report("crypto_scalarmult (X25519 alone)", n, t - t0);

	/* The processor box with its cached shared key: what both paths pay. */
	for (n = 0, t0 = now_s(); (t = now_s()) - t0 < per; n++)
		if (crypto_box_open_easy_afternm(out, boxed[n % N_BOXES], sizeof(boxed[0]),
		                                 nonces[n % N_BOXES], shared) != 0)
			return 1;
	report("crypto_box_open_easy_afternm (cached key)", n, t - t0);
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(psk, sizeof(psk));
	sodium_memzero(shared, sizeof(shared));
	return 0;
}
