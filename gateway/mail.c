/*
 * gateway/mail.c — e-mail notifications: set-up, the listeners that queue
 * customer mail and the payment-failure alert, and the SMTP sender.
 *
 * Queueing happens on the reactor that committed a state change: the
 * listener renders the mail (pipeline/notify.c) and submits its outbox row
 * as a store job, and returns; it never waits for the row or the server.
 * What it must read first (a guest's address, a booking's slot) it reads
 * through store_read, off the reactor on PostgreSQL, and queues the mail
 * from the read's completion.
 *
 * Delivery runs on a thread of its own, never on a reactor: it claims due
 * rows (store_mail_claim: a store job that leases them to this instance,
 * so no sender of another instance on the same database sends them at the
 * same time; one that dies leaves them due again once the lease ends),
 * sends one batch (at most mail_concurrency
 * at once) with a libcurl multi handle, bounded by mail_timeout_ms, then
 * records every attempt in a store job and waits for those commits before
 * reading again, so a row is never sent twice at once. A refusal (4xx or
 * 5xx), a dropped connection or a timeout backs off exponentially from
 * mail_retry_base_ms until mail_max_age_s after the mail was queued; then
 * the row is failed and audited (`flairctl mail retry ID` makes it
 * pending again). A slow or dead mail server therefore holds up only this
 * thread: payments never wait for it.
 */
#define LOG_MODULE "mail"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "gateway/gateway.h"
#include "gateway/mail.h"
#include "gateway/outbox.h"
#include "pipeline/events.h"
#include "pipeline/notify.h"
#include "store/mail.h"
#include "store/reservations.h"

#define PASSWORD_MAX 1024
#define BATCH_MAX 16
#define SCAN_MS 2000 /* ended holds, stuck payments */

/* The failure-rate alert: the outcomes of the last payments of a client. */
#define RATE_CLIENTS 16
#define RATE_WINDOW_MAX 10000
struct rate {
	char client_id[64];
	unsigned char *ring; /* 1: failed or declined */
	long long n, pos, failed;
	long long quiet; /* payments to wait before the next alert */
};

struct mail {
	struct gateway *gw;
	struct secbuf *password;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int recording; /* attempt jobs not yet committed */
	int claimed;   /* the claim job's done ran */
	int claim_rc;
	struct rate rates[RATE_CLIENTS];
	int n_rates;
};

/* ---- set-up ------------------------------------------------------------ */

/* ---- listeners (any reactor) ------------------------------------------- */

/* Currencies whose amounts have no minor unit (ISO 4217 exponent 0). */
static int
zero_decimal(const char *cur)
{
	static const char *const z[] = { "BIF", "CLP", "DJF", "GNF", "ISK", "JPY",
		                             "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
		                             "VUV", "XAF", "XOF", "XPF" };
	for (size_t i = 0; i < sizeof(z) / sizeof(z[0]); i++)
		if (strcmp(cur, z[i]) == 0)
			return 1;
	return 0;
}

static void
format_amount(int64_t minor, const char *cur, char *out, size_t cap)
{
	if (zero_decimal(cur))
		snprintf(out, cap, "%lld %s", (long long)minor, cur);
	else
		snprintf(out, cap, "%s%lld.%02lld %s", minor < 0 ? "-" : "",
		         (long long)(minor < 0 ? -minor : minor) / 100,
		         (long long)(minor < 0 ? -minor : minor) % 100, cur);
}

static void
format_time(int64_t ms, char *out, size_t cap)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (ms <= 0 || gmtime_r(&s, &tm) == NULL ||
	    strftime(out, cap, "%A %d %B %Y, %H:%M UTC", &tm) == 0)
		fgw_strlcpy(out, "", cap);
}

/* Queues a receipt or a refund mail of row to `to` (greeting name). */
static void
customer_mail_to(const struct pipeline_env *env, const struct store_txn_row *row,
                 const char *kind, const char *to, const char *name)
{
	char amount[48], once[64];
	const char *reference = row->reservation_id[0] ? row->reservation_id : row->id;
	int r;

	if (to[0] == '\0')
		return; /* nobody to tell */
	if (!notify_addr_ok(to)) {
		log_txn_warn(row->id, "no %s mail: the customer's e-mail address is not usable",
		             kind);
		return;
	}
	format_amount(row->amount, row->currency, amount, sizeof(amount));
	snprintf(once, sizeof(once), "%s:%s", kind, row->id);
	{
		struct notify_var v[] = {
			{ "name", name[0] ? name : "customer" },
			{ "reference", reference },
			{ "description", row->description },
			{ "amount", amount },
			{ "last4", row->last4 },
			{ "brand", row->brand[0] ? row->brand : "card" },
			{ "txn_id", row->id },
			{ "reservation_id", row->reservation_id },
			{ "client", row->client_id },
		};
		if ((r = notify_mail(env->store, env->waker, kind, row->client_id, to, row->id,
		                     once, v, sizeof(v) / sizeof(v[0]))) != 0 &&
		    r != FGW_ERR_NOT_FOUND)
			log_txn_warn(row->id, "%s mail not queued: %s", kind, fgw_strerror(r));
	}
}

/* A payment with no address of its own, for a reservation: the guest's
 * address is read through store_read (off the reactor on PostgreSQL),
 * the mail queued when it is in. */
struct guest_read {
	const struct pipeline_env *env;
	const char *kind;         /* a string constant */
	struct store_txn_row row; /* a copy without its owned pointers */
	struct resv_row res;
};

/* On a read thread (PostgreSQL) or in place (SQLite): only g's fields. */
static int
guest_read_run(struct store_reader *rd, void *arg)
{
	struct guest_read *g = arg;

	return resv_get(rd, NULL, g->row.reservation_id, &g->res);
}

static void
guest_read_done(void *arg, int rc)
{
	struct guest_read *g = arg;
	const char *name = g->row.customer_name;

	if (rc == 0 && strcmp(g->res.client_id, g->row.client_id) == 0) {
		if (name[0] == '\0')
			name = g->res.guest_name;
		customer_mail_to(g->env, &g->row, g->kind, g->res.guest_email, name);
	}
	free(g);
}

/* A receipt or a refund to the customer who paid (once per payment). */
static void
customer_mail(const struct pipeline_env *env, const struct store_txn_row *row,
              const char *kind)
{
	struct guest_read *g = NULL;

	/* A reservation's payment may carry no address: the guest's then. */
	if (row->customer_email[0] == '\0' && row->reservation_id[0] != '\0') {
		if (env->reader == NULL || (g = calloc(1, sizeof(*g))) == NULL)
			return;
		g->env = env;
		g->kind = kind;
		g->row = *row;
		g->row.metadata_json = NULL;
		g->row.next_action_json = NULL;
		if (store_read(env->store, env->waker, env->reader, guest_read_run, g,
		               guest_read_done) != 0)
			free(g);
		return;
	}
	customer_mail_to(env, row, kind, row->customer_email, row->customer_name);
}

/* A booking confirmation: the reservation, its slot and experience and
 * its payment are read through store_read (off the reactor on
 * PostgreSQL) in one go, the mail queued when they are in. */
struct booking_read {
	const struct pipeline_env *env;
	char id[128];
	struct resv_row res;
	struct resv_slot slot;
	struct resv_experience exp;
	struct store_txn_row txn;
	int have_slot, have_txn;
};

/* On a read thread (PostgreSQL) or in place (SQLite): only b's fields. */
static int
booking_read_run(struct store_reader *rd, void *arg)
{
	struct booking_read *b = arg;
	int r;

	if ((r = resv_get(rd, NULL, b->id, &b->res)) != 0)
		return r;
	if (strcmp(b->res.status, "confirmed") != 0 || b->res.reference[0] == '\0')
		return FGW_ERR_STATE; /* nothing to tell yet */
	b->have_slot = resv_slot_get(rd, b->res.time_slot_id, &b->slot, &b->exp) == 0;
	b->have_txn = b->res.txn_id[0] != '\0' &&
	              store_txn_get(rd, b->res.client_id, b->res.txn_id, &b->txn) == 0;
	return FGW_OK;
}

static void
booking_read_done(void *arg, int rc)
{
	struct booking_read *b = arg;
	const struct resv_row *res = &b->res;
	const struct store_txn_row *txn = &b->txn;
	char amount[48], when[64], guests[16], once[64];
	int r;

	when[0] = '\0';
	if (rc != 0)
		goto out;
	if (b->have_slot)
		format_time(b->slot.starts_at, when, sizeof(when));
	if (res->guest_email[0] == '\0' || !notify_addr_ok(res->guest_email)) {
		log_warn("reservation %s: no confirmation mail, no usable guest address",
		         res->id);
		goto out;
	}
	format_amount(res->total_price, res->currency, amount, sizeof(amount));
	snprintf(guests, sizeof(guests), "%d", res->guests);
	snprintf(once, sizeof(once), "booking_confirmed:%s", res->id);
	{
		struct notify_var v[] = {
			{ "name", res->guest_name[0] ? res->guest_name : "customer" },
			{ "reference", res->reference },
			{ "experience", b->exp.name[0] ? b->exp.name : res->experience_id },
			{ "time", when },
			{ "guests", guests },
			{ "amount", amount },
			{ "last4", b->have_txn ? txn->last4 : "" },
			{ "brand", b->have_txn && txn->brand[0] ? txn->brand : "card" },
			{ "reservation_id", res->id },
			{ "client", res->client_id },
		};
		if ((r = notify_mail(b->env->store, b->env->waker, "booking_confirmed",
		                     res->client_id, res->guest_email, res->txn_id, once, v,
		                     sizeof(v) / sizeof(v[0]))) != 0 &&
		    r != FGW_ERR_NOT_FOUND)
			log_warn("reservation %s: confirmation mail not queued: %s", res->id,
			         fgw_strerror(r));
	}
out:
	store_txn_row_clear(&b->txn);
	free(b);
}

void
mail_booking_confirmed(const struct pipeline_env *env, const char *reservation_id)
{
	struct booking_read *b = NULL;

	if (!notify_enabled() || env->reader == NULL || (b = calloc(1, sizeof(*b))) == NULL)
		return;
	b->env = env;
	if (fgw_strlcpy(b->id, reservation_id, sizeof(b->id)) != 0 ||
	    store_read(env->store, env->waker, env->reader, booking_read_run, b,
	               booking_read_done) != 0)
		free(b);
}

/* Counts a final payment outcome; the alert goes out when the window is
 * full and its failure share reaches the threshold, then waits a whole
 * window before it may go out again. */
static void
rate_count(struct mail *m, const struct pipeline_env *env,
           const struct store_txn_row *row, int failed)
{
	const struct fgw_config *cfg = &m->gw->cfg;
	long long window = cfg->mail_failure_rate_window, pct = 0, nfailed = 0;
	struct rate *rt = NULL;
	int alert = 0;

	pthread_mutex_lock(&m->mu);
	for (int i = 0; i < m->n_rates; i++)
		if (strcmp(m->rates[i].client_id, row->client_id) == 0)
			rt = &m->rates[i];
	if (rt == NULL && m->n_rates < RATE_CLIENTS) {
		rt = &m->rates[m->n_rates];
		if ((rt->ring = calloc((size_t)window, 1)) != NULL) {
			fgw_strlcpy(rt->client_id, row->client_id, sizeof(rt->client_id));
			m->n_rates++;
		} else {
			rt = NULL;
		}
	}
	if (rt != NULL) {
		if (rt->n == window)
			rt->failed -= rt->ring[rt->pos];
		else
			rt->n++;
		rt->ring[rt->pos] = (unsigned char)failed;
		rt->failed += failed;
		rt->pos = (rt->pos + 1) % window;
		if (rt->quiet > 0)
			rt->quiet--;
		if (rt->n == window && rt->quiet == 0 &&
		    rt->failed * 100 >= cfg->mail_failure_rate_pct * window) {
			alert = 1;
			nfailed = rt->failed;
			pct = rt->failed * 100 / window;
			rt->quiet = window;
		}
	}
	pthread_mutex_unlock(&m->mu);
	if (alert) {
		char sf[24], sw[24], sp[24], st[24];
		struct notify_var v[] = {
			{ "failed", sf },
			{ "window", sw },
			{ "pct", sp },
			{ "threshold", st },
			{ "client", row->client_id },
		};
		snprintf(sf, sizeof(sf), "%lld", nfailed);
		snprintf(sw, sizeof(sw), "%lld", window);
		snprintf(sp, sizeof(sp), "%lld", pct);
		snprintf(st, sizeof(st), "%lld", cfg->mail_failure_rate_pct);
		log_warn("payment failure rate of %s is %lld%% over the last %lld payments",
		         row->client_id, pct, window);
		(void)notify_mail(env->store, env->waker, "admin_failure_rate", row->client_id,
		                  NULL, "", NULL, v, sizeof(v) / sizeof(v[0]));
	}
}

static void
on_txn_event(void *ctx, const struct pipeline_env *env, const struct store_txn_row *row)
{
	struct mail *m = ctx;
	enum txn_state st = txn_state_of(row->status);
	if (st == TXN_SUCCEEDED) {
		customer_mail(env, row, "receipt");
		rate_count(m, env, row, 0);
	} else if (st == TXN_REFUNDED) {
		customer_mail(env, row, "refund");
	} else if (st == TXN_DECLINED || st == TXN_FAILED) {
		rate_count(m, env, row, 1);
	}
}

/* ---- the sender thread ------------------------------------------------- */

struct send {
	struct mail *m;
	CURL *easy;
	struct curl_slist *rcpt;
	struct store_mail_row row;
	size_t off;
	int64_t started;
	char errbuf[CURL_ERROR_SIZE];
};

static size_t
read_message(char *buf, size_t size, size_t nitems, void *arg)
{
	struct send *s = arg;
	size_t left = strlen(s->row.message) - s->off, n = size * nitems;
	if (n > left)
		n = left;
	memcpy(buf, s->row.message + s->off, n);
	s->off += n;
	return n;
}

static int
send_setup(struct mail *m, struct send *s)
{
	const struct fgw_config *cfg = &m->gw->cfg;
	char addr[300];
	CURL *e;
	if ((s->easy = e = curl_easy_init()) == NULL)
		return FGW_ERR_NOMEM;
	snprintf(addr, sizeof(addr), "<%s>", s->row.rcpt_to);
	if ((s->rcpt = curl_slist_append(NULL, addr)) == NULL)
		return FGW_ERR_NOMEM;
	snprintf(addr, sizeof(addr), "<%s>", s->row.mail_from);
	curl_easy_setopt(e, CURLOPT_URL, cfg->mail_url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, addr);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, s->rcpt);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_message);
	curl_easy_setopt(e, CURLOPT_READDATA, s);
	curl_easy_setopt(e, CURLOPT_PRIVATE, s);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* One connection per mail: a server left in a half-finished
	 * transaction by a failure never sees the next one. */
	curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->mail_timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(cfg->mail_timeout_ms < 10000 ? cfg->mail_timeout_ms : 10000));
	/* smtp:// with mail_starttls: STARTTLS or nothing is sent. */
	curl_easy_setopt(e, CURLOPT_USE_SSL,
	                 cfg->mail_starttls ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_NONE);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, cfg->mail_verify_tls ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, cfg->mail_verify_tls ? 2L : 0L);
	if (cfg->mail_ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->mail_ca_file);
	if (cfg->mail_username[0] != '\0') {
		curl_easy_setopt(e, CURLOPT_USERNAME, cfg->mail_username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, (const char *)m->password->data);
	}
	return FGW_OK;
}

static void
send_free(struct send *s)
{
	if (s->easy != NULL)
		curl_easy_cleanup(s->easy);
	curl_slist_free_all(s->rcpt);
	store_mail_row_clear(&s->row);
}

static void
recorded(void *arg, int rc)
{
	struct mail *m = arg;
	/* Runs on the store writer (no waker): only the counter, at once. */
	if (rc != 0 && rc != FGW_ERR_STATE)
		log_error("a mail attempt was not recorded: %s", fgw_strerror(rc));
	pthread_mutex_lock(&m->mu);
	m->recording--;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

static void
finish(struct mail *m, struct send *s, CURLcode res)
{
	const struct fgw_config *cfg = &m->gw->cfg;
	struct store_audit audit;
	char error[160], details[256];
	const struct outbox_policy policy = { cfg->mail_retry_base_ms, cfg->mail_max_age_s };
	static const char *const outcomes[] = { "sent", "retry", "failed" };
	const char *outcome, *event;
	enum outbox_fate fate;
	int64_t now = fgw_now_ms(), next = 0;
	long code = 0;
	int r;

	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
	error[0] = '\0';
	if (res != CURLE_OK) {
		/* The server's own words when it answered, else curl's. */
		const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(res);
		if (code > 0)
			snprintf(error, sizeof(error), "SMTP %ld: %.120s", code, why);
		else
			(void)fgw_strlcpy(error, why, sizeof(error));
		if (error[0] == '\0') /* an empty reason is still a failure */
			(void)fgw_strlcpy(error, "unknown error", sizeof(error));
	}
	/* A sent mail keeps no next attempt time (0). */
	fate = outbox_settle(&policy, m->gw->metrics.mail_attempts,
	                     &(struct outbox_attempt){ .attempts = s->row.attempts,
	                                               .created_at = s->row.created_at,
	                                               .due_at = 0,
	                                               .error = error },
	                     now, &next);
	outcome = outcomes[fate];
	event = fate == OUTBOX_FAILED ? "mail.abandoned" : "mail.delivery";
	snprintf(
	    details, sizeof(details),
	    "{\"mailId\":\"%s\",\"kind\":\"%s\",\"attempt\":%d,\"smtpCode\":%ld,\"outcome\":\"%s\"}",
	    s->row.id, s->row.kind, s->row.attempts + 1, code, outcome);
	audit = (struct store_audit){ "system",
		                          "local",
		                          event,
		                          s->row.txn_id[0] ? s->row.txn_id : s->row.id,
		                          fate == OUTBOX_DELIVERED ? "success" : "failure",
		                          details };
	if (fate == OUTBOX_FAILED)
		log_error("mail %s (%s) given up after %d attempts: %s", s->row.id, s->row.kind,
		          s->row.attempts + 1, error);
	else if (fate == OUTBOX_RETRY)
		log_warn("mail %s (%s) not sent, retried in %lld ms: %s", s->row.id, s->row.kind,
		         (long long)(next - now), error);
	pthread_mutex_lock(&m->mu);
	m->recording++;
	pthread_mutex_unlock(&m->mu);
	/* Under the claim's lease (its end is the row's next_attempt_at). */
	if ((r = store_mail_attempt_claimed(m->gw->store, NULL, s->row.id,
	                                    s->row.next_attempt_at, outcome, next, error,
	                                    &audit, 1, recorded, m)) != 0) {
		log_error("mail %s: attempt not recorded: %s", s->row.id, fgw_strerror(r));
		recorded(m, 0);
	}
}

/* A hold that ended without a booking: its guest hears once. Runs on the
 * sender thread; the mail is a store job like any other (no waker: its
 * done only logs). */
struct ended_ctx {
	struct mail *m;
	struct store_reader *rd;
	int64_t cursor; /* newest updated_at seen: the next look's start */
};

static void
hold_ended(void *arg, const char *id, const char *status, int64_t updated_at)
{
	struct ended_ctx *c = arg;
	struct resv_row res;
	struct resv_slot slot;
	struct resv_experience exp;
	char when[64], guests[16], once[64], kind[32];
	int r;

	/* A row that gets no mail (an address the strict check refuses) is
	 * passed over from now on, not read again every round. */
	if (updated_at > c->cursor)
		c->cursor = updated_at;
	if (resv_get(c->rd, NULL, id, &res) != 0)
		return;
	snprintf(kind, sizeof(kind), "hold_%s", status);
	snprintf(once, sizeof(once), "hold_%s:%s", status, id);
	if (res.guest_email[0] == '\0' || !notify_addr_ok(res.guest_email))
		return;
	memset(&exp, 0, sizeof(exp));
	when[0] = '\0';
	if (resv_slot_get(c->rd, res.time_slot_id, &slot, &exp) == 0)
		format_time(slot.starts_at, when, sizeof(when));
	snprintf(guests, sizeof(guests), "%d", res.guests);
	{
		struct notify_var v[] = {
			{ "name", res.guest_name[0] ? res.guest_name : "customer" },
			{ "reference", res.id },
			{ "experience", exp.name[0] ? exp.name : res.experience_id },
			{ "time", when },
			{ "guests", guests },
			{ "client", res.client_id },
		};
		if ((r = notify_mail(c->m->gw->store, NULL, kind, res.client_id, res.guest_email,
		                     "", once, v, sizeof(v) / sizeof(v[0]))) != 0 &&
		    r != FGW_ERR_NOT_FOUND)
			log_warn("reservation %s: %s mail not queued: %s", id, kind, fgw_strerror(r));
	}
}

/* Payments the reconciler has not settled after mail_reconcile_stuck_s:
 * the operators hear at most once per such period. */
static void
check_stuck(struct mail *m, struct store_reader *rd)
{
	int64_t period = m->gw->cfg.mail_reconcile_stuck_s * 1000, now = fgw_now_ms(), n = 0;
	char oldest[40], count[24], minutes[24], once[48];
	if (store_mail_stuck_txns(rd, now - period, &n, oldest) != 0 || n == 0)
		return;
	snprintf(count, sizeof(count), "%lld", (long long)n);
	snprintf(minutes, sizeof(minutes), "%lld", (long long)(period / 60000));
	snprintf(once, sizeof(once), "reconcile_stuck:%lld", (long long)(now / period));
	{
		struct notify_var v[] = { { "count", count },
			                      { "oldest_txn", oldest },
			                      { "minutes", minutes },
			                      { "client", "" } };
		(void)notify_mail(m->gw->store, NULL, "admin_reconcile_stuck", NULL, NULL, oldest,
		                  once, v, sizeof(v) / sizeof(v[0]));
	}
}

/* One batch of the sender thread: the claimed rows and their deliveries,
 * driven together on one curl multi handle. */
struct mail_round {
	struct mail *m;
	CURLM *multi;
	struct store_mail_row rows[BATCH_MAX];
	struct send sends[BATCH_MAX];
	int n;
	int running;
};

static void
claimed(void *arg, int rc)
{
	struct mail *m = arg;
	/* Runs on the store writer (no waker): the rows are in place. */
	pthread_mutex_lock(&m->mu);
	m->claimed = 1;
	m->claim_rc = rc;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

/* The round's side of the outbox loop (gateway/outbox.h): claims up to
 * max due rows, waiting for the claim's commit (this is the sender's own
 * thread; the writer runs until mail_free has joined it). */
static int
round_claim(void *arg, int64_t now, int max)
{
	struct mail_round *mr = arg;
	struct mail *m = mr->m;
	int r;

	pthread_mutex_lock(&m->mu);
	m->claimed = 0;
	pthread_mutex_unlock(&m->mu);
	if ((r = store_mail_claim(m->gw->store, NULL, now,
	                          now + outbox_lease_ms(m->gw->cfg.mail_timeout_ms), mr->rows,
	                          max, &mr->n, claimed, m)) != 0)
		return r;
	pthread_mutex_lock(&m->mu);
	while (!m->claimed)
		pthread_cond_wait(&m->cv, &m->mu);
	r = m->claim_rc;
	pthread_mutex_unlock(&m->mu);
	return r;
}

static void
round_send(void *arg, int i)
{
	struct mail_round *mr = arg;
	struct send *s = &mr->sends[i];

	s->m = mr->m;
	s->row = mr->rows[i];
	s->started = fgw_now_ms();
	if (send_setup(mr->m, s) != 0 ||
	    curl_multi_add_handle(mr->multi, s->easy) != CURLM_OK) {
		log_error("mail %s: cannot start a delivery", s->row.id);
		finish(mr->m, s, CURLE_OUT_OF_MEMORY);
		curl_easy_cleanup(s->easy);
		s->easy = NULL;
		return;
	}
	mr->running++;
}

/* Sends one batch; returns how many rows it claimed. */
static int
send_batch(struct mail *m, CURLM *multi)
{
	struct mail_round round;
	const struct outbox_sender sender = { "mail", &round, round_claim, round_send };
	struct send *sends = round.sends;
	int n, r, max = (int)m->gw->cfg.mail_concurrency;
	CURLMsg *msg;
	int left;

	if (max > BATCH_MAX)
		max = BATCH_MAX;
	memset(&round, 0, sizeof(round));
	round.m = m;
	round.multi = multi;
	if (outbox_round(&sender, max) != 0)
		return 0;
	n = round.n;
	(void)outbox_claimed(&sender, 0, n, 0);
	while (round.running > 0) {
		int still = 0;
		if (curl_multi_perform(multi, &still) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
			struct send *s = NULL;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			finish(m, s, msg->data.result);
			curl_multi_remove_handle(multi, s->easy);
			curl_easy_cleanup(s->easy);
			s->easy = NULL;
			round.running--;
		}
		pthread_mutex_lock(&m->mu);
		r = m->stop;
		pthread_mutex_unlock(&m->mu);
		if (r)
			break; /* unfinished rows are due again once the lease ends */
		if (round.running > 0)
			curl_multi_poll(multi, NULL, 0, 200, NULL);
	}
	for (int i = 0; i < n; i++) {
		if (sends[i].easy != NULL)
			curl_multi_remove_handle(multi, sends[i].easy);
		send_free(&sends[i]);
	}
	/* The next read must see these attempts. */
	pthread_mutex_lock(&m->mu);
	while (m->recording > 0)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
	return n;
}

static void *
sender(void *arg)
{
	struct mail *m = arg;
	struct store_reader *rd = NULL;
	CURLM *multi = NULL;
	struct ended_ctx ec = { m, NULL, 0 };
	int64_t last_scan = 0;
	int r;

	if ((r = store_reader_open(m->gw->store, &rd)) != 0 ||
	    (multi = curl_multi_init()) == NULL) {
		log_error("mail sender not started: %s", fgw_strerror(r ? r : FGW_ERR_NOMEM));
		goto out;
	}
	ec.rd = rd;
	for (;;) {
		struct timespec until;
		int64_t mono = fgw_mono_ms(),
		        since = fgw_now_ms() - m->gw->cfg.mail_max_age_s * 1000;
		int n, stop;
		/* Holds that ran out (or were cancelled) while the mail is worth
		 * sending; the outbox's dedupe_key says which had theirs. Both
		 * looks are index scans, and not more often than SCAN_MS. */
		if (mono - last_scan >= SCAN_MS || last_scan == 0) {
			last_scan = mono;
			/* A clock set back (the test clock, NTP) restarts the
			 * look from the window's start. */
			if (ec.cursor < since || ec.cursor > fgw_now_ms())
				ec.cursor = since;
			if ((r = store_mail_holds_ended(rd, ec.cursor, hold_ended, &ec)) != 0)
				log_error("reading ended holds: %s", fgw_strerror(r));
			check_stuck(m, rd);
		}
		n = send_batch(m, multi);
		long long ms = m->gw->cfg.mail_poll_ms;
		pthread_mutex_lock(&m->mu);
		if (!m->stop && n < (int)m->gw->cfg.mail_concurrency) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += ms / 1000;
			until.tv_nsec += (ms % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			(void)pthread_cond_timedwait(&m->cv, &m->mu, &until);
		}
		stop = m->stop;
		pthread_mutex_unlock(&m->mu);
		if (stop)
			break;
	}
out:
	if (multi != NULL)
		curl_multi_cleanup(multi);
	store_reader_close(rd);
	return NULL;
}

/* ---- life cycle -------------------------------------------------------- */

int
mail_setup(struct gateway *gw, struct mail **out, struct fgw_why *why)
{
	const struct fgw_config *cfg = &gw->cfg;
	struct notify_client clients[CONFIG_MAX_MAIL_CLIENTS];
	struct notify_opts o;
	struct mail *m = NULL;
	struct fgw_why w;
	char msg[768];
	int r;

	*out = NULL;
	if (cfg->mail_url[0] == '\0')
		return FGW_OK;
	if ((strncmp(cfg->mail_url, "smtp://", 7) != 0 &&
	     strncmp(cfg->mail_url, "smtps://", 8) != 0) ||
	    strpbrk(cfg->mail_url, " \t\r\n") != NULL) {
		fgw_why_set(why, NULL, 0, 0,
		            "mail_url must be smtp://HOST[:PORT] or smtps://HOST[:PORT]");
		return FGW_ERR_INVALID;
	}
	if ((cfg->mail_username[0] != '\0') != (cfg->mail_password_file[0] != '\0')) {
		fgw_why_set(why, NULL, 0, 0, "mail_username and mail_password_file go together");
		return FGW_ERR_INVALID;
	}
	if (strcmp(cfg->mode, "production") == 0 && cfg->mail_username[0] != '\0' &&
	    strncmp(cfg->mail_url, "smtps://", 8) != 0 && !cfg->mail_starttls) {
		fgw_why_set(why, NULL, 0, 0,
		            "production: SMTP AUTH needs smtps:// or mail_starttls 1 "
		            "(the password is never sent in clear)");
		return FGW_ERR_INVALID;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return FGW_ERR_NOMEM;
	m->gw = gw;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (cfg->mail_password_file[0] != '\0' &&
	    (r = outbox_read_secret(cfg->mail_password_file, PASSWORD_MAX, 1, 1, &m->password,
	                            &w)) != 0) {
		fgw_why_set(why, NULL, 0, 0, "mail_password_file %s",
		            fgw_why_format(&w, msg, sizeof(msg)));
		goto fail;
	}
	for (int i = 0; i < cfg->n_mail_clients; i++) {
		clients[i].client_id = cfg->mail_clients[i].client_id;
		clients[i].from = cfg->mail_clients[i].from;
		clients[i].admin = cfg->mail_clients[i].admin;
	}
	o = (struct notify_opts){ cfg->mail_templates_dir, cfg->mail_from, cfg->mail_admin,
		                      clients, (size_t)cfg->n_mail_clients };
	if ((r = notify_init(&o, &w)) != 0) {
		if (why != NULL)
			*why = w;
		goto fail;
	}
	if ((r = txn_events_subscribe(on_txn_event, m)) != 0) {
		fgw_why_set(why, "mail", 0, 0, "cannot subscribe to transaction events");
		goto fail;
	}
	*out = m;
	return FGW_OK;
fail:
	notify_reset();
	mail_free(m);
	return r;
}

int
mail_start(struct mail *m)
{
	if (m == NULL)
		return FGW_OK;
	if (pthread_create(&m->thread, NULL, sender, m) != 0) {
		log_error("mail sender thread not started");
		return FGW_ERR_INTERNAL;
	}
	m->started = 1;
	return FGW_OK;
}

void
mail_free(struct mail *m)
{
	if (m == NULL)
		return;
	if (m->started) {
		pthread_mutex_lock(&m->mu);
		m->stop = 1;
		pthread_cond_broadcast(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->thread, NULL);
	}
	for (int i = 0; i < m->n_rates; i++)
		free(m->rates[i].ring);
	secbuf_free(m->password);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
}
