/*
 * rules/parse.c — lexer, recursive-descent parser and compiler of the
 * rules language (grammar in docs/rules.md).
 *
 * Layout: the attribute table; the lexer (one token of lookahead, line and
 * column counted in characters); list and BIN-table loading; the parser of
 * statements and conditions, which type-checks every comparison and
 * compiles lists into sets as they are used, so a wrong entry is reported
 * in the list file where it is written. The first error stops the parse:
 * a file with any error is refused as a whole.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/card.h"
#include "core/err.h"
#include "core/util.h"
#include "rules/rules_int.h"

/* ---- attributes ----------------------------------------------------------- */

const struct attr_info rules_attrs[AT_NATTRS] = {
	[AT_AMOUNT] = { "amount", RT_INT, SK_ANY, EK_NONE, 0, INT64_MAX },
	[AT_CURRENCY] = { "currency", RT_STR, SK_CURRENCY, EK_NONE, 0, 0 },
	[AT_CARD_BRAND] = { "card.brand", RT_STR, SK_BRAND, EK_NONE, 0, 0 },
	[AT_CARD_BIN] = { "card.bin", RT_BIN, SK_ANY, EK_NONE, 0, 0 },
	[AT_CARD_COUNTRY] = { "card.country", RT_STR, SK_COUNTRY, EK_NONE, 0, 0 },
	[AT_CARD_SAVED] = { "card.saved", RT_BOOL, SK_ANY, EK_BOOL, 0, 1 },
	[AT_CUSTOMER_COUNTRY] = { "customer.country", RT_STR, SK_COUNTRY, EK_NONE, 0, 0 },
	[AT_CUSTOMER_ID] = { "customer.id", RT_STR, SK_ANY, EK_NONE, 0, 0 },
	[AT_IP] = { "ip", RT_IP, SK_ANY, EK_NONE, 0, 0 },
	[AT_EMAIL] = { "email", RT_STR, SK_ANY, EK_NONE, 0, 0 },
	[AT_EMAIL_DOMAIN] = { "email.domain", RT_STR, SK_ANY, EK_NONE, 0, 0 },
	[AT_PROCESSOR] = { "processor", RT_STR, SK_ANY, EK_NONE, 0, 0 },
	[AT_HOUR] = { "hour", RT_INT, SK_ANY, EK_NONE, 0, 23 },
	[AT_WEEKDAY] = { "weekday", RT_ENUM, SK_ANY, EK_WEEKDAY, 0, 6 },
	[AT_THREEDS] = { "threeds", RT_ENUM, SK_ANY, EK_THREEDS, 0, 3 },
	[AT_MODE] = { "mode", RT_ENUM, SK_ANY, EK_MODE, 0, 1 },
	[AT_FINGERPRINT] = { "fingerprint", RT_STR, SK_ANY, EK_NONE, 0, 0 },
	[AT_DECLINES] = { "declines", RT_INT, SK_ANY, EK_NONE, 0, INT64_MAX },
};

static const char *const weekday_values[] = { "mon", "tue", "wed", "thu",
	                                          "fri", "sat", "sun", NULL };
static const char *const threeds_values[] = { "none", "required", "authenticated",
	                                          "failed", NULL };
static const char *const mode_values[] = { "production", "development", NULL };
static const char *const bool_values[] = { "false", "true", NULL };
const char *const *const rules_enum_values[] = {
	[EK_NONE] = NULL,        [EK_WEEKDAY] = weekday_values, [EK_THREEDS] = threeds_values,
	[EK_MODE] = mode_values, [EK_BOOL] = bool_values,
};
static const char *const ekind_names[] = {
	[EK_NONE] = "",
	[EK_WEEKDAY] = "weekday (mon ... sun)",
	[EK_THREEDS] = "3-D Secure outcome (none, required, authenticated, failed)",
	[EK_MODE] = "mode (production, development)",
	[EK_BOOL] = "true or false",
};

static const char *const fn_names[] = { "count", "sum", "declines", NULL };
static const char *const dim_names[] = { "card", "customer", "ip", "email", NULL };
static const char *const action_names[] = { "allow", "review", "require_3ds", "decline",
	                                        NULL };
static const char *const stmt_names[] = { "rule", "list", "bin_table", NULL };
static const char *const keywords[] = { "rule",    "list",    "bin_table", "file",
	                                    "when",    "then",    "and",       "or",
	                                    "not",     "in",      "matches",   "is",
	                                    "missing", "present", "true",      "false",
	                                    "allow",   "decline", "review",    "require_3ds",
	                                    "count",   "sum",     "declines",  NULL };

/* ---- arena ------------------------------------------------------------------ */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	char data[];
};

static char *
arena_alloc(struct arena_chunk **a, size_t n)
{
	struct arena_chunk *c = *a;
	char *p;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > 8000 ? n : 8000;
		if ((c = malloc(sizeof(*c) + cap)) == NULL)
			return NULL;
		c->next = *a;
		c->used = 0;
		c->cap = cap;
		*a = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

static char *
arena_strdup(struct arena_chunk **a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

char *
rules_arena_strdup(struct rules *r, const char *s, size_t n)
{
	return arena_strdup(&r->arena, s, n);
}

void
rules_arena_free(struct arena_chunk *a)
{
	while (a) {
		struct arena_chunk *next = a->next;
		free(a);
		a = next;
	}
}

/* ---- parser state ---------------------------------------------------------- */

enum tok {
	T_EOF,
	T_IDENT,
	T_STRING,
	T_NUMBER,
	T_DURATION,
	T_RANGE,
	T_LPAREN,
	T_RPAREN,
	T_LBRACK,
	T_RBRACK,
	T_COMMA,
	T_COLON,
	T_ASSIGN,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE
};

struct token {
	enum tok kind;
	int line, col;
	int64_t num; /* NUMBER value, DURATION in ms */
	size_t len;
	char text[RULES_STR_MAX + 1]; /* IDENT, STRING (decoded), NUMBER and
	                                 RANGE digits without '_' */
};

struct litem {
	const char *text;
	int line, col;
};

/* Cache slots of a list compiled for one kind of use. */
enum { LC_STR = 0, LC_GLOB = SK_N, LC_BIN, LC_CIDR, LC_INT, LC_HOUR, LC_N };

struct plist {
	char name[RULES_NAME_MAX + 1];
	struct litem *items;
	size_t n;
	const char *origin; /* file the items were read from */
	int line;
	int cache[LC_N];
};

struct parser {
	const char *p; /* next character */
	int line, col;
	struct token tok;
	const char *name;
	const char *base_dir;
	const struct rules_load_opts *opts;
	size_t max_bytes;
	struct rules *r;
	struct fgw_why *err;
	struct arena_chunk *scratch; /* list items; freed after the parse */
	struct plist *lists;
	size_t nlists, caplists;
	uint32_t *lhash; /* open addressing: list index + 1, 0 is empty */
	size_t lhcap;
	size_t caprules, capnodes, capkids, capsets, capvslots;
	int depth;
	int have_bins;
};

static int __attribute__((format(printf, 4, 5)))
perr(struct parser *ps, int line, int col, const char *fmt, ...)
{
	va_list ap;
	if (ps->err) {
		char msg[sizeof(ps->err->msg)];
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fgw_why_set(ps->err, ps->name, line, col, "%s", msg);
	}
	return FGW_ERR_INVALID;
}

static int
grow(void *arrp, size_t *cap, size_t n, size_t elsize)
{
	void **arr = arrp;
	size_t nc;
	void *na;
	if (n < *cap)
		return FGW_OK;
	nc = *cap ? *cap * 2 : 16;
	if (nc > SIZE_MAX / elsize)
		return FGW_ERR_NOMEM;
	if ((na = realloc(*arr, nc * elsize)) == NULL)
		return FGW_ERR_NOMEM;
	*arr = na;
	*cap = nc;
	return FGW_OK;
}

/* ---- suggestions ---------------------------------------------------------- */

/* Edit distance counting a swap of two neighbours as one edit, so that
 * "whne" is one step from "when". */
static size_t
edit_distance(const char *a, const char *b)
{
	unsigned char d[RULES_NAME_MAX + 1][RULES_NAME_MAX + 1];
	size_t la = strlen(a), lb = strlen(b);
	if (la > RULES_NAME_MAX || lb > RULES_NAME_MAX)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned char)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned char)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1u < best)
				best = d[i - 1][j] + 1u;
			if (d[i][j - 1] + 1u < best)
				best = d[i][j - 1] + 1u;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1u < best)
				best = d[i - 2][j - 2] + 1u;
			d[i][j] = (unsigned char)best;
		}
	}
	return d[la][lb];
}

/* Closest candidate within a small distance, or NULL. */
static const char *
closest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t bd = SIZE_MAX, limit = strlen(word) <= 4 ? 1 : 2;
	for (size_t i = 0; i < n && cands[i]; i++) {
		size_t d = edit_distance(word, cands[i]);
		if (d < bd) {
			bd = d;
			best = cands[i];
		}
	}
	return bd <= limit ? best : NULL;
}

static size_t
count_of(const char *const *v)
{
	size_t n = 0;
	while (v[n])
		n++;
	return n;
}

/* " (did you mean 'x'?)" or "". */
static void
hint_of(const char *word, const char *const *cands, size_t n, char *buf, size_t len)
{
	const char *c = closest(word, cands, n);
	if (c)
		snprintf(buf, len, " (did you mean '%s'?)", c);
	else
		buf[0] = '\0';
}

static void
attr_hint(const char *word, char *buf, size_t len)
{
	const char *cands[AT_NATTRS + 4];
	size_t n = 0;
	for (int i = 0; i < AT_NATTRS; i++)
		cands[n++] = rules_attrs[i].name;
	cands[n++] = "count";
	cands[n++] = "sum";
	cands[n] = NULL;
	hint_of(word, cands, n, buf, len);
}

/* ---- lexer -------------------------------------------------------------- */

static int
is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static void
adv(struct parser *ps)
{
	unsigned char c = (unsigned char)*ps->p;
	if (c == '\0')
		return;
	ps->p++;
	if (c == '\n') {
		ps->line++;
		ps->col = 1;
	} else if ((c & 0xc0) != 0x80) {
		ps->col++;
	}
}

static int
lex_number(struct parser *ps)
{
	struct token *t = &ps->tok;
	int64_t v = 0;
	int overflow = 0;
	size_t n = 0;

	while (is_digit(*ps->p) || *ps->p == '_') {
		if (*ps->p == '_') {
			if (n == 0 || !is_digit(ps->p[1]))
				return perr(ps, ps->line, ps->col,
				            "'_' may only separate digits, as in 500_000");
		} else {
			if (n >= 40)
				return perr(ps, t->line, t->col, "number too long");
			t->text[n++] = *ps->p;
			if (__builtin_mul_overflow(v, 10, &v) ||
			    __builtin_add_overflow(v, *ps->p - '0', &v))
				overflow = 1;
		}
		adv(ps);
	}
	t->text[n] = '\0';
	t->num = v;
	t->kind = T_NUMBER;
	if (*ps->p == '.' && is_digit(ps->p[1]))
		return perr(ps, t->line, t->col,
		            "numbers are whole (amounts are in minor units, e.g. "
		            "15000 for 150.00); IP addresses go in quotes, e.g. "
		            "\"10.0.0.0/8\"");
	if (*ps->p == '-' && is_digit(ps->p[1])) {
		t->text[n++] = '-';
		adv(ps);
		while (is_digit(*ps->p)) {
			if (n >= 40)
				return perr(ps, t->line, t->col, "range too long");
			t->text[n++] = *ps->p;
			adv(ps);
		}
		t->text[n] = '\0';
		t->kind = T_RANGE;
		return FGW_OK;
	}
	if (overflow)
		return perr(ps, t->line, t->col, "number too large");
	if (is_alpha(*ps->p)) {
		int uline = ps->line, ucol = ps->col;
		char unit[8];
		size_t un = 0;
		int64_t mult;
		while (is_alpha(*ps->p) || is_digit(*ps->p)) {
			if (un < sizeof(unit) - 1)
				unit[un++] = *ps->p;
			adv(ps);
		}
		unit[un] = '\0';
		if (strcmp(unit, "s") == 0)
			mult = 1000;
		else if (strcmp(unit, "m") == 0)
			mult = 60 * 1000;
		else if (strcmp(unit, "h") == 0)
			mult = 3600 * 1000;
		else if (strcmp(unit, "d") == 0)
			mult = 24LL * 3600 * 1000;
		else
			return perr(ps, uline, ucol,
			            "unknown duration unit '%s' (use s, m, h or d, as in 10m)", unit);
		if (__builtin_mul_overflow(v, mult, &t->num))
			return perr(ps, t->line, t->col, "duration too long");
		t->kind = T_DURATION;
	}
	return FGW_OK;
}

static int
lex_string(struct parser *ps)
{
	struct token *t = &ps->tok;
	size_t n = 0;
	adv(ps); /* opening quote */
	for (;;) {
		unsigned char c = (unsigned char)*ps->p;
		if (c == '\0' || c == '\n')
			return perr(ps, t->line, t->col,
			            "unterminated string (a string ends with \" on the same line)");
		if (c == '"') {
			adv(ps);
			break;
		}
		if (c == '\\') {
			char e = ps->p[1];
			if (e != '"' && e != '\\')
				return perr(ps, ps->line, ps->col,
				            "unknown escape in string (only \\\" and \\\\ are known)");
			adv(ps);
			c = (unsigned char)e;
		} else if (c < 0x20 && c != '\t') {
			return perr(ps, ps->line, ps->col, "control character in string");
		}
		if (n >= RULES_STR_MAX)
			return perr(ps, t->line, t->col, "string longer than %d bytes",
			            RULES_STR_MAX);
		t->text[n++] = (char)c;
		adv(ps);
	}
	t->text[n] = '\0';
	t->len = n;
	t->kind = T_STRING;
	return FGW_OK;
}

static int
next(struct parser *ps)
{
	struct token *t = &ps->tok;
	char c;

	for (;;) {
		c = *ps->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			adv(ps);
		} else if (c == '#') {
			while (*ps->p && *ps->p != '\n')
				adv(ps);
		} else {
			break;
		}
	}
	t->line = ps->line;
	t->col = ps->col;
	t->text[0] = '\0';
	t->len = 0;
	t->num = 0;
	if (c == '\0') {
		t->kind = T_EOF;
		return FGW_OK;
	}
	if (is_alpha(c)) {
		size_t n = 0;
		while (is_alpha(*ps->p) || is_digit(*ps->p) || *ps->p == '.') {
			if (n >= RULES_NAME_MAX)
				return perr(ps, t->line, t->col, "name longer than %d characters",
				            RULES_NAME_MAX);
			t->text[n++] = *ps->p;
			adv(ps);
		}
		t->text[n] = '\0';
		t->len = n;
		t->kind = T_IDENT;
		return FGW_OK;
	}
	if (is_digit(c))
		return lex_number(ps);
	if (c == '"')
		return lex_string(ps);
	adv(ps);
	switch (c) {
	case '(':
		t->kind = T_LPAREN;
		return FGW_OK;
	case ')':
		t->kind = T_RPAREN;
		return FGW_OK;
	case '[':
		t->kind = T_LBRACK;
		return FGW_OK;
	case ']':
		t->kind = T_RBRACK;
		return FGW_OK;
	case ',':
		t->kind = T_COMMA;
		return FGW_OK;
	case ':':
		t->kind = T_COLON;
		return FGW_OK;
	case '=':
		if (*ps->p == '=') {
			adv(ps);
			t->kind = T_EQ;
		} else {
			t->kind = T_ASSIGN;
		}
		return FGW_OK;
	case '!':
		if (*ps->p == '=') {
			adv(ps);
			t->kind = T_NE;
			return FGW_OK;
		}
		return perr(ps, t->line, t->col, "unexpected '!' (use '!=' or 'not')");
	case '<':
		t->kind = T_LT;
		if (*ps->p == '=') {
			adv(ps);
			t->kind = T_LE;
		}
		return FGW_OK;
	case '>':
		t->kind = T_GT;
		if (*ps->p == '=') {
			adv(ps);
			t->kind = T_GE;
		}
		return FGW_OK;
	case '&':
		return perr(ps, t->line, t->col, "unexpected '&' (use 'and')");
	case '|':
		return perr(ps, t->line, t->col, "unexpected '|' (use 'or')");
	case '\'':
		return perr(ps, t->line, t->col, "strings go in double quotes (\")");
	default:
		if ((unsigned char)c >= 0x21 && (unsigned char)c < 0x7f)
			return perr(ps, t->line, t->col, "unexpected character '%c'", c);
		return perr(ps, t->line, t->col, "unexpected byte 0x%02x",
		            (unsigned)(unsigned char)c);
	}
}

static const char *
tok_desc(const struct token *t, char *buf, size_t len)
{
	static const char *const names[] = {
		[T_EOF] = "end of file", [T_LPAREN] = "'('", [T_RPAREN] = "')'",
		[T_LBRACK] = "'['",      [T_RBRACK] = "']'", [T_COMMA] = "','",
		[T_COLON] = "':'",       [T_ASSIGN] = "'='", [T_EQ] = "'=='",
		[T_NE] = "'!='",         [T_LT] = "'<'",     [T_LE] = "'<='",
		[T_GT] = "'>'",          [T_GE] = "'>='",
	};
	switch (t->kind) {
	case T_IDENT:
		snprintf(buf, len, "'%.64s'", t->text);
		break;
	case T_STRING:
		snprintf(buf, len, "\"%.40s\"", t->text);
		break;
	case T_NUMBER:
	case T_RANGE:
		snprintf(buf, len, "%.40s", t->text);
		break;
	case T_DURATION:
		snprintf(buf, len, "a duration");
		break;
	default:
		snprintf(buf, len, "%s", names[t->kind]);
		break;
	}
	return buf;
}

static int
is_kw(const struct parser *ps, const char *kw)
{
	return ps->tok.kind == T_IDENT && strcmp(ps->tok.text, kw) == 0;
}

static int
in_names(const char *s, const char *const *v)
{
	for (int i = 0; v[i]; i++)
		if (strcmp(s, v[i]) == 0)
			return i;
	return -1;
}

static int
expected(struct parser *ps, const char *what)
{
	char d[80], hint[64] = "";
	if (ps->tok.kind == T_IDENT) {
		const char *want = strchr(what, '\'');
		if (want) {
			char w[32];
			size_t n = strcspn(want + 1, "'");
			if (n > 0 && n < sizeof(w) && is_alpha(want[1])) {
				const char *one[2] = { w, NULL };
				memcpy(w, want + 1, n);
				w[n] = '\0';
				hint_of(ps->tok.text, one, 1, hint, sizeof(hint));
			}
		}
	}
	return perr(ps, ps->tok.line, ps->tok.col, "expected %s, found %s%s", what,
	            tok_desc(&ps->tok, d, sizeof(d)), hint);
}

static int
expect(struct parser *ps, enum tok kind, const char *what)
{
	if (ps->tok.kind != kind)
		return expected(ps, what);
	return next(ps);
}

static int
expect_kw(struct parser *ps, const char *kw, const char *what)
{
	if (!is_kw(ps, kw))
		return expected(ps, what);
	return next(ps);
}

/* ---- compiled form --------------------------------------------------------- */

static int
new_node(struct parser *ps, const struct node *n, uint32_t *idx)
{
	struct rules *r = ps->r;
	int rc;
	if ((rc = grow(&r->nodes, &ps->capnodes, r->nnodes, sizeof(*r->nodes))) != FGW_OK)
		return rc;
	r->nodes[r->nnodes] = *n;
	*idx = (uint32_t)r->nnodes++;
	return FGW_OK;
}

static int
new_set(struct parser *ps, int kind, size_t cap, uint32_t *idx)
{
	struct rules *r = ps->r;
	struct rset *s;
	size_t el;
	int rc;
	if ((rc = grow(&r->sets, &ps->capsets, r->nsets, sizeof(*r->sets))) != FGW_OK)
		return rc;
	s = &r->sets[r->nsets];
	memset(s, 0, sizeof(*s));
	s->kind = (uint8_t)kind;
	switch (kind) {
	case ST_BIN:
		el = sizeof(*s->u.bin);
		break;
	case ST_CIDR:
		el = sizeof(*s->u.ip);
		break;
	case ST_INT:
		el = sizeof(*s->u.num);
		break;
	default:
		el = sizeof(*s->u.str);
		break;
	}
	if ((s->u.str = calloc(cap ? cap : 1, el)) == NULL)
		return FGW_ERR_NOMEM;
	*idx = (uint32_t)r->nsets++;
	return FGW_OK;
}

/* The result slot of (dim, window); at most RULES_MAX_WINDOWS distinct
 * pairs per file. Returns 0 or an error (reported at line:col). */
static int
vslot_of(struct parser *ps, int dim, int64_t window, int line, int col, uint16_t *slot)
{
	struct rules *r = ps->r;
	size_t i;
	int rc;
	for (i = 0; i < r->nvslots; i++)
		if (r->vslots[i].dim == dim && r->vslots[i].window_ms == window) {
			*slot = (uint16_t)i;
			return FGW_OK;
		}
	if (i >= RULES_MAX_WINDOWS)
		return perr(ps, line, col,
		            "more than %d different velocity windows in "
		            "one file",
		            RULES_MAX_WINDOWS);
	if ((rc = grow(&r->vslots, &ps->capvslots, r->nvslots, sizeof(*r->vslots))) != FGW_OK)
		return rc;
	r->vslots[i].dim = (uint8_t)dim;
	r->vslots[i].window_ms = window;
	r->nvslots++;
	*slot = (uint16_t)i;
	if (window > r->max_window_ms)
		r->max_window_ms = window;
	return FGW_OK;
}

/* What the left side of a test is: its type and how its values look. */
struct side {
	uint8_t type, skind, ekind;
	int attr; /* attribute, or -1 for a function */
	const char *name;
	int64_t min, max;
};

static const char *
type_name(const struct side *s)
{
	switch (s->type) {
	case RT_INT:
		return "a number";
	case RT_STR:
		return "text";
	case RT_BIN:
		return "a BIN";
	case RT_IP:
		return "an IP address";
	case RT_BOOL:
		return "true or false";
	default:
		return ekind_names[s->ekind];
	}
}

static int
enum_index(int ekind, const char *s)
{
	const char *const *v = rules_enum_values[ekind];
	for (int i = 0; v[i]; i++)
		if (rules_ascii_casecmp(v[i], s) == 0)
			return i;
	return -1;
}

static int
brand_ok(const char *s)
{
	for (int b = CARD_BRAND_UNKNOWN; b <= CARD_BRAND_UNIONPAY; b++)
		if (rules_ascii_casecmp(card_brand_name((enum card_brand)b), s) == 0)
			return 1;
	return 0;
}

static int
letters(const char *s, size_t n)
{
	size_t i;
	for (i = 0; s[i]; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
			return 0;
	return i == n;
}

/* Checks that text is a valid value of the kind; msg gets the reason. */
static int
text_ok(int skind, const char *s, char *msg, size_t len)
{
	if (*s == '\0') {
		snprintf(msg, len,
		         "empty text never matches (use 'is missing' to "
		         "test for a missing value)");
		return 0;
	}
	switch (skind) {
	case SK_COUNTRY:
		if (!letters(s, 2)) {
			snprintf(msg, len,
			         "'%.40s' is not a two-letter country code "
			         "(ISO 3166, e.g. US)",
			         s);
			return 0;
		}
		break;
	case SK_CURRENCY:
		if (!letters(s, 3)) {
			snprintf(msg, len,
			         "'%.40s' is not a three-letter currency code "
			         "(ISO 4217, e.g. USD)",
			         s);
			return 0;
		}
		break;
	case SK_BRAND:
		if (!brand_ok(s)) {
			snprintf(msg, len,
			         "'%.40s' is not a card brand (Visa, Mastercard, "
			         "Amex, Discover, JCB, Diners, UnionPay, Unknown)",
			         s);
			return 0;
		}
		break;
	default:
		break;
	}
	return 1;
}

/* Compiles items into a set (or an enum mask) for use with side. glob:
 * the items are `matches` patterns. */
static int
compile_items(struct parser *ps, const struct litem *items, size_t n, const char *origin,
              const struct side *sd, int glob, uint32_t *set_idx, uint64_t *mask)
{
	char msg[200];
	const char *why;
	struct fgw_why cidr_why;
	struct rset *s;
	uint32_t idx;
	int rc, kind;

#define ITEM_ERR(it, ...)                                                 \
	do {                                                                  \
		fgw_why_set(ps->err, origin, (it)->line, (it)->col, __VA_ARGS__); \
		return FGW_ERR_INVALID;                                           \
	} while (0)

	if (sd->type == RT_ENUM || sd->type == RT_BOOL) {
		if (glob || sd->type == RT_BOOL)
			return FGW_ERR_INTERNAL; /* refused by the caller */
		*mask = 0;
		for (size_t i = 0; i < n; i++) {
			int e = enum_index(sd->ekind, items[i].text);
			if (e < 0)
				ITEM_ERR(&items[i], "'%.60s' is not a %s", items[i].text,
				         ekind_names[sd->ekind]);
			*mask |= 1ULL << e;
		}
		return FGW_OK;
	}
	switch (sd->type) {
	case RT_STR:
		kind = glob ? ST_GLOB : ST_STR;
		break;
	case RT_BIN:
		kind = ST_BIN;
		break;
	case RT_IP:
		kind = ST_CIDR;
		break;
	default:
		kind = ST_INT;
		break;
	}
	if ((rc = new_set(ps, kind, n, &idx)) != FGW_OK)
		return rc;
	s = &ps->r->sets[idx];
	for (size_t i = 0; i < n; i++) {
		const struct litem *it = &items[i];
		switch (kind) {
		case ST_STR:
		case ST_GLOB: {
			char *c;
			if (!text_ok(kind == ST_GLOB ? SK_ANY : sd->skind, it->text, msg,
			             sizeof(msg)))
				ITEM_ERR(it, "%s", msg);
			if ((c = rules_arena_strdup(ps->r, it->text, strlen(it->text))) == NULL)
				return FGW_ERR_NOMEM;
			rules_ascii_lower(c);
			s->u.str[s->n++] = c;
			break;
		}
		case ST_BIN:
			if (rules_parse_binrange(it->text, &s->u.bin[s->n], &why) != 0)
				ITEM_ERR(it, "'%.60s': %s", it->text, why);
			s->n++;
			break;
		case ST_CIDR:
			if (rules_parse_cidr(it->text, &s->u.ip[s->n], &cidr_why) != 0)
				ITEM_ERR(it, "%s", cidr_why.msg);
			s->n++;
			break;
		case ST_INT:
			if (rules_parse_irange(it->text, &s->u.num[s->n], &why) != 0)
				ITEM_ERR(it, "'%.60s': %s", it->text, why);
			if (s->u.num[s->n].lo < sd->min || s->u.num[s->n].hi > sd->max)
				ITEM_ERR(it, "'%.60s' is outside %s's range %lld-%lld", it->text,
				         sd->name, (long long)sd->min, (long long)sd->max);
			s->n++;
			break;
		}
	}
	*set_idx = idx;
	return rules_set_finish(s);
#undef ITEM_ERR
}

static int
list_cache_slot(const struct side *sd, int glob)
{
	switch (sd->type) {
	case RT_STR:
		return glob ? LC_GLOB : LC_STR + sd->skind;
	case RT_BIN:
		return LC_BIN;
	case RT_IP:
		return LC_CIDR;
	case RT_INT:
		return sd->attr == AT_HOUR ? LC_HOUR : LC_INT;
	default:
		return -1;
	}
}

/* ---- lists and files ------------------------------------------------------ */

static int
resolve_path(struct parser *ps, const struct token *t, char *out, size_t cap)
{
	int n;
	if (ps->opts && ps->opts->no_files)
		return perr(ps, t->line, t->col, "files are not allowed here");
	if (t->text[0] == '\0')
		return perr(ps, t->line, t->col, "empty file name");
	if (t->text[0] == '/')
		n = snprintf(out, cap, "%s", t->text);
	else
		n = snprintf(out, cap, "%s/%s", ps->base_dir, t->text);
	if (n < 0 || (size_t)n >= cap)
		return perr(ps, t->line, t->col, "file name too long");
	return FGW_OK;
}

static int
read_named_file(struct parser *ps, const struct token *t, const char *path,
                const char *what, char **text)
{
	size_t len = 0;
	int rc = fgw_read_file(path, ps->max_bytes, text, &len);
	if (rc != FGW_OK) {
		perr(ps, t->line, t->col, "cannot read %s '%s': %s", what, path,
		     fgw_strerror(rc));
		return rc == FGW_ERR_NOMEM ? rc : FGW_ERR_INVALID;
	}
	if (memchr(*text, '\0', len) != NULL) {
		free(*text);
		*text = NULL;
		return perr(ps, t->line, t->col, "%s '%s' contains a NUL byte", what, path);
	}
	return FGW_OK;
}

static int
add_item(struct parser *ps, struct litem **items, size_t *n, size_t *cap,
         const char *text, size_t len, int line, int col)
{
	int rc;
	if ((rc = grow(items, cap, *n, sizeof(**items))) != FGW_OK)
		return rc;
	if (((*items)[*n].text = arena_strdup(&ps->scratch, text, len)) == NULL)
		return FGW_ERR_NOMEM;
	(*items)[*n].line = line;
	(*items)[*n].col = col;
	(*n)++;
	return FGW_OK;
}

/* A list file: one entry per line, '#' starts a comment, blank lines are
 * skipped, an entry may be in double quotes. */
static int
parse_list_file(struct parser *ps, const char *path, const char *text,
                struct litem **items, size_t *n)
{
	size_t cap = 0;
	int line = 1, rc;
	const char *p = text;
	while (*p) {
		const char *end = strchr(p, '\n'), *b, *e, *hash;
		int col = 1;
		if (end == NULL)
			end = p + strlen(p);
		hash = memchr(p, '#', (size_t)(end - p));
		e = hash ? hash : end;
		for (b = p; b < e && (*b == ' ' || *b == '\t'); b++)
			col++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		if (e - b >= 2 && *b == '"' && e[-1] == '"') {
			b++;
			e--;
			col++;
		}
		if (e > b) {
			if (e - b > RULES_STR_MAX) {
				fgw_why_set(ps->err, path, line, col, "entry longer than %d bytes",
				            RULES_STR_MAX);
				return FGW_ERR_INVALID;
			}
			if ((rc = add_item(ps, items, n, &cap, b, (size_t)(e - b), line, col)) !=
			    FGW_OK)
				return rc;
		}
		p = *end ? end + 1 : end;
		line++;
	}
	return FGW_OK;
}

/* '[' entry { ',' entry } [','] ']' — the current token is '['. */
static int
parse_inline(struct parser *ps, struct litem **items, size_t *n)
{
	size_t cap = 0;
	int rc;
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	while (ps->tok.kind != T_RBRACK) {
		struct token *t = &ps->tok;
		if (t->kind != T_STRING && t->kind != T_IDENT && t->kind != T_NUMBER &&
		    t->kind != T_RANGE)
			return expected(ps, "a list entry (text in quotes, a number, a "
			                    "range or a word) or ']'");
		if ((rc = add_item(ps, items, n, &cap, t->text, strlen(t->text), t->line,
		                   t->col)) != FGW_OK ||
		    (rc = next(ps)) != FGW_OK)
			return rc;
		if (ps->tok.kind == T_COMMA) {
			if ((rc = next(ps)) != FGW_OK)
				return rc;
		} else if (ps->tok.kind != T_RBRACK) {
			return expected(ps, "',' or ']'");
		}
	}
	return next(ps);
}

static size_t
name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

static struct plist *
find_list(struct parser *ps, const char *name)
{
	if (ps->lhcap == 0)
		return NULL;
	for (size_t i = name_hash(name) & (ps->lhcap - 1);; i = (i + 1) & (ps->lhcap - 1)) {
		uint32_t e = ps->lhash[i];
		if (e == 0)
			return NULL;
		if (strcmp(ps->lists[e - 1].name, name) == 0)
			return &ps->lists[e - 1];
	}
}

/* Indexes lists[idx] by name; the table stays at most half full. */
static int
index_list(struct parser *ps, size_t idx)
{
	if ((idx + 1) * 2 > ps->lhcap) {
		size_t ncap = ps->lhcap ? ps->lhcap * 2 : 64;
		uint32_t *nh = calloc(ncap, sizeof(*nh));
		if (nh == NULL)
			return FGW_ERR_NOMEM;
		free(ps->lhash);
		ps->lhash = nh;
		ps->lhcap = ncap;
		for (size_t j = 0; j < idx; j++)
			if (index_list(ps, j) != FGW_OK)
				return FGW_ERR_INTERNAL;
	}
	for (size_t i = name_hash(ps->lists[idx].name) & (ps->lhcap - 1);;
	     i = (i + 1) & (ps->lhcap - 1)) {
		if (ps->lhash[i] == 0) {
			ps->lhash[i] = (uint32_t)idx + 1;
			return FGW_OK;
		}
	}
}

/* list NAME = file "path" | list NAME = [ ... ] */
static int
parse_list(struct parser *ps)
{
	struct plist *l;
	int rc, line = ps->tok.line;
	char path[PATH_MAX], *text = NULL;

	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_IDENT)
		return expected(ps, "a list name");
	if (strchr(ps->tok.text, '.') || in_names(ps->tok.text, keywords) >= 0)
		return perr(ps, ps->tok.line, ps->tok.col,
		            "'%s' cannot name a list (use letters, digits and '_', and "
		            "not a keyword)",
		            ps->tok.text);
	if ((l = find_list(ps, ps->tok.text)) != NULL)
		return perr(ps, ps->tok.line, ps->tok.col,
		            "list '%s' is already defined on line %d", l->name, l->line);
	if ((rc = grow(&ps->lists, &ps->caplists, ps->nlists, sizeof(*ps->lists))) != FGW_OK)
		return rc;
	l = &ps->lists[ps->nlists++];
	memset(l, 0, sizeof(*l));
	memcpy(l->name, ps->tok.text, strlen(ps->tok.text) + 1);
	l->line = line;
	l->origin = ps->name;
	for (int i = 0; i < LC_N; i++)
		l->cache[i] = -1;
	if ((rc = index_list(ps, ps->nlists - 1)) != FGW_OK)
		return rc;
	if ((rc = next(ps)) != FGW_OK || (rc = expect(ps, T_ASSIGN, "'='")) != FGW_OK)
		return rc;
	if (ps->tok.kind == T_LBRACK)
		return parse_inline(ps, &l->items, &l->n);
	if ((rc = expect_kw(ps, "file", "'file' or '['")) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_STRING)
		return expected(ps, "a file name in quotes");
	if ((rc = resolve_path(ps, &ps->tok, path, sizeof(path))) != FGW_OK ||
	    (rc = read_named_file(ps, &ps->tok, path, "list file", &text)) != FGW_OK)
		return rc;
	if ((l->origin = arena_strdup(&ps->scratch, path, strlen(path))) == NULL) {
		rc = FGW_ERR_NOMEM;
		goto out;
	}
	if ((rc = parse_list_file(ps, l->origin, text, &l->items, &l->n)) != FGW_OK)
		goto out;
	rc = next(ps);
out:
	free(text);
	return rc;
}

/* bin_table "path" */
static int
parse_bin_table(struct parser *ps)
{
	char path[PATH_MAX], *text = NULL;
	int rc, line = ps->tok.line, col = ps->tok.col;

	if (ps->have_bins)
		return perr(ps, line, col, "only one bin_table per rules file");
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_STRING)
		return expected(ps, "a file name in quotes");
	if ((rc = resolve_path(ps, &ps->tok, path, sizeof(path))) != FGW_OK ||
	    (rc = read_named_file(ps, &ps->tok, path, "BIN table", &text)) != FGW_OK)
		return rc;
	rc = rules_bintable_load(&ps->r->bins, text, path, ps->err);
	free(text);
	if (rc != FGW_OK)
		return rc;
	ps->have_bins = 1;
	return next(ps);
}

/* ---- conditions ------------------------------------------------------------ */

static int parse_or(struct parser *ps, uint32_t *out);

/* count(dim, window) — the current token is '('. */
static int
parse_fn_args(struct parser *ps, int fn, struct operand *o)
{
	int rc, dim, wline, wcol;
	char hint[64];

	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_IDENT)
		return expected(ps, "a dimension (card, customer, ip or email)");
	if ((dim = in_names(ps->tok.text, dim_names)) < 0) {
		hint_of(ps->tok.text, dim_names, count_of(dim_names), hint, sizeof(hint));
		return perr(ps, ps->tok.line, ps->tok.col,
		            "unknown dimension '%s'%s; use card, customer, ip or email",
		            ps->tok.text, hint);
	}
	if ((rc = next(ps)) != FGW_OK || (rc = expect(ps, T_COMMA, "','")) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_DURATION)
		return expected(ps, "a window such as 30s, 10m, 24h or 7d");
	wline = ps->tok.line;
	wcol = ps->tok.col;
	if (ps->tok.num < 1000 || ps->tok.num > RULES_MAX_WINDOW_MS)
		return perr(ps, wline, wcol, "a window is between 1s and 90d");
	o->kind = OK_FN;
	o->fn = (uint8_t)fn;
	o->dim = (uint8_t)dim;
	o->window_ms = ps->tok.num;
	if ((rc = vslot_of(ps, dim, o->window_ms, wline, wcol, &o->vslot)) != FGW_OK ||
	    (rc = next(ps)) != FGW_OK)
		return rc;
	return expect(ps, T_RPAREN, "')'");
}

static void
side_of_attr(struct side *sd, int attr)
{
	const struct attr_info *a = &rules_attrs[attr];
	sd->type = a->type;
	sd->skind = a->skind;
	sd->ekind = a->ekind;
	sd->attr = attr;
	sd->name = a->name;
	sd->min = a->min;
	sd->max = a->max;
}

static int
attr_index(const char *name)
{
	for (int i = 0; i < AT_NATTRS; i++)
		if (strcmp(rules_attrs[i].name, name) == 0)
			return i;
	return -1;
}

/* An attribute or a function, the current token is its name (an IDENT).
 * Returns 1 when the name is neither (nothing consumed). */
static int
parse_attr_or_fn(struct parser *ps, struct operand *o, struct side *sd)
{
	char name[RULES_NAME_MAX + 1];
	int line = ps->tok.line, col = ps->tok.col, fn, attr, rc;

	memcpy(name, ps->tok.text, strlen(ps->tok.text) + 1);
	fn = in_names(name, fn_names);
	attr = attr_index(name);
	if (fn < 0 && attr < 0)
		return 1;
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	memset(o, 0, sizeof(*o));
	if (fn >= 0 && ps->tok.kind == T_LPAREN) {
		if ((rc = parse_fn_args(ps, fn, o)) != FGW_OK)
			return rc;
		sd->type = RT_INT;
		sd->skind = SK_ANY;
		sd->ekind = EK_NONE;
		sd->attr = -1;
		sd->name = fn_names[fn];
		sd->min = 0;
		sd->max = INT64_MAX;
		return FGW_OK;
	}
	if (attr == AT_DECLINES) {
		/* bare `declines`: declines(card, 24h) */
		o->kind = OK_FN;
		o->fn = FN_DECLINES;
		o->dim = VELOCITY_CARD;
		o->window_ms = 24LL * 3600 * 1000;
		if ((rc = vslot_of(ps, VELOCITY_CARD, o->window_ms, line, col, &o->vslot)) !=
		    FGW_OK)
			return rc;
		side_of_attr(sd, attr);
		return FGW_OK;
	}
	if (attr < 0)
		return perr(ps, line, col,
		            "%s needs a dimension and a window, e.g. %s(card, 10m)", name, name);
	o->kind = OK_ATTR;
	o->attr = (uint8_t)attr;
	side_of_attr(sd, attr);
	return FGW_OK;
}

/* The right side of a comparison, checked against the left side. */
static int
parse_rhs(struct parser *ps, const struct side *lhs, struct operand *o)
{
	struct token *t = &ps->tok;
	char msg[200], hint[64];
	int rc;

	memset(o, 0, sizeof(*o));
	o->kind = OK_CONST;
	switch (t->kind) {
	case T_IDENT: {
		struct side rs;
		int line = t->line, col = t->col;
		if ((rc = parse_attr_or_fn(ps, o, &rs)) <= 0) {
			if (rc < 0)
				return rc;
			if (rs.type != lhs->type || rs.ekind != lhs->ekind)
				return perr(ps, line, col, "cannot compare %s (%s) with %s (%s)",
				            lhs->name, type_name(lhs), rs.name, type_name(&rs));
			return FGW_OK;
		}
		if (lhs->type == RT_ENUM || lhs->type == RT_BOOL) {
			int e = enum_index(lhs->ekind, t->text);
			if (e < 0)
				return perr(ps, line, col, "'%s' is not a %s", t->text,
				            ekind_names[lhs->ekind]);
			o->ival = e;
			return next(ps);
		}
		attr_hint(t->text, hint, sizeof(hint));
		if (hint[0] == '\0' && lhs->type == RT_STR)
			snprintf(hint, sizeof(hint), " (text goes in quotes: \"%.20s\")", t->text);
		return perr(ps, line, col, "unknown attribute '%s'%s", t->text, hint);
	}
	case T_STRING:
		switch (lhs->type) {
		case RT_STR:
			if (!text_ok(lhs->skind, t->text, msg, sizeof(msg)))
				return perr(ps, t->line, t->col, "%s", msg);
			if ((o->sval = rules_arena_strdup(ps->r, t->text, t->len)) == NULL)
				return FGW_ERR_NOMEM;
			rules_ascii_lower((char *)o->sval);
			break;
		case RT_BIN: {
			size_t n;
			if (!rules_digits(t->text, &n) || n > RULES_BIN_MAX)
				return perr(ps, t->line, t->col,
				            "a BIN is 1 to %d digits "
				            "(use 'matches' or 'in' for ranges)",
				            RULES_BIN_MAX);
			if ((o->sval = rules_arena_strdup(ps->r, t->text, n)) == NULL)
				return FGW_ERR_NOMEM;
			break;
		}
		case RT_IP:
			if (rules_parse_ip(t->text, &o->ip) != 0)
				return perr(ps, t->line, t->col, "'%.60s' is not an IP address%s",
				            t->text,
				            strchr(t->text, '/')
				                ? " (use 'matches' or 'in' for CIDR ranges)"
				                : "");
			break;
		case RT_ENUM: {
			int e = enum_index(lhs->ekind, t->text);
			if (e < 0)
				return perr(ps, t->line, t->col, "'%.60s' is not a %s", t->text,
				            ekind_names[lhs->ekind]);
			o->ival = e;
			break;
		}
		default:
			return perr(ps, t->line, t->col, "%s is %s; write it without quotes",
			            lhs->name, type_name(lhs));
		}
		return next(ps);
	case T_NUMBER:
		if (lhs->type == RT_INT) {
			if (t->num < lhs->min || t->num > lhs->max)
				return perr(ps, t->line, t->col, "%s is %lld to %lld", lhs->name,
				            (long long)lhs->min, (long long)lhs->max);
			o->ival = t->num;
			return next(ps);
		}
		if (lhs->type == RT_BIN) {
			size_t n = strlen(t->text);
			if (n > RULES_BIN_MAX)
				return perr(ps, t->line, t->col, "a BIN is 1 to %d digits",
				            RULES_BIN_MAX);
			if ((o->sval = rules_arena_strdup(ps->r, t->text, n)) == NULL)
				return FGW_ERR_NOMEM;
			return next(ps);
		}
		if (lhs->type == RT_STR)
			return perr(ps, t->line, t->col, "%s is text; put it in quotes: \"%s\"",
			            lhs->name, t->text);
		return perr(ps, t->line, t->col, "%s is %s, not a number", lhs->name,
		            type_name(lhs));
	case T_RANGE:
		return perr(ps, t->line, t->col,
		            "a range goes after 'in' or 'matches', "
		            "not after a comparison");
	case T_DURATION:
		return perr(ps, t->line, t->col,
		            "a duration only goes inside count(), "
		            "sum() or declines()");
	default:
		return expected(ps, "a value or an attribute");
	}
}

/* After `in` or `matches`: a list name, an inline list, or (matches) one
 * pattern. Builds an N_IN or N_ENUM_IN node. */
static int
parse_membership(struct parser *ps, const struct operand *lhs, const struct side *sd,
                 int glob, int negate, int kwline, int kwcol, uint32_t *out)
{
	struct node n;
	struct litem *items = NULL, one;
	size_t nitems = 0;
	uint32_t set = 0;
	uint64_t mask = 0;
	int rc, slot = list_cache_slot(sd, glob);
	struct token *t = &ps->tok;

	memset(&n, 0, sizeof(n));
	n.lhs = *lhs;
	n.negate = (uint8_t)negate;
	n.type = sd->type;
	if (glob && (sd->type == RT_INT || sd->type == RT_ENUM || sd->type == RT_BOOL))
		return perr(ps, kwline, kwcol,
		            "'matches' works on text, card.bin and "
		            "ip; %s is %s (use 'in' or a comparison)",
		            sd->name, type_name(sd));
	if (sd->type == RT_BOOL)
		return perr(ps, kwline, kwcol,
		            "%s is true or false; test it with "
		            "'%s' or 'not %s'",
		            sd->name, sd->name, sd->name);
	if (t->kind == T_LBRACK) {
		if ((rc = parse_inline(ps, &items, &nitems)) != FGW_OK)
			goto out;
		rc = compile_items(ps, items, nitems, ps->name, sd, glob, &set, &mask);
	} else if (t->kind == T_IDENT) {
		struct plist *l = find_list(ps, t->text);
		if (l == NULL) {
			const char **names = calloc(ps->nlists + 1, sizeof(*names));
			char hint[64] = "";
			if (names) {
				for (size_t i = 0; i < ps->nlists; i++)
					names[i] = ps->lists[i].name;
				hint_of(t->text, names, ps->nlists, hint, sizeof(hint));
				free(names);
			}
			rc = perr(ps, t->line, t->col,
			          "unknown list '%s'%s (define it above "
			          "with: list %s = ...)",
			          t->text, hint, t->text);
			goto out;
		}
		if (slot >= 0 && l->cache[slot] >= 0) {
			set = (uint32_t)l->cache[slot];
			rc = FGW_OK;
		} else {
			rc = compile_items(ps, l->items, l->n, l->origin, sd, glob, &set, &mask);
			if (rc == FGW_OK && slot >= 0)
				l->cache[slot] = (int)set;
		}
		if (rc == FGW_OK)
			rc = next(ps);
	} else if (glob &&
	           (t->kind == T_STRING || t->kind == T_NUMBER || t->kind == T_RANGE)) {
		one.text = t->text;
		one.line = t->line;
		one.col = t->col;
		rc = compile_items(ps, &one, 1, ps->name, sd, glob, &set, &mask);
		if (rc == FGW_OK)
			rc = next(ps);
	} else {
		rc = expected(ps, glob ? "a pattern, a list name or '['" : "a list name or '['");
	}
	if (rc != FGW_OK)
		goto out;
	if (sd->type == RT_ENUM) {
		n.kind = N_ENUM_IN;
		n.mask = mask;
	} else {
		n.kind = N_IN;
		n.a = set;
	}
	rc = new_node(ps, &n, out);
out:
	free(items);
	return rc;
}

static enum cmpop
cmp_of(enum tok k)
{
	switch (k) {
	case T_EQ:
		return OP_EQ;
	case T_NE:
		return OP_NE;
	case T_LT:
		return OP_LT;
	case T_LE:
		return OP_LE;
	case T_GT:
		return OP_GT;
	default:
		return OP_GE;
	}
}

/* attribute [op value | [not] in L | [not] matches P | is [not] missing |
 * is present] */
static int
parse_test(struct parser *ps, uint32_t *out)
{
	struct node n;
	struct side sd;
	struct token *t = &ps->tok;
	char hint[64], d[80];
	int rc, line = t->line, col = t->col;

	memset(&n, 0, sizeof(n));
	memset(&sd, 0, sizeof(sd));
	if (t->kind != T_IDENT)
		return perr(ps, line, col,
		            "expected a condition such as amount > 1000, "
		            "found %s",
		            tok_desc(t, d, sizeof(d)));
	if ((rc = parse_attr_or_fn(ps, &n.lhs, &sd)) != FGW_OK) {
		if (rc < 0)
			return rc;
		attr_hint(t->text, hint, sizeof(hint));
		return perr(ps, line, col, "unknown attribute '%s'%s", t->text, hint);
	}
	n.type = sd.type;
	switch (t->kind) {
	case T_EQ:
	case T_NE:
	case T_LT:
	case T_LE:
	case T_GT:
	case T_GE: {
		int oline = t->line, ocol = t->col;
		n.kind = N_CMP;
		n.op = (uint8_t)cmp_of(t->kind);
		if (n.op != OP_EQ && n.op != OP_NE && sd.type != RT_INT)
			return perr(ps, oline, ocol,
			            "%s compares numbers; %s is %s "
			            "(use == or !=)",
			            tok_desc(t, d, sizeof(d)), sd.name, type_name(&sd));
		if ((rc = next(ps)) != FGW_OK || (rc = parse_rhs(ps, &sd, &n.rhs)) != FGW_OK)
			return rc;
		return new_node(ps, &n, out);
	}
	case T_ASSIGN:
		return perr(ps, t->line, t->col, "use '==' to compare");
	default:
		break;
	}
	if (is_kw(ps, "not") || is_kw(ps, "in") || is_kw(ps, "matches")) {
		int negate = 0;
		if (is_kw(ps, "not")) {
			negate = 1;
			if ((rc = next(ps)) != FGW_OK)
				return rc;
			if (!is_kw(ps, "in") && !is_kw(ps, "matches"))
				return expected(ps, "'in' or 'matches' after 'not'");
		}
		int glob = is_kw(ps, "matches"), kwline = t->line, kwcol = t->col;
		if ((rc = next(ps)) != FGW_OK)
			return rc;
		return parse_membership(ps, &n.lhs, &sd, glob, negate, kwline, kwcol, out);
	}
	if (is_kw(ps, "is")) {
		if ((rc = next(ps)) != FGW_OK)
			return rc;
		n.kind = N_PRESENT;
		if (is_kw(ps, "not")) {
			if ((rc = next(ps)) != FGW_OK)
				return rc;
			if (!is_kw(ps, "missing"))
				return expected(ps, "'missing'");
		} else if (is_kw(ps, "missing")) {
			n.negate = 1;
		} else if (!is_kw(ps, "present")) {
			return expected(ps, "'missing', 'not missing' or 'present'");
		}
		if ((rc = next(ps)) != FGW_OK)
			return rc;
		return new_node(ps, &n, out);
	}
	if (sd.type == RT_BOOL) {
		n.kind = N_BOOL;
		return new_node(ps, &n, out);
	}
	return perr(ps, t->line, t->col,
	            "%s needs a test after it, e.g. ==, !=, <, "
	            ">, 'in', 'matches' or 'is missing' (found %s)",
	            sd.name, tok_desc(t, d, sizeof(d)));
}

static int
parse_primary(struct parser *ps, uint32_t *out)
{
	int rc;
	if (ps->tok.kind != T_LPAREN)
		return parse_test(ps, out);
	if (++ps->depth > RULES_MAX_DEPTH)
		return perr(ps, ps->tok.line, ps->tok.col, "conditions nested more than %d deep",
		            RULES_MAX_DEPTH);
	if ((rc = next(ps)) != FGW_OK || (rc = parse_or(ps, out)) != FGW_OK ||
	    (rc = expect(ps, T_RPAREN, "')' or 'and'/'or'")) != FGW_OK)
		return rc;
	ps->depth--;
	return FGW_OK;
}

static int
parse_not(struct parser *ps, uint32_t *out)
{
	struct node n;
	int rc;
	if (!is_kw(ps, "not"))
		return parse_primary(ps, out);
	if (++ps->depth > RULES_MAX_DEPTH)
		return perr(ps, ps->tok.line, ps->tok.col, "conditions nested more than %d deep",
		            RULES_MAX_DEPTH);
	memset(&n, 0, sizeof(n));
	n.kind = N_NOT;
	if ((rc = next(ps)) != FGW_OK || (rc = parse_not(ps, &n.a)) != FGW_OK)
		return rc;
	ps->depth--;
	return new_node(ps, &n, out);
}

/* sub { kw sub } as one n-ary node (a chain of a thousand `and`s stays
 * flat, so evaluation depth is bounded by the nesting limit). */
static int
parse_chain(struct parser *ps, const char *kw, int kind,
            int (*sub)(struct parser *, uint32_t *), uint32_t *out)
{
	uint32_t first, *tmp = NULL;
	size_t n = 0, cap = 0;
	struct node nd;
	struct rules *r = ps->r;
	int rc;

	if ((rc = sub(ps, &first)) != FGW_OK)
		return rc;
	if (!is_kw(ps, kw)) {
		*out = first;
		return FGW_OK;
	}
	if ((rc = grow(&tmp, &cap, n, sizeof(*tmp))) != FGW_OK)
		goto out;
	tmp[n++] = first;
	while (is_kw(ps, kw)) {
		uint32_t c;
		if ((rc = next(ps)) != FGW_OK || (rc = sub(ps, &c)) != FGW_OK ||
		    (rc = grow(&tmp, &cap, n, sizeof(*tmp))) != FGW_OK)
			goto out;
		tmp[n++] = c;
	}
	while (r->nkids + n > ps->capkids)
		if ((rc = grow(&r->kids, &ps->capkids, ps->capkids, sizeof(*r->kids))) != FGW_OK)
			goto out;
	memset(&nd, 0, sizeof(nd));
	nd.kind = (uint8_t)kind;
	nd.a = (uint32_t)r->nkids;
	nd.b = (uint32_t)n;
	memcpy(r->kids + r->nkids, tmp, n * sizeof(*tmp));
	r->nkids += n;
	rc = new_node(ps, &nd, out);
out:
	free(tmp);
	return rc;
}

static int
parse_and(struct parser *ps, uint32_t *out)
{
	return parse_chain(ps, "and", N_AND, parse_not, out);
}

static int
parse_or(struct parser *ps, uint32_t *out)
{
	return parse_chain(ps, "or", N_OR, parse_and, out);
}

/* ---- statements ------------------------------------------------------------ */

static int
valid_code(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= sizeof(((struct rrule *)0)->code) || s[0] < 'A' || s[0] > 'Z')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || is_digit(s[i]) || s[i] == '_'))
			return 0;
	return 1;
}

/* rule ID ["description"] ":" when COND then ACTION */
static int
parse_rule(struct parser *ps)
{
	struct rules *r = ps->r;
	struct rrule *ru;
	char hint[64], d[80];
	int rc, act;

	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if ((rc = grow(&r->rules, &ps->caprules, r->nrules, sizeof(*r->rules))) != FGW_OK)
		return rc;
	ru = &r->rules[r->nrules];
	memset(ru, 0, sizeof(*ru));
	if (ps->tok.kind != T_IDENT && ps->tok.kind != T_NUMBER)
		return expected(ps, "a rule id such as R100");
	if (strlen(ps->tok.text) >= sizeof(ru->id))
		return perr(ps, ps->tok.line, ps->tok.col, "rule id longer than %zu characters",
		            sizeof(ru->id) - 1);
	if (in_names(ps->tok.text, keywords) >= 0)
		return perr(ps, ps->tok.line, ps->tok.col,
		            "'%s' is a keyword; give the rule an id such as R100", ps->tok.text);
	memcpy(ru->id, ps->tok.text, strlen(ps->tok.text) + 1);
	ru->line = ps->tok.line;
	ru->col = ps->tok.col;
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (ps->tok.kind == T_STRING) {
		if ((ru->desc = rules_arena_strdup(r, ps->tok.text, ps->tok.len)) == NULL)
			return FGW_ERR_NOMEM;
		if ((rc = next(ps)) != FGW_OK)
			return rc;
	}
	if ((rc = expect(ps, T_COLON, "':' (or a description in quotes)")) != FGW_OK ||
	    (rc = expect_kw(ps, "when", "'when'")) != FGW_OK ||
	    (rc = parse_or(ps, &ru->cond)) != FGW_OK)
		return rc;
	if (!is_kw(ps, "then"))
		return expected(ps, "'and', 'or' or 'then'");
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (ps->tok.kind != T_IDENT || (act = in_names(ps->tok.text, action_names)) < 0) {
		hint_of(ps->tok.kind == T_IDENT ? ps->tok.text : "", action_names,
		        count_of(action_names), hint, sizeof(hint));
		return perr(ps, ps->tok.line, ps->tok.col,
		            "expected an action (allow, decline CODE, review or "
		            "require_3ds), found %s%s",
		            tok_desc(&ps->tok, d, sizeof(d)), hint);
	}
	ru->action = (uint8_t)act;
	if ((rc = next(ps)) != FGW_OK)
		return rc;
	if (act == RULES_DECLINE) {
		if (ps->tok.kind != T_IDENT || !valid_code(ps->tok.text))
			return perr(ps, ps->tok.line, ps->tok.col,
			            "decline needs a reason code in capitals (A-Z, 0-9, _; "
			            "at most %zu), e.g. decline VELOCITY_LIMIT",
			            sizeof(ru->code) - 1);
		memcpy(ru->code, ps->tok.text, strlen(ps->tok.text) + 1);
		if ((rc = next(ps)) != FGW_OK)
			return rc;
	}
	r->nrules++;
	return FGW_OK;
}

static int
cmp_rule_ptr(const void *a, const void *b)
{
	const struct rrule *x = *(const struct rrule *const *)a;
	const struct rrule *y = *(const struct rrule *const *)b;
	int c = strcmp(x->id, y->id);
	if (c)
		return c;
	return x->line != y->line ? (x->line < y->line ? -1 : 1)
	                          : (x->col < y->col ? -1 : x->col > y->col);
}

static int
check_duplicate_ids(struct parser *ps)
{
	struct rules *r = ps->r;
	const struct rrule **v;
	int rc = FGW_OK;
	if (r->nrules < 2)
		return FGW_OK;
	if ((v = calloc(r->nrules, sizeof(*v))) == NULL)
		return FGW_ERR_NOMEM;
	for (size_t i = 0; i < r->nrules; i++)
		v[i] = &r->rules[i];
	qsort(v, r->nrules, sizeof(*v), cmp_rule_ptr);
	for (size_t i = 1; i < r->nrules; i++) {
		if (strcmp(v[i]->id, v[i - 1]->id) == 0) {
			/* report the later one in the file */
			const struct rrule *later = v[i], *first = v[i - 1];
			rc = perr(ps, later->line, later->col,
			          "rule id '%s' is already used on line %d", later->id, first->line);
			break;
		}
	}
	free(v);
	return rc;
}

/* Sorts the cached velocity slots into per-dimension groups. */
static void
group_windows(struct rules *r)
{
	for (size_t i = 0; i < r->nvslots && i < RULES_VSLOTS; i++) {
		struct vgroup *g = &r->vgroups[r->vslots[i].dim];
		uint32_t j = g->n++;
		/* insertion by window; windows within a dimension are distinct */
		while (j > 0 && g->window_ms[j - 1] > r->vslots[i].window_ms) {
			g->window_ms[j] = g->window_ms[j - 1];
			g->slot[j] = g->slot[j - 1];
			j--;
		}
		g->window_ms[j] = r->vslots[i].window_ms;
		g->slot[j] = (uint8_t)i;
	}
}

int
rules_compile(struct rules *r, const char *text, const char *name, const char *base_dir,
              const struct rules_load_opts *opts, struct fgw_why *err)
{
	struct parser *ps;
	char hint[64], d[80];
	int rc;

	if ((ps = calloc(1, sizeof(*ps))) == NULL)
		return FGW_ERR_NOMEM;
	ps->p = text;
	ps->line = 1;
	ps->col = 1;
	ps->name = name;
	ps->base_dir = base_dir;
	ps->opts = opts;
	ps->max_bytes = opts && opts->max_file_bytes ? opts->max_file_bytes : 16u << 20;
	ps->r = r;
	ps->err = err;
	if ((rc = next(ps)) != FGW_OK)
		goto out;
	while (ps->tok.kind != T_EOF) {
		if (is_kw(ps, "rule"))
			rc = parse_rule(ps);
		else if (is_kw(ps, "list"))
			rc = parse_list(ps);
		else if (is_kw(ps, "bin_table"))
			rc = parse_bin_table(ps);
		else {
			hint[0] = '\0';
			if (ps->tok.kind == T_IDENT)
				hint_of(ps->tok.text, stmt_names, count_of(stmt_names), hint,
				        sizeof(hint));
			rc = perr(ps, ps->tok.line, ps->tok.col,
			          "expected 'rule', 'list' or 'bin_table', found %s%s",
			          tok_desc(&ps->tok, d, sizeof(d)), hint);
		}
		if (rc != FGW_OK)
			goto out;
	}
	if ((rc = check_duplicate_ids(ps)) != FGW_OK)
		goto out;
	group_windows(r);
out:
	for (size_t i = 0; i < ps->nlists; i++)
		free(ps->lists[i].items);
	free(ps->lists);
	free(ps->lhash);
	rules_arena_free(ps->scratch);
	free(ps);
	return rc;
}
