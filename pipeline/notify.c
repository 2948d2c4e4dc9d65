/*
 * pipeline/notify.c — templates, MIME and the outbox row of a notification
 * (see pipeline/notify.h).
 *
 * Layout: the kinds and their placeholders, a growable buffer, address
 * checks, template loading, rendering (placeholders, RFC 2047 subject,
 * quoted-printable parts, multipart/alternative), queueing.
 *
 * Every line of the message ends in CRLF and no line is longer than 76
 * characters, whatever the template: bodies are quoted-printable, the
 * subject is encoded-words when it is not plain ASCII. Dot-stuffing is
 * the SMTP client's job (libcurl does it), so a line may start with '.'.
 */
#define LOG_MODULE "notify"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "pipeline/notify.h"
#include "store/mail.h"

#define TEMPLATE_MAX 65536
#define MAX_CLIENTS 16

struct kind {
	const char *name;
	const char *audience; /* customer | admin */
	const char *vars;     /* placeholders it offers, space-separated */
};

/* Every kind offers {{client}} too. */
static const struct kind kinds[] = {
	{ "receipt", "customer", "name reference description amount last4 brand txn_id" },
	{ "booking_confirmed", "customer",
	  "name reference experience time guests amount last4 brand reservation_id" },
	{ "refund", "customer", "name reference amount last4 brand txn_id reservation_id" },
	{ "hold_expired", "customer", "name reference experience time guests" },
	{ "hold_cancelled", "customer", "name reference experience time guests" },
	{ "admin_failure_rate", "admin", "failed window pct threshold" },
	{ "admin_manual_review", "admin", "txn_id operation reason attempts" },
	{ "admin_webhook_abandoned", "admin",
	  "outbox_id url event_type txn_id error attempts" },
	{ "admin_backup_failed", "admin", "dir error" },
	{ "admin_reconcile_stuck", "admin", "count oldest_txn minutes" },
};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

struct tmpl {
	char *subject;
	char *text;
	char *html;
};

static struct {
	int up;
	struct tmpl t[N_KINDS];
	char from[256];
	char admin[256];
	struct {
		char client_id[64];
		char from[256];
		char admin[256];
	} clients[MAX_CLIENTS];
	size_t n_clients;
} g;

/* ---- buffer ------------------------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->err)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL) {
			b->err = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void
sb_fmt(struct sbuf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->err = 1;
		return;
	}
	sb_add(b, tmp, (size_t)n);
}

/* ---- addresses --------------------------------------------------------- */

int
notify_addr_ok(const char *a)
{
	static const char local_ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                               "0123456789.!#$%&'*+/=?^_`{|}~-";
	const char *at, *d, *label;
	size_t n;
	if (a == NULL || (n = strlen(a)) == 0 || n > 254 || (at = strchr(a, '@')) == NULL ||
	    strchr(at + 1, '@') != NULL)
		return 0;
	n = (size_t)(at - a);
	if (n == 0 || n > 64 || strspn(a, local_ok) != n || a[0] == '.' || a[n - 1] == '.')
		return 0;
	for (size_t i = 0; i + 1 < n; i++)
		if (a[i] == '.' && a[i + 1] == '.')
			return 0;
	/* Domain: dot-separated labels of letters, digits and inner hyphens,
	 * at least two of them. */
	d = at + 1;
	if (strchr(d, '.') == NULL)
		return 0;
	label = d;
	for (const char *p = d;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t ln = (size_t)(p - label);
			if (ln == 0 || ln > 63 || label[0] == '-' || p[-1] == '-')
				return 0;
			if (*p == '\0')
				break;
			label = p + 1;
		} else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		             (*p >= '0' && *p <= '9') || *p == '-')) {
			return 0;
		}
	}
	return 1;
}

/* ---- templates --------------------------------------------------------- */

static const struct kind *
find_kind(const char *name, size_t *idx)
{
	for (size_t i = 0; i < N_KINDS; i++)
		if (strcmp(kinds[i].name, name) == 0) {
			if (idx != NULL)
				*idx = i;
			return &kinds[i];
		}
	return NULL;
}

static int
kind_has(const struct kind *k, const char *name, size_t len)
{
	const char *p = k->vars;
	if (len == 6 && strncmp(name, "client", 6) == 0)
		return 1;
	while (*p) {
		size_t wl = strcspn(p, " ");
		if (wl == len && strncmp(p, name, len) == 0)
			return 1;
		p += wl;
		p += strspn(p, " ");
	}
	return 0;
}

/* Every {{...}} in s names a placeholder of k, and braces pair up. */
static int
check_placeholders(const struct kind *k, const char *s, const char *path,
                   struct fgw_why *why)
{
	const char *p = s, *end;
	int line = 1;
	for (; *p; p++) {
		if (*p == '\n')
			line++;
		if (p[0] != '{' || p[1] != '{')
			continue;
		if ((end = strstr(p + 2, "}}")) == NULL ||
		    memchr(p + 2, '\n', (size_t)(end - p - 2))) {
			fgw_why_set(why, path, line, 0, "unterminated {{");
			return FGW_ERR_INVALID;
		}
		if (!kind_has(k, p + 2, (size_t)(end - p - 2))) {
			fgw_why_set(why, path, line, 0,
			            "unknown placeholder {{%.*s}} (this mail offers: client %s)",
			            (int)(end - p - 2 > 40 ? 40 : end - p - 2), p + 2, k->vars);
			return FGW_ERR_INVALID;
		}
		p = end + 1;
	}
	return FGW_OK;
}

static int
load_kind(const char *dir, size_t i, struct fgw_why *why)
{
	const struct kind *k = &kinds[i];
	struct tmpl *t = &g.t[i];
	char path[600], *text = NULL, *nl;
	size_t len;
	int r;

	snprintf(path, sizeof(path), "%s/%s.txt", dir, k->name);
	if ((r = fgw_read_file(path, TEMPLATE_MAX, &text, &len)) != 0) {
		fgw_why_set(why, path, 0, 0, "%s", fgw_strerror(r));
		return r;
	}
	if (strlen(text) != len || strncmp(text, "Subject: ", 9) != 0 ||
	    (nl = strchr(text, '\n')) == NULL ||
	    (nl[1] != '\n' && !(nl[1] == '\r' && nl[2] == '\n'))) {
		fgw_why_set(why, path, 0, 0,
		            "must start with a \"Subject: ...\" line and an empty line");
		free(text);
		return FGW_ERR_INVALID;
	}
	*nl = '\0';
	if (nl > text && nl[-1] == '\r')
		nl[-1] = '\0';
	if ((t->subject = strdup(text + 9)) == NULL ||
	    (t->text = strdup(nl + (nl[1] == '\r' ? 3 : 2))) == NULL) {
		free(text);
		return FGW_ERR_NOMEM;
	}
	free(text);
	if ((r = check_placeholders(k, t->subject, path, why)) != 0 ||
	    (r = check_placeholders(k, t->text, path, why)) != 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s.html", dir, k->name);
	if ((r = fgw_read_file(path, TEMPLATE_MAX, &t->html, &len)) != 0) {
		fgw_why_set(why, path, 0, 0, "%s", fgw_strerror(r));
		return r;
	}
	if (strlen(t->html) != len) {
		fgw_why_set(why, path, 0, 0, "holds a NUL byte");
		return FGW_ERR_INVALID;
	}
	return check_placeholders(k, t->html, path, why);
}

void
notify_reset(void)
{
	for (size_t i = 0; i < N_KINDS; i++) {
		free(g.t[i].subject);
		free(g.t[i].text);
		free(g.t[i].html);
	}
	memset(&g, 0, sizeof(g));
}

int
notify_enabled(void)
{
	return g.up;
}

int
notify_init(const struct notify_opts *o, struct fgw_why *why)
{
	int r;
	notify_reset();
	if (!notify_addr_ok(o->from)) {
		fgw_why_set(why, "mail_from", 0, 0, "\"%.64s\" is not a plain e-mail address",
		            o->from ? o->from : "");
		return FGW_ERR_INVALID;
	}
	if (o->admin != NULL && o->admin[0] != '\0' && !notify_addr_ok(o->admin)) {
		fgw_why_set(why, "mail_admin", 0, 0, "\"%.64s\" is not a plain e-mail address",
		            o->admin);
		return FGW_ERR_INVALID;
	}
	if (o->n_clients > MAX_CLIENTS)
		return FGW_ERR_TOO_LARGE;
	fgw_strlcpy(g.from, o->from, sizeof(g.from));
	fgw_strlcpy(g.admin, o->admin ? o->admin : "", sizeof(g.admin));
	for (size_t i = 0; i < o->n_clients; i++) {
		const struct notify_client *c = &o->clients[i];
		if (!notify_addr_ok(c->from) ||
		    (c->admin != NULL && c->admin[0] != '\0' && !notify_addr_ok(c->admin))) {
			fgw_why_set(why, "mail_client", 0, 0,
			            "%.64s: FROM and ADMIN must be plain e-mail addresses",
			            c->client_id);
			notify_reset();
			return FGW_ERR_INVALID;
		}
		fgw_strlcpy(g.clients[i].client_id, c->client_id, sizeof(g.clients[i].client_id));
		fgw_strlcpy(g.clients[i].from, c->from, sizeof(g.clients[i].from));
		fgw_strlcpy(g.clients[i].admin, c->admin ? c->admin : "",
		            sizeof(g.clients[i].admin));
	}
	g.n_clients = o->n_clients;
	for (size_t i = 0; i < N_KINDS; i++) {
		if ((r = load_kind(o->templates_dir, i, why)) != 0) {
			notify_reset();
			return r;
		}
	}
	g.up = 1;
	return FGW_OK;
}

/* ---- rendering --------------------------------------------------------- */

static const char *
var_value(const struct notify_var *vars, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(vars[i].name) == len && strncmp(vars[i].name, name, len) == 0)
			return vars[i].value ? vars[i].value : "";
	return "";
}

static void
html_escape(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			sb_str(b, "&amp;");
			break;
		case '<':
			sb_str(b, "&lt;");
			break;
		case '>':
			sb_str(b, "&gt;");
			break;
		case '"':
			sb_str(b, "&quot;");
			break;
		case '\'':
			sb_str(b, "&#39;");
			break;
		default:
			sb_add(b, s, 1);
		}
	}
}

static void
expand(struct sbuf *b, const char *t, const struct notify_var *vars, size_t n, int html)
{
	const char *p = t, *open, *end;
	while ((open = strstr(p, "{{")) != NULL && (end = strstr(open + 2, "}}")) != NULL) {
		const char *v = var_value(vars, n, open + 2, (size_t)(end - open - 2));
		sb_add(b, p, (size_t)(open - p));
		if (html)
			html_escape(b, v);
		else
			sb_str(b, v);
		p = end + 2;
	}
	sb_str(b, p);
}

/* Quoted-printable (RFC 2045 6.7): CRLF line breaks, soft breaks before
 * column 76, trailing white space encoded. */
static void
qp_encode(struct sbuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		char enc[4];
		size_t el;
		if (c == '\r')
			continue;
		if (c == '\n') {
			sb_str(b, "\r\n");
			col = 0;
			continue;
		}
		if ((c >= 33 && c <= 126 && c != '=') ||
		    ((c == ' ' || c == '\t') && p[1] != '\n' && p[1] != '\r' && p[1] != '\0')) {
			enc[0] = (char)c;
			el = 1;
		} else {
			enc[0] = '=';
			enc[1] = hex[c >> 4];
			enc[2] = hex[c & 15];
			el = 3;
		}
		if (col + el > 75) {
			sb_str(b, "=\r\n");
			col = 0;
		}
		sb_add(b, enc, el);
		col += el;
	}
	if (col > 0)
		sb_str(b, "\r\n");
}

/* Subject: as is when printable ASCII, else RFC 2047 B encoded-words of
 * whole UTF-8 characters, each line short enough. */
static int
subject_header(struct sbuf *b, const char *s)
{
	size_t n = strlen(s), i = 0;
	int ascii = n <= 900;
	for (size_t k = 0; k < n; k++)
		if ((unsigned char)s[k] < 32 || (unsigned char)s[k] > 126)
			ascii = 0;
	if (ascii && n <= 66 && strstr(s, "=?") == NULL) {
		sb_fmt(b, "Subject: %s\r\n", s);
		return 0;
	}
	sb_str(b, "Subject:");
	while (i < n) {
		size_t take = 0;
		char *enc = NULL;
		/* 39 bytes make 52 base64 characters: with "Subject: ",
		 * "=?UTF-8?B?" and "?=" a line stays under 76. */
		while (i + take < n) {
			size_t cl = 1;
			unsigned char c = (unsigned char)s[i + take];
			if (c >= 0xF0)
				cl = 4;
			else if (c >= 0xE0)
				cl = 3;
			else if (c >= 0xC0)
				cl = 2;
			if (take + cl > 39 || i + take + cl > n)
				break;
			take += cl;
		}
		if (take == 0 || fgw_b64_encode(s + i, take, &enc) != 0)
			return FGW_ERR_INVALID;
		sb_fmt(b, " =?UTF-8?B?%s?=\r\n", enc);
		free(enc);
		i += take;
	}
	return 0;
}

int
notify_render(const char *kind, const char *from, const char *to,
              const struct notify_var *vars, size_t n, long long now_ms, char **out,
              char *subject, size_t subject_len)
{
	const struct kind *k;
	const struct tmpl *t;
	struct sbuf subj = { 0 }, body = { 0 }, msg = { 0 };
	char boundary[48], mid[48], date[64];
	const char *domain;
	time_t secs = (time_t)(now_ms / 1000);
	struct tm tm;
	size_t idx = 0;
	int r = FGW_ERR_INVALID;

	*out = NULL;
	if (!g.up || (k = find_kind(kind, &idx)) == NULL || !notify_addr_ok(from) ||
	    !notify_addr_ok(to))
		goto out;
	/* No value may bring a line break or another control character into
	 * a header (header injection) or the layout of a part. */
	for (size_t i = 0; i < n; i++)
		for (const char *p = vars[i].value ? vars[i].value : ""; *p; p++)
			if ((unsigned char)*p < 32 || *p == 127)
				goto out;
	t = &g.t[idx];
	expand(&subj, t->subject, vars, n, 0);
	if (subj.err)
		goto nomem;
	if (gmtime_r(&secs, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
		goto out;
	domain = strchr(from, '@') + 1;
	fgw_random_id("=_fgw_", boundary, sizeof(boundary));
	fgw_random_id("", mid, sizeof(mid));
	sb_fmt(&msg, "Date: %s\r\n", date);
	sb_fmt(&msg, "Message-ID: <%s@%s>\r\n", mid, domain);
	sb_fmt(&msg, "From: <%s>\r\n", from);
	sb_fmt(&msg, "To: <%s>\r\n", to);
	if (subject_header(&msg, subj.p ? subj.p : "") != 0)
		goto out;
	sb_str(&msg, "MIME-Version: 1.0\r\n");
	sb_str(&msg, "Auto-Submitted: auto-generated\r\n");
	sb_fmt(&msg, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n",
	       boundary);
	sb_fmt(&msg, "--%s\r\n", boundary);
	sb_str(&msg, "Content-Type: text/plain; charset=UTF-8\r\n"
	             "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	expand(&body, t->text, vars, n, 0);
	if (body.err)
		goto nomem;
	qp_encode(&msg, body.p ? body.p : "");
	body.len = 0;
	if (body.p != NULL)
		body.p[0] = '\0';
	sb_fmt(&msg, "--%s\r\n", boundary);
	sb_str(&msg, "Content-Type: text/html; charset=UTF-8\r\n"
	             "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	expand(&body, t->html, vars, n, 1);
	if (body.err)
		goto nomem;
	qp_encode(&msg, body.p ? body.p : "");
	sb_fmt(&msg, "--%s--\r\n", boundary);
	if (msg.err)
		goto nomem;
	if (subject != NULL)
		(void)fgw_strlcpy(subject, subj.p ? subj.p : "", subject_len);
	*out = msg.p;
	msg.p = NULL;
	r = 0;
	goto out;
nomem:
	r = FGW_ERR_NOMEM;
out:
	free(subj.p);
	free(body.p);
	free(msg.p);
	return r;
}

/* ---- queueing ---------------------------------------------------------- */

static void
on_queued(void *arg, int rc)
{
	/* No heap argument: the store drops the callbacks of jobs still
	 * queued when the daemon stops. */
	(void)arg;
	if (rc == FGW_ERR_EXISTS)
		log_debug("a mail not queued: its occasion had its mail already");
	else if (rc != 0)
		log_error("a mail not queued: %s", fgw_strerror(rc));
}

int
notify_mail(struct store *st, struct store_waker *w, const char *kind,
            const char *client_id, const char *to, const char *txn_id, const char *dedupe,
            const struct notify_var *vars, size_t n)
{
	struct store_mail_row row;
	struct store_audit audit;
	const struct kind *k;
	const char *from = g.from, *admin = g.admin;
	char details[160];
	int r;

	if (!g.up)
		return FGW_ERR_NOT_FOUND;
	if ((k = find_kind(kind, NULL)) == NULL)
		return FGW_ERR_INVALID;
	for (size_t i = 0; client_id != NULL && i < g.n_clients; i++)
		if (strcmp(g.clients[i].client_id, client_id) == 0) {
			from = g.clients[i].from;
			if (g.clients[i].admin[0] != '\0')
				admin = g.clients[i].admin;
		}
	if (strcmp(k->audience, "admin") == 0)
		to = admin;
	if (to == NULL || to[0] == '\0')
		return FGW_ERR_NOT_FOUND;
	if (!notify_addr_ok(to))
		return FGW_ERR_INVALID;
	memset(&row, 0, sizeof(row));
	fgw_random_id("mail_", row.id, sizeof(row.id));
	fgw_strlcpy(row.kind, kind, sizeof(row.kind));
	fgw_strlcpy(row.audience, k->audience, sizeof(row.audience));
	fgw_strlcpy(row.client_id, client_id ? client_id : "", sizeof(row.client_id));
	fgw_strlcpy(row.txn_id, txn_id ? txn_id : "", sizeof(row.txn_id));
	fgw_strlcpy(row.mail_from, from, sizeof(row.mail_from));
	fgw_strlcpy(row.rcpt_to, to, sizeof(row.rcpt_to));
	if (dedupe != NULL &&
	    fgw_strlcpy(row.dedupe_key, dedupe, sizeof(row.dedupe_key)) != 0)
		return FGW_ERR_INVALID;
	if ((r = notify_render(kind, from, to, vars, n, (long long)fgw_now_ms(), &row.message,
	                       row.subject, sizeof(row.subject))) != 0)
		return r;
	/* The address is personal data: the audit names the mail, not it. */
	snprintf(details, sizeof(details),
	         "{\"mailId\":\"%s\",\"kind\":\"%s\",\"audience\":\"%s\"}", row.id, row.kind,
	         row.audience);
	audit = (struct store_audit){ "system",      "local",
		                          "mail.queued", row.txn_id[0] ? row.txn_id : row.id,
		                          "success",     details };
	r = store_mail_enqueue(st, w, &row, &audit, 1, on_queued, NULL);
	free(row.message);
	return r;
}
