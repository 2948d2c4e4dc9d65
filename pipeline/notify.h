/*
 * pipeline/notify.h — e-mail notifications: operator-editable templates,
 * MIME rendering and the durable outbox row (store/mail.h) that the
 * gateway's mail sender delivers later.
 *
 * notify_init loads every template at start-up and refuses one that names
 * a placeholder its kind does not have; afterwards the state is read-only
 * and notify_mail may be called from any reactor. A mail is rendered in
 * full when it is queued: what the outbox holds is what is sent.
 *
 * Templates: DIR/KIND.txt is "Subject: ..." on its first line, an empty
 * line, then the text body; DIR/KIND.html is the HTML body. {{name}} is a
 * placeholder; values are HTML-escaped in the HTML part. Card data never
 * reaches a template: the kinds offer last4 and brand, nothing more.
 */
#ifndef FGW_PIPELINE_NOTIFY_H
#define FGW_PIPELINE_NOTIFY_H

#include <stddef.h>

struct store;
struct store_waker;

struct notify_var {
	const char *name;
	const char *value;
};

/* One API client's sender and alert addresses. */
struct notify_client {
	const char *client_id;
	const char *from;
	const char *admin; /* "" or NULL: the default admin */
};

struct fgw_why;

struct notify_opts {
	const char *templates_dir;
	const char *from;  /* default sender */
	const char *admin; /* default alert address; "" or NULL: none */
	const struct notify_client *clients;
	size_t n_clients;
};

/* Loads and checks the templates and addresses; why names the template
 * file and line, or the directive. Start-up only. */
int notify_init(const struct notify_opts *o, struct fgw_why *why);
/* Forgets the templates (shutdown, tests). */
void notify_reset(void);
/* 1 once notify_init succeeded. */
int notify_enabled(void);

/* 1 when addr is an address notifications may go to or come from:
 * local@domain in the plain RFC 5321 form, no quoting, comments, spaces
 * or control characters, at most 254 bytes. */
int notify_addr_ok(const char *addr);

/* Renders kind for to (a customer) or, with to NULL, for the client's
 * operators, and queues it with an audit event. dedupe (NULL: none) names
 * the mail's occasion: a second mail with the same one is dropped by the
 * outbox (an event heard twice sends one mail). 0 when queued;
 * FGW_ERR_NOT_FOUND when nobody is to hear it (no admin address, mail not
 * configured); FGW_ERR_INVALID for a bad address, an unknown kind or a
 * value with a control character. Never blocks. */
int notify_mail(struct store *st, struct store_waker *w, const char *kind,
                const char *client_id, const char *to, const char *txn_id,
                const char *dedupe, const struct notify_var *vars, size_t n);

/* The message notify_mail would queue, into *out (caller frees), and its
 * subject; for tests. now_ms sets the Date header. */
int notify_render(const char *kind, const char *from, const char *to,
                  const struct notify_var *vars, size_t n, long long now_ms, char **out,
                  char *subject, size_t subject_len);

#endif
