/*
 * gateway/webhooks.c — webhook secrets, the outbox writer and the
 * delivery loop for the website's endpoints.
 *
 * Durability: a transaction's state change is turned into one outbox row
 * per endpoint by a store job (on the reactor that committed the change);
 * only committed rows are ever sent, so a crash loses no event and a
 * restart resends what was pending. Delivery: a timer on reactor 0 claims
 * the due rows (store_outbox_claim: a store job that leases them to this
 * instance, so no other instance on the same database sends them at the
 * same time) and POSTs them with its httpc (never blocking); one batch is
 * in flight at a time, and each answer is recorded (attempt row, row's new
 * status and next time, audit event) in one store job, under the claim's
 * lease, before the next batch is claimed. An instance that dies mid-batch
 * leaves its rows to be claimed again once the lease ends. Retries back off exponentially from webhook_retry_base_ms
 * until webhook_max_age_s after the event, then the row is failed
 * (`flairctl webhooks retry ID` makes it pending again).
 */
#define LOG_MODULE "webhooks"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/mac.h"
#include "processors/adapter.h"
#include "crypto/secmem.h"
#include "gateway/gateway.h"
#include "gateway/outbox.h"
#include "gateway/startup.h"
#include "gateway/webhooks.h"
#include "pipeline/events.h"
#include "pipeline/notify.h"
#include "processors/httpc.h"
#include "store/webhooks.h"

#define DELIVERY_BATCH 16
#define SECRET_MAX 1024

struct wh_secret {
	char processor[32];
	char scheme[16];
	const char *header;
	struct secbuf *secret;
};

struct delivery {
	struct delivery *prev, *next; /* the webhooks' list */
	struct webhooks *wh;
	struct store_outbox_row row;
	int64_t started;
	int unconfigured; /* its endpoint left the config */
};

struct webhooks {
	struct gateway *gw;
	struct reactor *rx; /* reactor 0, once started */
	struct wh_secret in[CONFIG_MAX_INBOUND_WEBHOOKS];
	int n_in;
	struct secbuf *out_secret[CONFIG_MAX_WEBHOOK_ENDPOINTS];
	int n_out;
	int busy;                                        /* deliveries not yet recorded */
	int claiming;                                    /* a claim job is out */
	struct store_outbox_row claimed[DELIVERY_BATCH]; /* what it claims */
	int n_claimed;
	struct delivery *live;       /* the same, freed at shutdown if
	                                        the loop stopped before */
	struct outbox_sender sender; /* the loop's view of this sender */
};

/* ---- outbox writer (any reactor) --------------------------------------- */

static char *
event_payload(const char *event_id, const char *type, const struct store_txn_row *row)
{
	cJSON *o = NULL, *data, *txn = NULL;
	char *txn_json = NULL, *s = NULL;

	if (txn_row_to_json(row, NULL, &txn_json) != 0 ||
	    (txn = cJSON_Parse(txn_json)) == NULL || (o = cJSON_CreateObject()) == NULL)
		goto out;
	cJSON_AddStringToObject(o, "id", event_id);
	cJSON_AddStringToObject(o, "type", type);
	cJSON_AddNumberToObject(o, "created", (double)(fgw_now_ms() / 1000));
	cJSON_AddStringToObject(o, "clientId", row->client_id);
	if ((data = cJSON_AddObjectToObject(o, "data")) == NULL)
		goto out;
	cJSON_AddItemToObject(data, "object", txn);
	txn = NULL; /* owned by o now */
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(txn);
	cJSON_Delete(o);
	free(txn_json);
	return s;
}

/* Its argument is nothing the callback must free: the store drops the
 * callbacks of jobs still queued when the daemon stops, and a heap
 * argument would leak then. */
static void
on_enqueued(void *arg, int rc)
{
	(void)arg;
	if (rc == FGW_ERR_EXISTS) /* another publish of the move queued it */
		log_debug("outbox: an event was queued by another announcement");
	else if (rc != 0)
		log_error("outbox: an event was not stored: %s", fgw_strerror(rc));
}

/* One event of type about row: one outbox row per endpoint. */
static void
enqueue_event(struct webhooks *wh, const struct pipeline_env *env,
              const struct store_txn_row *row, const char *type)
{
	struct store_outbox_row rows[CONFIG_MAX_WEBHOOK_ENDPOINTS];
	struct store_audit audit;
	char details[160], *payload = NULL, ev[40];
	int n = wh->gw->cfg.n_webhook_endpoints, r;

	memset(rows, 0, sizeof(rows));
	fgw_random_id("evt_", ev, sizeof(ev));
	if ((payload = event_payload(ev, type, row)) == NULL)
		goto fail;
	{
		/* Only the endpoints of the transaction's own client (or those
		 * serving every client) hear about it. */
		int k = 0;
		for (int i = 0; i < n; i++) {
			const struct config_webhook_endpoint *ep = &wh->gw->cfg.webhook_endpoints[i];
			if (ep->client_id[0] != '\0' && strcmp(ep->client_id, row->client_id) != 0)
				continue;
			fgw_random_id("whd_", rows[k].id, sizeof(rows[k].id));
			fgw_strlcpy(rows[k].endpoint_url, ep->url, sizeof(rows[k].endpoint_url));
			fgw_strlcpy(rows[k].event_id, ev, sizeof(rows[k].event_id));
			fgw_strlcpy(rows[k].event_type, type, sizeof(rows[k].event_type));
			fgw_strlcpy(rows[k].txn_id, row->id, sizeof(rows[k].txn_id));
			rows[k].payload = payload;
			k++;
		}
		n = k;
	}
	if (n == 0) {
		free(payload);
		return;
	}
	snprintf(details, sizeof(details),
	         "{\"eventId\":\"%s\",\"type\":\"%s\",\"endpoints\":%d}", ev, type, n);
	audit = (struct store_audit){ "system", "local",   "webhook.enqueued",
		                          row->id,  "success", details };
	r = store_outbox_enqueue(env->store, env->waker, rows, (size_t)n, &audit, 1,
	                         on_enqueued, NULL);
	free(payload);
	if (r != 0)
		log_error("outbox: event %s for %s not queued: %s", ev, row->id, fgw_strerror(r));
	return;
fail:
	log_error("outbox: out of memory building the event for %s", row->id);
}

/* Listener: transaction.<status> for every state change, and
 * refund.succeeded for a refund that went through (full or partial). */
static void
on_txn_event(void *ctx, const struct pipeline_env *env, const struct store_txn_row *row)
{
	struct webhooks *wh = ctx;
	char type[48];

	if (wh->gw->cfg.n_webhook_endpoints == 0)
		return;
	snprintf(type, sizeof(type), "transaction.%s", row->status);
	enqueue_event(wh, env, row, type);
	if (txn_state_of(row->status) == TXN_REFUNDED ||
	    txn_state_of(row->status) == TXN_PARTIALLY_REFUNDED)
		enqueue_event(wh, env, row, "refund.succeeded");
}

void
webhooks_notify(struct webhooks *wh, const struct pipeline_env *env,
                const struct store_txn_row *row, const char *what)
{
	char type[48];

	if (wh == NULL)
		return;
	snprintf(type, sizeof(type), "transaction.%s", what);
	enqueue_event(wh, env, row, type);
}

/* ---- delivery (reactor 0) ---------------------------------------------- */

static void tick(evutil_socket_t fd, short what, void *arg);

static void
arm(struct webhooks *wh)
{
	long ms = (long)wh->gw->cfg.webhook_poll_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	/* A one-shot event: libevent frees it with the base at shutdown. */
	if (event_base_once(wh->rx->base, -1, EV_TIMEOUT, tick, wh, &tv) != 0)
		log_error("outbox: cannot arm the delivery timer");
}

static void
on_recorded(void *arg, int rc)
{
	struct delivery *d = arg;
	if (rc != 0 && rc != FGW_ERR_STATE)
		log_error("outbox: attempt for %s not recorded: %s", d->row.id, fgw_strerror(rc));
	d->wh->busy--;
	if (d->prev != NULL)
		d->prev->next = d->next;
	else
		d->wh->live = d->next;
	if (d->next != NULL)
		d->next->prev = d->prev;
	store_outbox_row_clear(&d->row);
	free(d);
}

/* The endpoint's client's operators (or the default ones) hear that an
 * event was given up. */
static void
notify_abandoned(struct webhooks *wh, const struct delivery *d,
                 const struct store_outbox_attempt *a)
{
	const struct fgw_config *cfg = &wh->gw->cfg;
	const char *client = NULL;
	char n[16];
	for (int i = 0; i < cfg->n_webhook_endpoints; i++)
		if (strcmp(cfg->webhook_endpoints[i].url, d->row.endpoint_url) == 0 &&
		    cfg->webhook_endpoints[i].client_id[0] != '\0')
			client = cfg->webhook_endpoints[i].client_id;
	snprintf(n, sizeof(n), "%d", d->row.attempts + 1);
	{
		struct notify_var v[] = {
			{ "outbox_id", d->row.id },
			{ "url", d->row.endpoint_url },
			{ "event_type", d->row.event_type },
			{ "txn_id", d->row.txn_id },
			{ "error", a->error },
			{ "attempts", n },
			{ "client", client ? client : "" },
		};
		char once[64];
		snprintf(once, sizeof(once), "webhook_abandoned:%s", d->row.id);
		(void)notify_mail(wh->rx->env.store, wh->rx->waker, "admin_webhook_abandoned",
		                  client, NULL, d->row.txn_id, once, v, sizeof(v) / sizeof(v[0]));
	}
}

static void
on_delivered(void *arg, const struct httpc_response *resp)
{
	struct delivery *d = arg;
	struct webhooks *wh = d->wh;
	const struct fgw_config *cfg = &wh->gw->cfg;
	struct store_outbox_attempt a;
	struct store_audit audit;
	char details[256];
	const struct outbox_policy policy = { cfg->webhook_retry_base_ms,
		                                  cfg->webhook_max_age_s };
	static const char *const outcomes[] = { "delivered", "retry", "failed" };
	enum outbox_fate fate;
	int64_t now = fgw_now_ms();
	int r;

	memset(&a, 0, sizeof(a));
	fgw_strlcpy(a.outbox_id, d->row.id, sizeof(a.outbox_id));
	a.at = d->started;
	a.elapsed_ms = resp->elapsed_ms;
	a.lease_until = d->row.next_attempt_at; /* the claim's token */
	if (d->unconfigured) {
		fgw_strlcpy(a.error, "endpoint no longer configured", sizeof(a.error));
	} else if (resp->err == 0) {
		a.http_status = (int)resp->status;
		if (resp->status < 200 || resp->status > 299)
			snprintf(a.error, sizeof(a.error), "HTTP %ld", resp->status);
	} else {
		fgw_strlcpy(a.error, fgw_strerror(resp->err), sizeof(a.error));
	}
	fate = outbox_settle(&policy, wh->gw->metrics.webhooks_out,
	                     &(struct outbox_attempt){
	                         .attempts = d->row.attempts,
	                         .created_at = d->row.created_at,
	                         .due_at = now, /* row.next_attempt_at is the lease */
	                         .error = a.error,
	                         .give_up = d->unconfigured },
	                     now, &a.next_attempt_at);
	fgw_strlcpy(a.outcome, outcomes[fate], sizeof(a.outcome));
	snprintf(details, sizeof(details),
	         "{\"outboxId\":\"%s\",\"eventId\":\"%s\",\"attempt\":%d,\"httpStatus\":%d,"
	         "\"outcome\":\"%s\"}",
	         d->row.id, d->row.event_id, d->row.attempts + 1, a.http_status, a.outcome);
	audit = (struct store_audit){ "system",
		                          "local",
		                          "webhook.delivery",
		                          d->row.txn_id,
		                          fate == OUTBOX_DELIVERED ? "success" : "failure",
		                          details };
	if (fate != OUTBOX_DELIVERED)
		log_warn("outbox: %s to %s: %s (%s)", d->row.id, d->row.endpoint_url, a.error,
		         a.outcome);
	if (fate == OUTBOX_FAILED)
		notify_abandoned(wh, d, &a);
	r = store_outbox_attempt(wh->rx->env.store, wh->rx->waker, &a, &audit, 1, on_recorded,
	                         d);
	if (r != 0) {
		log_error("outbox: cannot record the attempt for %s: %s", d->row.id,
		          fgw_strerror(r));
		on_recorded(d, 0);
	}
}

static void
send_one(struct webhooks *wh, struct store_outbox_row *row)
{
	const struct fgw_config *cfg = &wh->gw->cfg;
	struct delivery *d = NULL;
	const struct secbuf *secret = NULL;
	char sig[MAC_SIGN_HEADER_LEN], sig_h[MAC_SIGN_HEADER_LEN + 32], id_h[80];
	const char *headers[5];
	int64_t now = fgw_now_ms();
	int r;

	/* The row names its endpoint by URL: the secret is that endpoint's
	 * now, so a rotated secret signs the retries too. */
	for (int i = 0; i < cfg->n_webhook_endpoints; i++)
		if (strcmp(cfg->webhook_endpoints[i].url, row->endpoint_url) == 0)
			secret = wh->out_secret[i];
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		store_outbox_row_clear(row);
		return;
	}
	d->wh = wh;
	d->row = *row;
	row->payload = NULL; /* owned by d now */
	d->started = now;
	wh->busy++;
	d->next = wh->live;
	if (wh->live != NULL)
		wh->live->prev = d;
	wh->live = d;
	if (secret == NULL) {
		/* Failed at once (not left due, where it would hold a batch
		 * slot on every tick); `flairctl webhooks retry` after the
		 * endpoint is configured again. */
		struct httpc_response none;
		memset(&none, 0, sizeof(none));
		d->unconfigured = 1;
		on_delivered(d, &none);
		return;
	}
	if ((r = mac_sign_webhook((const char *)secret->data, now / 1000, d->row.payload,
	                          strlen(d->row.payload), sig, sizeof(sig))) != 0)
		goto fail;
	snprintf(sig_h, sizeof(sig_h), "%s: %s", MAC_HEADER_FLAIR, sig);
	snprintf(id_h, sizeof(id_h), "Flair-Event-Id: %s", d->row.event_id);
	headers[0] = "Content-Type: application/json";
	headers[1] = sig_h;
	headers[2] = id_h;
	headers[3] = "User-Agent: flairgw-webhooks/1";
	headers[4] = NULL;
	r = httpc_request(wh->rx->httpc, "POST", d->row.endpoint_url, headers, d->row.payload,
	                  strlen(d->row.payload), (long)cfg->webhook_timeout_ms, on_delivered,
	                  d, NULL);
	if (r != 0) {
		struct httpc_response resp;
		memset(&resp, 0, sizeof(resp));
		resp.err = r;
		/* Recorded as a failed attempt, so a bad URL backs off too. */
		on_delivered(d, &resp);
	}
	return;
fail:
	log_error("outbox: cannot sign %s: %s", d->row.id, fgw_strerror(r));
	on_recorded(d, 0); /* unlinks and frees; the row stays pending */
}

/* The round's side of the outbox loop (gateway/outbox.h): the claim is a
 * store job whose rows reach on_claimed on this reactor after its commit. */
static void on_claimed(void *arg, int rc);
static void round_send(void *arg, int i);

static int
round_claim(void *arg, int64_t now, int max)
{
	struct webhooks *wh = arg;
	int r;

	wh->claiming = 1;
	r = store_outbox_claim(wh->rx->env.store, wh->rx->waker, now,
	                       now + outbox_lease_ms(wh->gw->cfg.webhook_timeout_ms),
	                       wh->claimed, max, &wh->n_claimed, on_claimed, wh);
	if (r != 0)
		wh->claiming = 0;
	return r;
}

static void
round_send(void *arg, int i)
{
	struct webhooks *wh = arg;
	send_one(wh, &wh->claimed[i]);
}

static const struct outbox_sender *
sender_of(struct webhooks *wh)
{
	wh->sender = (struct outbox_sender){ "outbox", wh, round_claim, round_send };
	return &wh->sender;
}

static void
on_claimed(void *arg, int rc)
{
	struct webhooks *wh = arg;
	int n = wh->n_claimed, sent;

	wh->claiming = 0;
	wh->n_claimed = 0;
	sent = outbox_claimed(sender_of(wh), rc, n, wh->rx->draining);
	/* Not sent (stopping, or the claim failed): due again after the lease. */
	for (int i = sent; i < n; i++)
		store_outbox_row_clear(&wh->claimed[i]);
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	struct webhooks *wh = arg;
	(void)fd;
	(void)what;
	if (wh->rx->draining)
		return; /* rows stay pending for the next start */
	/* A round only when the last one's attempts are all recorded. */
	if (wh->busy == 0 && !wh->claiming)
		(void)outbox_round(sender_of(wh), DELIVERY_BATCH);
	arm(wh);
}

/* ---- set-up ------------------------------------------------------------ */

int
webhooks_setup(struct gateway *gw, int subscribe, struct check_report *rep,
               struct webhooks **out)
{
	const struct fgw_config *cfg = &gw->cfg;
	struct webhooks *wh = NULL;
	struct fgw_why why;
	char err[768];
	int r, first = FGW_OK;

	*out = NULL;
	if ((wh = calloc(1, sizeof(*wh))) == NULL)
		return FGW_ERR_NOMEM;
	wh->gw = gw;
	/* Every file is read even after one failed: all bad ones are named. */
	for (int i = 0; i < cfg->n_inbound_webhooks; i++) {
		const struct config_inbound_webhook *c = &cfg->inbound_webhooks[i];
		struct wh_secret *s = &wh->in[wh->n_in];
		if ((r = outbox_read_secret(c->secret_file, SECRET_MAX, 16, 0, &s->secret,
		                            &why)) != 0) {
			check_problem(rep, "webhook secret %s",
			              fgw_why_format(&why, err, sizeof(err)));
			first = first != FGW_OK ? first : r;
			continue;
		}
		fgw_strlcpy(s->processor, c->processor, sizeof(s->processor));
		fgw_strlcpy(s->scheme, c->scheme, sizeof(s->scheme));
		/* config.c let only such types through. */
		s->header = proc_type_webhooks(c->scheme)->webhook_header;
		wh->n_in++;
	}
	for (int i = 0; i < cfg->n_webhook_endpoints; i++) {
		if ((r = outbox_read_secret(cfg->webhook_endpoints[i].secret_file, SECRET_MAX, 16,
		                            0, &wh->out_secret[i], &why)) != 0) {
			check_problem(rep, "webhook secret %s",
			              fgw_why_format(&why, err, sizeof(err)));
			first = first != FGW_OK ? first : r;
			continue;
		}
		wh->n_out = i + 1;
	}
	if ((r = first) != FGW_OK)
		goto fail;
	if (subscribe && wh->n_out > 0 && (r = txn_events_subscribe(on_txn_event, wh)) != 0) {
		check_problem(rep, "webhooks: cannot subscribe to transaction events");
		goto fail;
	}
	*out = wh;
	return FGW_OK;
fail:
	webhooks_free(wh);
	return r;
}

int
webhooks_start(struct webhooks *wh)
{
	if (wh == NULL || wh->n_out == 0)
		return FGW_OK;
	wh->rx = &wh->gw->rx[0];
	arm(wh);
	return FGW_OK;
}

void
webhooks_free(struct webhooks *wh)
{
	if (wh == NULL)
		return;
	/* Only after the reactors stopped: deliveries whose answer or record
	 * never came back stay pending in the outbox for the next start. */
	while (wh->live != NULL) {
		struct delivery *d = wh->live;
		wh->live = d->next;
		store_outbox_row_clear(&d->row);
		free(d);
	}
	for (int i = 0; i < wh->n_in; i++)
		secbuf_free(wh->in[i].secret);
	for (int i = 0; i < wh->n_out; i++)
		secbuf_free(wh->out_secret[i]);
	free(wh);
}

int
webhooks_inbound(const struct webhooks *wh, const char *processor,
                 const char *secrets[WEBHOOKS_MAX_SECRETS], size_t *n,
                 const char **header, const char **scheme)
{
	*n = 0;
	*header = NULL;
	*scheme = NULL;
	for (int i = 0; wh != NULL && i < wh->n_in; i++) {
		if (strcmp(wh->in[i].processor, processor) != 0 || *n == WEBHOOKS_MAX_SECRETS)
			continue;
		/* The first line's scheme decides the header for the processor. */
		if (*header == NULL) {
			*header = wh->in[i].header;
			*scheme = wh->in[i].scheme;
		}
		secrets[(*n)++] = (const char *)wh->in[i].secret->data;
	}
	return *n > 0 ? FGW_OK : FGW_ERR_NOT_FOUND;
}
