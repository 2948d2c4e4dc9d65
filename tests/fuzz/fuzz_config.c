/*
 * tests/fuzz/fuzz_config.c — libFuzzer target for the configuration file
 * parser (gateway/config.c).
 *
 * The input bytes are a configuration file. It is written to a private
 * temporary file (config_load_file reads a path), loaded over the
 * defaults and, when it loads, finished (cross-field rules). Neither step
 * reads any other file.
 *
 * Oracle: results are 0 or FGW_ERR_INVALID; a refusal names the file and
 * a line that exists ("PATH:LINE: reason") or, from config_finish,
 * "config: reason" or "production: reason"; every string in the result is NUL-terminated and
 * counts stay within their arrays; no API key given in the file appears in
 * an error message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "gateway/config.h"
#include "processors/adapter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

#define terminated(a) check(memchr((a), '\0', sizeof(a)) != NULL)

static char path[64];

static void
check_result(const struct fgw_config *c)
{
	check(c->n_api_keys >= 0 && c->n_api_keys <= CONFIG_MAX_API_KEYS);
	check(c->n_inbound_webhooks >= 0 &&
	      c->n_inbound_webhooks <= CONFIG_MAX_INBOUND_WEBHOOKS);
	check(c->n_webhook_endpoints >= 0 &&
	      c->n_webhook_endpoints <= CONFIG_MAX_WEBHOOK_ENDPOINTS);
	check(c->routes.n >= 0 && c->routes.n <= PROC_ROUTES_MAX);
	for (int i = 0; i < c->n_api_keys; i++)
		terminated(c->api_keys[i].client_id);
	for (int i = 0; i < c->n_inbound_webhooks; i++) {
		terminated(c->inbound_webhooks[i].processor);
		check(proc_type_webhooks(c->inbound_webhooks[i].scheme) != NULL);
	}
	for (int i = 0; i < c->n_webhook_endpoints; i++) {
		terminated(c->webhook_endpoints[i].url);
		terminated(c->webhook_endpoints[i].client_id);
	}
	terminated(c->listen);
	terminated(c->mode);
	terminated(c->data_dir);
	terminated(c->database);
	terminated(c->currencies);
	check(c->n_procs >= 0 && c->n_procs <= PROC_INSTANCES_MAX);
	for (int i = 0; i < c->n_procs; i++) {
		terminated(c->procs[i].name);
		terminated(c->procs[i].type);
		terminated(c->procs[i].url);
		terminated(c->procs[i].secret);
		terminated(c->procs[i].public_key_file);
		terminated(c->procs[i].old_prefix);
	}
	terminated(c->stages_request);
	terminated(c->stages_response);
	terminated(c->s3_endpoint);
}

/* A refusal "PATH:LINE: reason" with 1 <= LINE <= lines; returns LINE. */
static int
check_refusal(const char *err, int lines)
{
	size_t n = strlen(path);
	char *end;
	long line;

	check(strncmp(err, path, n) == 0 && err[n] == ':');
	line = strtol(err + n + 1, &end, 10);
	check(end != err + n + 1 && *end == ':' && line >= 1 && line <= lines);
	return (int)line;
}

/* The fixed words of config.c's refusal of a short api_key line. */
#define API_KEY_USAGE "api_key needs \"KEY CLIENT_ID\""

/* The KEY of an "api_key KEY CLIENT_ID" line (of line number only, or
 * of every line when only is 0) does not show in err: it is a credential.
 * (Another line holding the same text is not known to be a key.) */
static void
check_no_key(const char *text, const char *err, int only)
{
	int lineno = 0;

	for (const char *p = text; p != NULL;
	     p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		char key[257];
		size_t k = 0;
		if (++lineno != only && only != 0)
			continue;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "api_key", 7) != 0 || (p[7] != ' ' && p[7] != '\t'))
			continue;
		p += 7;
		while (*p == ' ' || *p == '\t' || *p == '"')
			p++;
		while (p[k] && p[k] != ' ' && p[k] != '\n' && p[k] != '"' && k < sizeof(key) - 1)
			k++;
		if (k >= 8) {
			memcpy(key, p, k);
			key[k] = '\0';
			/* A KEY that is a piece of the message's own words
			 * ("LIENT_ID" of "KEY CLIENT_ID") shows for that reason. */
			check(strstr(err, key) == NULL || strstr(API_KEY_USAGE, key) != NULL);
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fgw_config *cfg;
	struct fgw_why why;
	char err[1024], *text;
	int lines = 1, r;
	FILE *f;

	if (path[0] == '\0') {
		int fd;
		if (sodium_init() < 0)
			abort();
		snprintf(path, sizeof(path), "/tmp/fuzz_config.XXXXXX");
		if ((fd = mkstemp(path)) < 0)
			abort();
		close(fd);
	}
	if (size > 1 << 16)
		return 0;
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	if ((f = fopen(path, "w")) == NULL || fwrite(data, 1, size, f) != size ||
	    fclose(f) != 0)
		abort();
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		free(text);
		return 0;
	}
	config_defaults(cfg);
	err[0] = '\0';
	memset(&why, 0, sizeof(why));
	r = config_load_file(cfg, path, &why);
	fgw_why_format(&why, err, sizeof(err));
	check_result(cfg);
	if (r != 0) {
		check(r == FGW_ERR_INVALID);
		terminated(err);
		check_no_key(text, err, check_refusal(err, lines));
	} else {
		r = config_finish(cfg, &why);
		fgw_why_format(&why, err, sizeof(err));
		check_result(cfg);
		if (r != 0) {
			check(r == FGW_ERR_INVALID);
			check(strncmp(err, "config: ", 8) == 0 ||
			      strncmp(err, "production: ", 12) == 0);
			check_no_key(text, err, 0);
		}
	}
	fgw_freezero(cfg, sizeof(*cfg));
	free(text);
	return 0;
}
