/*
 * tests/bench_rules.c — how many decisions per second the rules engine
 * makes: the default etc/rules.conf alone, then with 1,000 more rules
 * that never match (the worst case: every rule is evaluated), with a
 * velocity store holding some history, on 1 and 2 threads.
 *
 * Usage: bench_rules [RULES_FILE] (default etc/rules.conf). Prints one
 * line per configuration.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/util.h"
#include "rules/rules.h"

#define T0 1704111300000LL

struct job {
	const struct rules *r;
	struct velocity *v;
	long n;
	int id;
	long allowed;
};

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct bufs {
	char fp[32], ip[32], email[48];
};

/* Transaction number i: 5,000 cards, a few thousand IPs and e-mails. */
static void
input(struct rules_input *in, struct bufs *b, long i)
{
	memset(in, 0, sizeof(*in));
	snprintf(b->fp, sizeof(b->fp), "fp-%ld", i % 5000);
	snprintf(b->ip, sizeof(b->ip), "172.16.%ld.%ld", (i / 256) % 16, i % 256);
	snprintf(b->email, sizeof(b->email), "user%ld@example.com", i % 3000);
	in->amount = 15000;
	in->currency = "USD";
	in->bin = "424242";
	in->customer_country = "US";
	in->ip = b->ip;
	in->email = b->email;
	in->processor = "sandbox";
	in->fingerprint = b->fp;
	in->threeds = "none";
	in->mode = "development";
	in->now_ms = T0;
}

static void *
run(void *arg)
{
	struct job *j = arg;
	struct rules_input in;
	struct rules_decision d;
	struct bufs b;
	for (long i = 0; i < j->n; i++) {
		input(&in, &b, i * 7 + j->id);
		if (rules_eval(j->r, &in, j->v, &d) == FGW_OK && d.action == RULES_ALLOW)
			j->allowed++;
	}
	return NULL;
}

static void
bench(const char *label, const struct rules *r, struct velocity *v, int threads, long n)
{
	pthread_t th[8];
	struct job jobs[8];
	double t;
	long allowed = 0;
	t = now_s();
	for (int i = 0; i < threads; i++) {
		jobs[i] = (struct job){ .r = r, .v = v, .n = n, .id = i };
		pthread_create(&th[i], NULL, run, &jobs[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		allowed += jobs[i].allowed;
	}
	t = now_s() - t;
	printf("%-34s %zu rules, %d thread%s: %9.0f decisions/s (%.2f us each), %ld allowed\n",
	       label, rules_count(r), threads, threads > 1 ? "s" : "",
	       (double)n * threads / t, t * 1e6 / ((double)n * threads) * threads, allowed);
}

int
main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "etc/rules.conf";
	char *base = NULL, *big = NULL, buf[600];
	size_t len = 0, cap, off;
	struct rules *r1 = NULL, *r2 = NULL;
	struct velocity *v = NULL;
	struct fgw_why err;
	struct rules_input in;
	struct bufs b;
	int rc = 1;

	if (fgw_read_file(path, 1 << 24, &base, &len) != FGW_OK) {
		fprintf(stderr, "cannot read %s\n", path);
		return 1;
	}
	cap = len + 1000 * 160 + 1;
	if ((big = malloc(cap)) == NULL)
		goto out;
	memcpy(big, base, len);
	off = len;
	for (int i = 0; i < 1000; i++) {
		int n;
		switch (i % 5) {
		case 0:
			n = snprintf(
			    big + off, cap - off,
			    "rule B%04d: when amount > %d and currency == \"EUR\" then review\n", i,
			    600000 + i);
			break;
		case 1:
			n = snprintf(big + off, cap - off,
			             "rule B%04d: when card.bin in [%d-%d, 6011] then decline B%d\n",
			             i, 510000 + i * 10, 510000 + i * 10 + 9, i);
			break;
		case 2:
			n = snprintf(
			    big + off, cap - off,
			    "rule B%04d: when ip in [\"10.%d.0.0/16\", \"2001:db8:%x::/48\"] then review\n",
			    i, i % 256, i);
			break;
		case 3:
			n = snprintf(
			    big + off, cap - off,
			    "rule B%04d: when count(card, %dm) > %d or sum(email, %dh) > 99999999 then decline V%d\n",
			    i, i % 60 + 1, 1000 + i, i % 24 + 1, i);
			break;
		default:
			n = snprintf(
			    big + off, cap - off,
			    "rule B%04d: when email.domain in [\"d%d.example\", \"e%d.example\"] and not card.saved then review\n",
			    i, i, i);
			break;
		}
		off += (size_t)n;
	}
	big[off] = '\0';
	if (rules_load_string(base, path, NULL, &r1, &err) != FGW_OK ||
	    rules_load_string(big, path, NULL, &r2, &err) != FGW_OK) {
		fprintf(stderr, "%s\n", fgw_why_format(&err, buf, sizeof(buf)));
		goto out;
	}
	if (velocity_new(NULL, &v) != FGW_OK)
		goto out;
	/* history: 20,000 earlier attempts over the last half hour */
	for (long i = 0; i < 20000; i++) {
		input(&in, &b, i);
		in.now_ms = T0 - 1800000 + i * 90;
		rules_record(&in, v, i % 50 == 0);
	}
	bench("default rules", r1, v, 1, 400000);
	bench("default rules", r1, v, 2, 400000);
	bench("default + 1,000 never-matching", r2, v, 1, 20000);
	bench("default + 1,000 never-matching", r2, v, 2, 20000);
	rc = 0;
out:
	rules_unref(r1);
	rules_unref(r2);
	velocity_free(v);
	free(base);
	free(big);
	return rc;
}
