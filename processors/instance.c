/*
 * processors/instance.c — processor instance settings and loading
 * (processors/instance.h). One key table serves the `processor` lines and
 * the older processor_KEY / processor2_KEY directives alike.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>


#include "core/err.h"
#include "core/util.h"
#include "crypto/sealed.h"
#include "processors/instance.h"

enum key_kind { KEY_STR, KEY_INT, KEY_BOOL };

struct settings_key {
	const char *key;
	enum key_kind kind;
	size_t offset;
	size_t size;
	long long min, max;
};

#define S_OFF(f) offsetof(struct proc_settings, f)
#define S_SZ(f) sizeof(((struct proc_settings *)0)->f)
#define KSTR(f)                              \
	{                                        \
#f, KEY_STR, S_OFF(f), S_SZ(f), 0, 0 \
	}
#define KINT(f, lo, hi)                  \
	{                                    \
#f, KEY_INT, S_OFF(f), 0, lo, hi \
	}

static const struct settings_key keys[] = {
	KSTR(name),
	KSTR(type),
	KSTR(url),
	KSTR(public_key_file),
	KSTR(secret),
	KSTR(secret_file),
	KSTR(secret_env),
	KSTR(map_file),
	KSTR(api_version),
	KSTR(ca_file),
	KSTR(client_cert),
	KSTR(client_key),
	{ "verify_tls", KEY_BOOL, S_OFF(verify_tls), 0, 0, 1 },
	KINT(timeout_ms, 0, 120000),
	KINT(connect_timeout_ms, 0, 60000),
	KINT(max_conns, 0, 10000),
	{ NULL, KEY_STR, 0, 0, 0, 0 },
};

static const struct settings_key *
key_find(const char *key)
{
	for (const struct settings_key *k = keys; k->key != NULL; k++)
		if (strcmp(k->key, key) == 0)
			return k;
	return NULL;
}

int
proc_settings_key_known(const char *key)
{
	return key_find(key) != NULL;
}

void
proc_settings_init(struct proc_settings *s, const char *name)
{
	memset(s, 0, sizeof(*s));
	fgw_strlcpy(s->name, name, sizeof(s->name));
	fgw_strlcpy(s->type, "sandbox", sizeof(s->type));
	s->verify_tls = 1;
}

void
proc_settings_where(const struct proc_settings *s, const char *key, char *buf, size_t cap)
{
	if (s->old_prefix[0] != '\0')
		snprintf(buf, cap, "%s%s", s->old_prefix, key);
	else
		snprintf(buf, cap, "processor %s%s%s", s->name, key[0] ? " " : "", key);
}

/* A name is what a route line and a recorded row use: one word. */
static int
name_ok(const char *v)
{
	size_t n = strlen(v);
	return n > 0 && n < S_SZ(name) &&
	       strspn(v,
	              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") ==
	           n;
}

int
proc_settings_set(struct proc_settings *s, const char *key, const char *value,
                  struct fgw_why *why)
{
	const struct settings_key *k = key_find(key);
	char *base = (char *)s, where[96];
	int64_t v;

	if (k == NULL) {
		proc_settings_where(s, "", where, sizeof(where));
		fgw_why_set(why, where, 0, 0, "unknown key %s", key);
		return FGW_ERR_INVALID;
	}
	proc_settings_where(s, key, where, sizeof(where));
	switch (k->kind) {
	case KEY_STR:
		if (strlen(value) >= k->size) {
			fgw_why_set(why, where, 0, 0, "value is too long");
			return FGW_ERR_INVALID;
		}
		if (k->offset == S_OFF(name) && value[0] != '\0' && !name_ok(value)) {
			fgw_why_set(why, where, 0, 0, "one word of letters, digits, '_', '-' or '.'");
			return FGW_ERR_INVALID;
		}
		memcpy(base + k->offset, value, strlen(value) + 1);
		return FGW_OK;
	case KEY_BOOL: {
		long long b;
		if (fgw_parse_bool(value, &b) != FGW_OK) {
			fgw_why_set(why, where, 0, 0, "must be yes or no");
			return FGW_ERR_INVALID;
		}
		v = b;
		break;
	}
	case KEY_INT:
		if (fgw_parse_i64(value, k->min, k->max, &v) != FGW_OK) {
			fgw_why_set(why, where, 0, 0, "must be an integer from %lld to %lld", k->min,
			            k->max);
			return FGW_ERR_INVALID;
		}
		break;
	}
	*(long long *)(void *)(base + k->offset) = v;
	return FGW_OK;
}

int
proc_settings_line(struct proc_settings *list, int *n, int max, const char *line,
                   struct fgw_why *why)
{
	char buf[2048], where[96], *save = NULL, *w;
	struct proc_settings *s = NULL, tmp;
	int r;

	if (fgw_strlcpy(buf, line, sizeof(buf)) != FGW_OK ||
	    (w = strtok_r(buf, " \t", &save)) == NULL || strchr(w, '=') != NULL ||
	    !name_ok(w)) {
		fgw_why_set(why, "processor", 0, 0,
		            "needs \"NAME key=value...\" (NAME: one word)");
		return FGW_ERR_INVALID;
	}
	for (int i = 0; i < *n; i++)
		if (strcmp(list[i].name, w) == 0)
			s = &list[i];
	if (s == NULL && *n == max) {
		fgw_why_set(why, "processor", 0, 0, "at most %d processors", max);
		return FGW_ERR_INVALID;
	}
	/* Applied to a copy: a bad line changes nothing. */
	if (s != NULL)
		tmp = *s;
	else
		proc_settings_init(&tmp, w);
	r = FGW_OK;
	for (int word = 2; r == FGW_OK && (w = strtok_r(NULL, " \t", &save)) != NULL;
	     word++) {
		char *eq = strchr(w, '=');
		/* The word itself is not echoed: it may be a credential. */
		if (eq == NULL || eq == w || eq[1] == '\0' || strncmp(w, "name=", 5) == 0) {
			proc_settings_where(&tmp, "", where, sizeof(where));
			fgw_why_set(why, where, 0, 0,
			            "word %d is not key=value (a non-empty value, and no name=)",
			            word);
			r = FGW_ERR_INVALID;
			break;
		}
		*eq = '\0';
		r = proc_settings_set(&tmp, w, eq + 1, why);
	}
	if (r == FGW_OK)
		*(s != NULL ? s : &list[(*n)++]) = tmp;
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(&tmp, sizeof(tmp));
	return r;
}

int
proc_instance_load(struct proc_instance *pi, const struct proc_settings *s,
                   long long default_timeout_ms, struct fgw_why *why)
{
	char where[96];
	int r;

	memset(pi, 0, sizeof(*pi));
	if ((pi->type = proc_type_find(s->type)) == NULL) {
		proc_settings_where(s, "type", where, sizeof(where));
		fgw_why_set(why, where, 0, 0, "unknown processor type '%s'", s->type);
		return FGW_ERR_INVALID;
	}
	if (s->url[0] == '\0') {
		proc_settings_where(s, "url", where, sizeof(where));
		fgw_why_set(why, where, 0, 0, "required");
		return FGW_ERR_INVALID;
	}
	fgw_strlcpy(pi->cfg.name, s->name, sizeof(pi->cfg.name));
	fgw_strlcpy(pi->cfg.type, s->type, sizeof(pi->cfg.type));
	fgw_strlcpy(pi->cfg.base_url, s->url, sizeof(pi->cfg.base_url));
	fgw_strlcpy(pi->cfg.secret, s->secret, sizeof(pi->cfg.secret));
	fgw_strlcpy(pi->cfg.api_version, s->api_version, sizeof(pi->cfg.api_version));
	pi->cfg.timeout_ms = (long)(s->timeout_ms > 0 ? s->timeout_ms : default_timeout_ms);
	/* A type that takes the clear card (over TLS) needs no sealing key. */
	if (!(s->public_key_file[0] == '\0' && pi->type->needs_clear_card)) {
		if ((r = sealed_load_pubkey(s->public_key_file, &pi->cfg.pubkey)) != 0) {
			proc_settings_where(s, "public_key_file", where, sizeof(where));
			fgw_why_set(why, where, 0, 0, "%s: %s", s->public_key_file, fgw_strerror(r));
			return r;
		}
		pi->cfg.has_pubkey = 1;
	}
	if (pi->type->load != NULL)
		return pi->type->load(&pi->cfg, s->map_file, why);
	return FGW_OK;
}

void
proc_instance_free(struct proc_instance *pi)
{
	if (pi == NULL)
		return;
	if (pi->type != NULL && pi->type->unload != NULL)
		pi->type->unload(&pi->cfg);
	explicit_bzero(pi->cfg.secret, sizeof(pi->cfg.secret));
}

struct proc_instance *
proc_instance_find(struct proc_instance *list, int n, const char *name)
{
	if (name == NULL)
		return NULL;
	for (int i = 0; i < n; i++)
		if (strcmp(list[i].cfg.name, name) == 0)
			return &list[i];
	return NULL;
}
