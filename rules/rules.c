/*
 * rules/rules.c — the public face of the rules room: loading a file or a
 * string into a compiled set, reference counting, the reload slot, and
 * the helpers that turn errors and decisions into text for people.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "rules/rules_int.h"

struct rules_slot {
	pthread_mutex_t mu;
	struct rules *cur;
};

static void
rules_free(struct rules *r)
{
	if (r == NULL)
		return;
	free(r->rules);
	free(r->nodes);
	free(r->kids);
	for (size_t i = 0; i < r->nsets; i++)
		rules_set_free(&r->sets[i]);
	free(r->sets);
	free(r->vslots);
	rules_bintable_free(&r->bins);
	rules_arena_free(r->arena);
	free(r);
}

struct rules *
rules_ref(struct rules *r)
{
	if (r)
		atomic_fetch_add(&r->refs, 1);
	return r;
}

void
rules_unref(struct rules *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1)
		rules_free(r);
}

/* The directory part of name ("." when there is none). */
static void
dir_of(const char *name, char *out, size_t cap)
{
	const char *slash = strrchr(name, '/');
	size_t n;
	if (slash == NULL) {
		snprintf(out, cap, ".");
		return;
	}
	n = slash == name ? 1 : (size_t)(slash - name);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, name, n);
	out[n] = '\0';
}

int
rules_load_string(const char *text, const char *name, const struct rules_load_opts *opts,
                  struct rules **out, struct fgw_why *err)
{
	char base[PATH_MAX];
	struct rules *r;
	int rc;

	if (out)
		*out = NULL;
	if (err)
		memset(err, 0, sizeof(*err));
	if (name == NULL)
		name = "rules";
	if (text == NULL || out == NULL) {
		fgw_why_set(err, name, 0, 0, "no rules text");
		return FGW_ERR_INVALID;
	}
	if (opts && opts->base_dir)
		snprintf(base, sizeof(base), "%s", opts->base_dir);
	else
		dir_of(name, base, sizeof(base));
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		fgw_why_set(err, name, 0, 0, "%s", fgw_strerror(FGW_ERR_NOMEM));
		return FGW_ERR_NOMEM;
	}
	atomic_init(&r->refs, 1);
	if ((rc = rules_compile(r, text, name, base, opts, err)) != FGW_OK) {
		if (err && err->msg[0] == '\0')
			fgw_why_set(err, name, 0, 0, "%s", fgw_strerror(rc));
		rules_free(r);
		return rc;
	}
	*out = r;
	return FGW_OK;
}

int
rules_load_file(const char *path, const struct rules_load_opts *opts, struct rules **out,
                struct fgw_why *err)
{
	char *text = NULL;
	size_t len = 0, max = opts && opts->max_file_bytes ? opts->max_file_bytes : 16u << 20;
	const char *nul;
	int rc;

	if (out)
		*out = NULL;
	if (err)
		memset(err, 0, sizeof(*err));
	if (path == NULL || out == NULL) {
		fgw_why_set(err, "", 0, 0, "no rules file");
		return FGW_ERR_INVALID;
	}
	if ((rc = fgw_read_file(path, max, &text, &len)) != FGW_OK) {
		fgw_why_set(err, path, 0, 0, "cannot read rules file: %s", fgw_strerror(rc));
		return rc;
	}
	if ((nul = memchr(text, '\0', len)) != NULL) {
		int line = 1, col = 1;
		for (const char *p = text; p < nul; p++) {
			if (*p == '\n') {
				line++;
				col = 1;
			} else if ((*p & 0xc0) != 0x80) {
				col++;
			}
		}
		fgw_why_set(err, path, line, col, "NUL byte in rules file");
		free(text);
		return FGW_ERR_INVALID;
	}
	rc = rules_load_string(text, path, opts, out, err);
	free(text);
	return rc;
}

const char *
rules_action_name(enum rules_action a)
{
	switch (a) {
	case RULES_ALLOW:
		return "allow";
	case RULES_REVIEW:
		return "review";
	case RULES_REQUIRE_3DS:
		return "require_3ds";
	case RULES_DECLINE:
		return "decline";
	default:
		return "unknown";
	}
}

const char *
rules_describe_decision(const struct rules *r, const struct rules_decision *d, char *buf,
                        size_t len)
{
	const char *desc = NULL;
	size_t shown = 0;
	int n;

	if (len == 0)
		return buf;
	if (r && d->rule_id[0])
		for (size_t i = 0; i < r->nrules; i++)
			if (strcmp(r->rules[i].id, d->rule_id) == 0) {
				desc = r->rules[i].desc;
				break;
			}
	if (d->fired[0]) {
		shown = 1;
		for (const char *p = d->fired; *p; p++)
			shown += *p == ',';
	}
	if (d->rule_id[0] == '\0') {
		snprintf(buf, len, "%s (no rule matched)", rules_action_name(d->action));
		return buf;
	}
	n = snprintf(buf, len, "%s%s%s by rule %s%s%s%s; fired: %s",
	             rules_action_name(d->action), d->code[0] ? " " : "", d->code, d->rule_id,
	             desc ? " \"" : "", desc ? desc : "", desc ? "\"" : "", d->fired);
	if (n >= 0 && (size_t)n < len && (size_t)d->nfired > shown)
		snprintf(buf + n, len - (size_t)n, " (+%zu more)", (size_t)d->nfired - shown);
	return buf;
}

size_t
rules_count(const struct rules *r)
{
	return r ? r->nrules : 0;
}

int64_t
rules_max_window_ms(const struct rules *r)
{
	return r ? r->max_window_ms : 0;
}

int
rules_slot_new(struct rules *initial, struct rules_slot **out)
{
	struct rules_slot *s;
	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return FGW_ERR_NOMEM;
	if (pthread_mutex_init(&s->mu, NULL) != 0) {
		free(s);
		return FGW_ERR_NOMEM;
	}
	s->cur = initial;
	*out = s;
	return FGW_OK;
}

struct rules *
rules_slot_get(struct rules_slot *s)
{
	struct rules *r;
	pthread_mutex_lock(&s->mu);
	r = rules_ref(s->cur);
	pthread_mutex_unlock(&s->mu);
	return r;
}

void
rules_slot_set(struct rules_slot *s, struct rules *r)
{
	struct rules *old;
	pthread_mutex_lock(&s->mu);
	old = s->cur;
	s->cur = r;
	pthread_mutex_unlock(&s->mu);
	rules_unref(old);
}

void
rules_slot_free(struct rules_slot *s)
{
	if (s == NULL)
		return;
	rules_unref(s->cur);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
