/*
 * tools/sandbox/stripe_contract.c — a request against the fixture of
 * Stripe's OpenAPI description (stripe_contract.h).
 *
 * The fixture lists, per operation, each parameter key as the adapter
 * sends it ("card[number]"), an array item as "name[]" and a free-form
 * key as "name[*]", with the alternatives Stripe allows for its value.
 * A sent key is looked up as it is, then with numeric indexes as "[]",
 * then with its last segment as "[*]".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "tools/sandbox/stripe_contract.h"

#define CONTRACT_MAX_FILE (1 << 20)
#define CONTRACT_KEY_MAX 256

struct stripe_contract {
	cJSON *root;
	char version[96];
};

int
stripe_contract_load(const char *path, struct stripe_contract **out)
{
	struct stripe_contract *c = NULL;
	const cJSON *src, *ops;
	const char *ver, *commit;
	FILE *f = NULL;
	char *text = NULL;
	size_t len;
	int r = FGW_ERR_IO;

	*out = NULL;
	if ((f = fopen(path, "rb")) == NULL)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((text = malloc(CONTRACT_MAX_FILE + 1)) == NULL ||
	    (c = calloc(1, sizeof(*c))) == NULL)
		goto out;
	len = fread(text, 1, CONTRACT_MAX_FILE + 1, f);
	r = FGW_ERR_INVALID;
	if (ferror(f) || len > CONTRACT_MAX_FILE)
		goto out;
	text[len] = '\0';
	if ((c->root = cJSON_Parse(text)) == NULL ||
	    !cJSON_IsArray(ops = cJSON_GetObjectItemCaseSensitive(c->root, "operations")) ||
	    !cJSON_IsObject(src = cJSON_GetObjectItemCaseSensitive(c->root, "source")))
		goto out;
	ver = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "api_version"));
	commit = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "commit"));
	snprintf(c->version, sizeof(c->version), "%s@%.12s", ver != NULL ? ver : "?",
	         commit != NULL ? commit : "?");
	*out = c;
	c = NULL;
	r = FGW_OK;
out:
	if (f != NULL)
		fclose(f);
	free(text);
	stripe_contract_free(c);
	return r;
}

void
stripe_contract_free(struct stripe_contract *c)
{
	if (c == NULL)
		return;
	cJSON_Delete(c->root);
	free(c);
}

const char *
stripe_contract_version(const struct stripe_contract *c)
{
	return c != NULL ? c->version : "";
}

/* Whether path matches the template ("{name}" is one non-empty segment);
 * the values of path parameters are checked by the caller. */
static int
path_match(const char *tmpl, const char *path)
{
	while (*tmpl != '\0' && *path != '\0') {
		if (*tmpl == '{') {
			const char *close = strchr(tmpl, '}');
			size_t n = strcspn(path, "/");
			if (close == NULL || n == 0)
				return 0;
			tmpl = close + 1;
			path += n;
			continue;
		}
		if (*tmpl++ != *path++)
			return 0;
	}
	return *tmpl == '\0' && *path == '\0';
}

static const cJSON *
find_op(const struct stripe_contract *c, const char *method, const char *path)
{
	const cJSON *op;
	const cJSON *ops = cJSON_GetObjectItemCaseSensitive(c->root, "operations");
	const cJSON *best = NULL;

	/* A literal segment beats a parameter: /search is not {intent}. */
	cJSON_ArrayForEach(op, ops) {
		const char *m = cJSON_GetStringValue(
		    cJSON_GetObjectItemCaseSensitive(op, "method"));
		const char *p = cJSON_GetStringValue(
		    cJSON_GetObjectItemCaseSensitive(op, "path"));
		if (m == NULL || p == NULL || strcmp(m, method) != 0 || !path_match(p, path))
			continue;
		if (strcmp(p, path) == 0)
			return op;
		if (best == NULL)
			best = op;
	}
	return best;
}

static int
int_ok(const char *v)
{
	size_t i = v[0] == '-' ? 1 : 0;
	return v[i] != '\0' && strlen(v + i) <= 18 &&
	       strspn(v + i, "0123456789") == strlen(v + i);
}

/* 1 when some alternative of alts allows v; else 0 and *code says why
 * (from the first alternative). */
static int
value_ok(const cJSON *alts, const char *v, const char **code)
{
	const cJSON *a;

	*code = "parameter_invalid_string";
	cJSON_ArrayForEach(a, alts) {
		const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "type"));
		const cJSON *en = cJSON_GetObjectItemCaseSensitive(a, "enum");
		const cJSON *ml = cJSON_GetObjectItemCaseSensitive(a, "maxLength");
		const char *why = NULL;

		if (t == NULL)
			continue;
		if (strcmp(t, "integer") == 0 && !int_ok(v))
			why = "parameter_invalid_integer";
		else if (strcmp(t, "boolean") == 0 && strcmp(v, "true") != 0 &&
		         strcmp(v, "false") != 0)
			why = "parameter_invalid_boolean";
		else if (strcmp(t, "string") == 0 && cJSON_IsNumber(ml) &&
		         (double)strlen(v) > ml->valuedouble)
			why = "parameter_invalid_string";
		if (why == NULL && cJSON_IsArray(en)) {
			const cJSON *e;
			int found = 0;
			cJSON_ArrayForEach(e, en) {
				if (cJSON_IsString(e) && strcmp(e->valuestring, v) == 0)
					found = 1;
			}
			if (!found)
				why = "parameter_invalid_string";
		}
		if (why == NULL)
			return 1;
		if (a == alts->child)
			*code = why;
	}
	return 0;
}

/* The fixture's entry for a sent key, or NULL. */
static const cJSON *
param_for(const cJSON *params, const char *key)
{
	char norm[CONTRACT_KEY_MAX], *last;
	const cJSON *p;
	size_t j = 0;

	if ((p = cJSON_GetObjectItemCaseSensitive(params, key)) != NULL)
		return p;
	/* "[0]" -> "[]" */
	for (size_t i = 0; key[i] != '\0'; i++) {
		if (j + 2 >= sizeof(norm))
			return NULL;
		norm[j++] = key[i];
		if (key[i] == '[' && key[i + 1] >= '0' && key[i + 1] <= '9') {
			size_t d = strspn(key + i + 1, "0123456789");
			if (key[i + 1 + d] == ']')
				i += d;
		}
	}
	norm[j] = '\0';
	if ((p = cJSON_GetObjectItemCaseSensitive(params, norm)) != NULL)
		return p;
	/* "metadata[flair_txn_id]" -> "metadata[*]" */
	if ((last = strrchr(norm, '[')) == NULL || last == norm || norm[j - 1] != ']' ||
	    (size_t)(last - norm) + 4 > sizeof(norm))
		return NULL;
	memcpy(last, "[*]", 4);
	return cJSON_GetObjectItemCaseSensitive(params, norm);
}

static int
sent(size_t n, char *const *keys, const char *k, int prefix)
{
	size_t kl = strlen(k);
	for (size_t i = 0; i < n; i++)
		if (prefix ? strncmp(keys[i], k, kl) == 0 &&
		                 (keys[i][kl] == '[' || keys[i][kl] == '\0')
		           : strcmp(keys[i], k) == 0)
			return 1;
	return 0;
}

int
stripe_contract_check(const struct stripe_contract *c, const char *method,
                      const char *path, size_t n, char *const *keys, char *const *values,
                      const char **code, const char **param)
{
	const cJSON *op, *params, *pp, *g, *alts;
	const char *tmpl, *seg;

	*code = *param = NULL;
	if (c == NULL || (op = find_op(c, method, path)) == NULL)
		return FGW_ERR_NOT_FOUND;
	params = cJSON_GetObjectItemCaseSensitive(op, "params");
	pp = cJSON_GetObjectItemCaseSensitive(op, "path_params");
	/* Path parameter values: walk template and path segment by segment
	 * (find_op matched them). */
	tmpl = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "path"));
	for (seg = path; tmpl != NULL && *tmpl != '\0';) {
		char name[64], value[CONTRACT_KEY_MAX];
		size_t tl = strcspn(tmpl + 1, "/") + 1, vl = strcspn(seg + 1, "/") + 1;
		if (tmpl[1] == '{') {
			if (tl - 3 >= sizeof(name) || vl - 1 >= sizeof(value))
				goto bad_path;
			memcpy(name, tmpl + 2, tl - 3);
			name[tl - 3] = '\0';
			memcpy(value, seg + 1, vl - 1);
			value[vl - 1] = '\0';
			if ((alts = cJSON_GetObjectItemCaseSensitive(pp, name)) == NULL ||
			    !value_ok(alts, value, code))
				goto bad_path;
		}
		tmpl += tl;
		seg += vl;
	}
	for (size_t i = 0; i < n; i++) {
		if ((alts = param_for(params, keys[i])) == NULL) {
			*code = "parameter_unknown";
			*param = keys[i];
			return FGW_ERR_INVALID;
		}
		if (values[i][0] == '\0' && !value_ok(alts, "", code)) {
			*code = "parameter_invalid_empty";
			*param = keys[i];
			return FGW_ERR_INVALID;
		}
		if (!value_ok(alts, values[i], code)) {
			*param = keys[i];
			return FGW_ERR_INVALID;
		}
	}
	cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(op, "required")) {
		const char *when = cJSON_GetStringValue(
		    cJSON_GetObjectItemCaseSensitive(g, "when"));
		const cJSON *r;
		if (when == NULL || (when[0] != '\0' && !sent(n, keys, when, 1)))
			continue;
		cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(g, "all")) {
			if (cJSON_IsString(r) && !sent(n, keys, r->valuestring, 0)) {
				*code = "parameter_missing";
				*param = r->valuestring;
				return FGW_ERR_INVALID;
			}
		}
	}
	return FGW_OK;
bad_path:
	*code = "resource_missing";
	*param = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "path"));
	return FGW_ERR_INVALID;
}
