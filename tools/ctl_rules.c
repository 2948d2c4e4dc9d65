/*
 * tools/ctl_rules.c — the rules commands of flairctl.
 *
 * `check` compiles a file exactly as the daemon does and prints either a
 * summary or every error as FILE:LINE:COL: message. `test` decides one
 * sample transaction body (the POST /v1/transactions JSON) against a file
 * with an empty, in-memory velocity store — no database, no keys; the card
 * number is read only for its BIN and brand and is wiped. `reload` checks
 * the configured file first (a bad one is reported here and not sent),
 * then signals the daemon whose pid_file is locked.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/util.h"
#include "rules/rules.h"
#include "tools/ctl_rules.h"

static int
load(const char *path, struct rules **out)
{
	struct fgw_why err;
	char msg[640];
	int r = rules_load_file(path, NULL, out, &err);
	if (r != 0)
		fprintf(stderr, "%s\n", fgw_why_format(&err, msg, sizeof(msg)));
	return r;
}

int
ctl_rules_check(const struct fgw_config *cfg, int argc, char **argv)
{
	const char *path = argc > 0 ? argv[0] : cfg->rules_file;
	struct rules *r = NULL;
	int rc;
	if (argc > 1 || path[0] == '\0') {
		fprintf(
		    stderr,
		    "usage: flairctl rules check [FILE] (default: the configured rules_file)\n");
		return FGW_ERR_INVALID;
	}
	if ((rc = load(path, &r)) != 0)
		return rc;
	printf("%s: OK, %zu rules, longest velocity window %lld s\n", path, rules_count(r),
	       (long long)(rules_max_window_ms(r) / 1000));
	rules_unref(r);
	return FGW_OK;
}

static const char *
str_at(const cJSON *o, const char *a, const char *b)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);
	if (b != NULL)
		it = cJSON_GetObjectItemCaseSensitive(it, b);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* Options after FILE TXN.json. */
struct test_opts {
	const char *mode, *threeds, *processor, *customer_id;
	int card_saved;
	long long previous, declined;
};

static int
parse_test_opts(const struct fgw_config *cfg, int argc, char **argv, struct test_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->mode = cfg->mode;
	o->threeds = "none";
	o->processor = cfg->n_procs > 0 ? cfg->procs[0].name : "sandbox";
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int64_t n;
		if (strcmp(a, "--card-saved") == 0) {
			o->card_saved = 1;
			continue;
		}
		if (v == NULL)
			goto bad;
		i++;
		if (strcmp(a, "--mode") == 0)
			o->mode = v;
		else if (strcmp(a, "--threeds") == 0)
			o->threeds = v;
		else if (strcmp(a, "--processor") == 0)
			o->processor = v;
		else if (strcmp(a, "--customer-id") == 0)
			o->customer_id = v;
		else if (strcmp(a, "--previous") == 0 && fgw_parse_i64(v, 0, 500, &n) == 0)
			o->previous = n;
		else if (strcmp(a, "--declined") == 0 && fgw_parse_i64(v, 0, 500, &n) == 0)
			o->declined = n;
		else
			goto bad;
	}
	if (o->declined > o->previous)
		o->previous = o->declined;
	return FGW_OK;
bad:
	fprintf(stderr, "flairctl: rules test: bad option; options are --mode M, --threeds T,"
	                " --processor NAME, --customer-id ID, --card-saved, --previous N,"
	                " --declined N (N <= 500)\n");
	return FGW_ERR_INVALID;
}

int
ctl_rules_test(const struct fgw_config *cfg, int argc, char **argv)
{
	struct rules *r = NULL;
	struct velocity *v = NULL;
	struct rules_input in;
	struct rules_decision d;
	struct test_opts o;
	cJSON *root = NULL, *amount;
	char *text = NULL, bin[7] = "", last4[5] = "", fp[65] = "", line[1024];
	const char *pan;
	unsigned char h[32];
	size_t len = 0;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: flairctl rules test FILE TXN.json [options]\n");
		return FGW_ERR_INVALID;
	}
	if ((rc = parse_test_opts(cfg, argc - 2, argv + 2, &o)) != 0 ||
	    (rc = load(argv[0], &r)) != 0)
		goto out;
	if ((rc = fgw_read_file(argv[1], 1 << 20, &text, &len)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", argv[1], fgw_strerror(rc));
		goto out;
	}
	root = fgw_json_parse_strict(text, len);
	amount = cJSON_GetObjectItemCaseSensitive(root, "amount");
	memset(&in, 0, sizeof(in));
	if (!cJSON_IsObject(root) ||
	    fgw_json_int(amount, 0, 9007199254740991LL, &in.amount) != 0) {
		fprintf(stderr,
		        "flairctl: %s: not a transaction body (a JSON object with a whole "
		        "\"amount\" in minor units)\n",
		        argv[1]);
		rc = FGW_ERR_INVALID;
		goto out;
	}
	in.currency = str_at(root, "currency", NULL);
	if ((pan = str_at(root, "card", "number")) != NULL && strlen(pan) >= 6) {
		/* BIN, brand and a local stand-in for the fingerprint, keyed
		 * like the daemon's (with a key of this run only, so nothing
		 * printed from it can be computed back to the card); the
		 * number itself is never printed. */
		unsigned char fpkey[crypto_generichash_KEYBYTES];
		card_bin_last4(pan, strlen(pan), bin, last4);
		in.brand = card_brand_name(card_brand_of(pan, strlen(pan)));
		randombytes_buf(fpkey, sizeof(fpkey));
		crypto_generichash(h, sizeof(h), (const unsigned char *)pan, strlen(pan), fpkey,
		                   sizeof(fpkey));
		sodium_memzero(fpkey, sizeof(fpkey));
		fgw_hex(h, sizeof(h), fp);
		in.fingerprint = fp;
	}
	in.bin = bin;
	in.customer_country = str_at(root, "customer", "country");
	in.ip = str_at(root, "customer", "ip");
	in.email = str_at(root, "customer", "email");
	in.processor = o.processor;
	in.customer_id = o.customer_id;
	in.threeds = o.threeds;
	in.mode = o.mode;
	in.card_saved = o.card_saved;
	in.now_ms = fgw_now_ms();
	if ((rc = velocity_new(NULL, &v)) != 0)
		goto out;
	velocity_ensure_retention(v, rules_max_window_ms(r));
	for (long long i = 0; i < o.previous; i++) {
		/* Earlier attempts of the same payment, one a second, newest
		 * first; the first --declined of them were declined. */
		struct rules_input prev = in;
		prev.now_ms = in.now_ms - (i + 1) * 1000;
		if ((rc = rules_record(&prev, v, i < o.declined)) != 0)
			goto out;
	}
	if ((rc = rules_eval(r, &in, v, &d)) != 0) {
		fprintf(stderr, "flairctl: rules test: evaluation failed: %s\n",
		        fgw_strerror(rc));
		goto out;
	}
	printf("input: amount %lld %s, brand %s, bin %s, customer country %s, ip %s, email %s,"
	       " processor %s, mode %s, threeds %s, card saved %s, %lld earlier attempts"
	       " (%lld declined)\n",
	       (long long)in.amount, in.currency ? in.currency : "-",
	       in.brand ? in.brand : "-", bin[0] ? bin : "-",
	       in.customer_country ? in.customer_country : "-", in.ip ? in.ip : "-",
	       in.email ? in.email : "-", in.processor, in.mode, in.threeds,
	       in.card_saved ? "yes" : "no", o.previous, o.declined);
	printf("decision: %s\n", rules_describe_decision(r, &d, line, sizeof(line)));
	printf("action: %s\ncode: %s\nrule: %s\nfired: %s\n", rules_action_name(d.action),
	       d.code[0] ? d.code : "-", d.rule_id[0] ? d.rule_id : "-",
	       d.fired[0] ? d.fired : "-");
	rc = FGW_OK;
out:
	if (text != NULL) {
		fgw_freezero(text, len); /* it held a card number */
	}
	if (root != NULL && (pan = str_at(root, "card", "number")) != NULL)
		sodium_memzero((void *)pan, strlen(pan));
	cJSON_Delete(root);
	sodium_memzero(fp, sizeof(fp));
	velocity_free(v);
	rules_unref(r);
	return rc;
}

int
ctl_rules_reload(const struct fgw_config *cfg, int argc, char **argv)
{
	struct rules *r = NULL;
	char buf[32];
	ssize_t n;
	int64_t pid;
	int fd = -1, rc;

	(void)argv;
	if (argc != 0 || cfg->rules_file[0] == '\0') {
		fprintf(
		    stderr,
		    "usage: flairctl --config FILE rules reload (needs rules_file and pid_file in FILE)\n");
		return FGW_ERR_INVALID;
	}
	/* The daemon would refuse a bad file too; say why here and now. */
	if ((rc = load(cfg->rules_file, &r)) != 0) {
		fprintf(stderr, "flairctl: not reloaded: the running rules stay in force\n");
		return rc;
	}
	rules_unref(r);
	if ((fd = open(cfg->pid_file, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "flairctl: %s: %s (is flairgw running?)\n", cfg->pid_file,
		        strerror(errno));
		return FGW_ERR_NOT_FOUND;
	}
	/* The daemon holds an exclusive lock while it runs: if ours
	 * succeeds, the file is stale and its pid may be anyone's. */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		fprintf(stderr, "flairctl: %s is stale: no flairgw holds it\n", cfg->pid_file);
		rc = FGW_ERR_NOT_FOUND;
		goto out;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	if (fgw_parse_i64(buf, 2, 1 << 22, &pid) != 0) {
		fprintf(stderr, "flairctl: %s holds no pid\n", cfg->pid_file);
		rc = FGW_ERR_INVALID;
		goto out;
	}
	if (kill((pid_t)pid, SIGHUP) != 0) {
		fprintf(stderr, "flairctl: signalling pid %lld: %s\n", (long long)pid,
		        strerror(errno));
		rc = FGW_ERR_IO;
		goto out;
	}
	printf(
	    "%s checked; SIGHUP sent to flairgw (pid %lld), which logs and audits the reload\n",
	    cfg->rules_file, (long long)pid);
	rc = FGW_OK;
out:
	close(fd);
	return rc;
}
