/*
 * pipeline/velsync.c — the other instances' attempts added to the
 * velocity store (pipeline/velsync.h).
 *
 * The ids counted are a chained hash set; each entry keeps the row's
 * created_at so entries the next refresh can no longer read are dropped
 * (a full pass per refresh: the set holds about lag + interval worth of
 * attempts of all instances).
 */
#define LOG_MODULE "rules"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "pipeline/risk.h"
#include "pipeline/velsync.h"
#include "rules/velocity.h"
#include "store/txn_recent.h"

struct vs_entry {
	struct vs_entry *next;
	int64_t ts;       /* the row's created_at */
	uint8_t own;      /* decided here: never recorded from the table */
	uint8_t declined; /* counted as declined already */
	char id[];
};

struct velsync {
	pthread_mutex_t mu; /* the set */
	struct risk *rk;
	int64_t lag_ms;
	int64_t last_now; /* the previous successful refresh; 0: none yet */
	struct vs_entry **b;
	size_t nb, n;
	_Atomic int64_t added_total, refreshes;
};

/* FNV-1a: ids are made by the gateways, not chosen by clients. */
static size_t
id_hash(const char *id, size_t nb)
{
	uint64_t h = 1469598103934665603ULL;

	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (size_t)(h & (nb - 1));
}

static struct vs_entry *
find(struct velsync *vs, const char *id)
{
	for (struct vs_entry *e = vs->b[id_hash(id, vs->nb)]; e != NULL; e = e->next)
		if (strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

/* Doubles the table when it is full; on no memory it just stays denser. */
static void
grow(struct velsync *vs)
{
	struct vs_entry **nb;
	size_t n2 = vs->nb * 2;

	if (vs->n < vs->nb || (nb = calloc(n2, sizeof(*nb))) == NULL)
		return;
	for (size_t i = 0; i < vs->nb; i++) {
		struct vs_entry *e = vs->b[i], *next;
		for (; e != NULL; e = next) {
			size_t h = id_hash(e->id, n2);
			next = e->next;
			e->next = nb[h];
			nb[h] = e;
		}
	}
	free(vs->b);
	vs->b = nb;
	vs->nb = n2;
}

static struct vs_entry *
add(struct velsync *vs, const char *id, int64_t ts, int own, int declined)
{
	size_t len = strlen(id);
	struct vs_entry *e = malloc(sizeof(*e) + len + 1);
	size_t h;

	if (e == NULL)
		return NULL;
	memcpy(e->id, id, len + 1);
	e->ts = ts;
	e->own = (uint8_t)(own != 0);
	e->declined = (uint8_t)(declined != 0);
	grow(vs);
	h = id_hash(id, vs->nb);
	e->next = vs->b[h];
	vs->b[h] = e;
	vs->n++;
	return e;
}

/* Drops what no refresh reads again (created before cutoff). */
static void
prune(struct velsync *vs, int64_t cutoff)
{
	for (size_t i = 0; i < vs->nb; i++) {
		struct vs_entry **pp = &vs->b[i];
		while (*pp != NULL) {
			struct vs_entry *e = *pp;
			if (e->ts < cutoff) {
				*pp = e->next;
				free(e);
				vs->n--;
			} else
				pp = &e->next;
		}
	}
}

int
velsync_new(struct risk *rk, int64_t lag_ms, struct velsync **out)
{
	struct velsync *vs;

	*out = NULL;
	if (rk == NULL || lag_ms <= 0)
		return FGW_ERR_INVALID;
	if ((vs = calloc(1, sizeof(*vs))) == NULL)
		return FGW_ERR_NOMEM;
	vs->nb = 1024;
	if ((vs->b = calloc(vs->nb, sizeof(*vs->b))) == NULL ||
	    pthread_mutex_init(&vs->mu, NULL) != 0) {
		free(vs->b);
		free(vs);
		return FGW_ERR_NOMEM;
	}
	vs->rk = rk;
	vs->lag_ms = lag_ms;
	*out = vs;
	return FGW_OK;
}

void
velsync_free(struct velsync *vs)
{
	if (vs == NULL)
		return;
	prune(vs, INT64_MAX);
	free(vs->b);
	pthread_mutex_destroy(&vs->mu);
	free(vs);
}

void
velsync_own(struct velsync *vs, const char *txn_id, int64_t ts_ms)
{
	struct vs_entry *e;

	if (vs == NULL || txn_id == NULL || txn_id[0] == '\0')
		return;
	pthread_mutex_lock(&vs->mu);
	if ((e = find(vs, txn_id)) != NULL)
		e->own = 1;
	else if (add(vs, txn_id, ts_ms, 1, 0) == NULL)
		log_warn("velocity: no memory to note attempt %s: another instance's "
		         "refresh may count it twice here",
		         txn_id);
	pthread_mutex_unlock(&vs->mu);
}

struct refresh {
	struct velsync *vs;
	int64_t keep_from; /* rows created before this are not remembered */
	int64_t added, declines;
};

static int
refresh_row(void *ctx, const struct store_txn_row *row)
{
	struct refresh *f = ctx;
	struct velsync *vs = f->vs;
	struct vs_entry *e;
	struct rules_input in;
	int declined = txn_state_of(row->status) == TXN_DECLINED;
	int count = 0, decline = 0;

	if (row->id[0] == '\0')
		return 0;
	pthread_mutex_lock(&vs->mu);
	if ((e = find(vs, row->id)) == NULL) {
		count = 1;
		if (row->created_at >= f->keep_from &&
		    add(vs, row->id, row->created_at, 0, declined) == NULL)
			count = 0; /* better not counted now than counted twice */
	} else if (!e->own && !e->declined && declined) {
		e->declined = 1;
		decline = 1;
	}
	pthread_mutex_unlock(&vs->mu);
	if (count && risk_replay_row(vs->rk, row) == FGW_OK)
		f->added++;
	if (decline) {
		risk_input_from_row(row, vs->rk->mode, &in);
		if (rules_record_decline(&in, vs->rk->velocity) == FGW_OK)
			f->declines++;
	}
	return 0;
}

int
velsync_refresh(struct velsync *vs, struct store_reader *rd, int64_t now_ms,
                int64_t *added, int64_t *declines)
{
	struct refresh f = { .vs = vs };
	int64_t since;
	int r;

	if (added != NULL)
		*added = 0;
	if (declines != NULL)
		*declines = 0;
	if (vs == NULL || rd == NULL)
		return FGW_ERR_INVALID;
	since = vs->last_now != 0 ? vs->last_now - vs->lag_ms
	                          : now_ms - velocity_retention_ms(vs->rk->velocity);
	/* Every row read is remembered, so a refresh that fails half-way
	 * counts nothing twice when the next one reads the same rows again;
	 * except the start-up replay of the whole window, which is not
	 * repeated (the gateway does not start when it fails). */
	f.keep_from = vs->last_now != 0 ? since : now_ms - vs->lag_ms;
	if ((r = store_txn_recent(rd, since, 0, refresh_row, &f, NULL)) != FGW_OK)
		goto out;
	/* The next refresh reads from now - lag: nothing older is read again. */
	pthread_mutex_lock(&vs->mu);
	prune(vs, now_ms - vs->lag_ms);
	pthread_mutex_unlock(&vs->mu);
	vs->last_now = now_ms;
	atomic_fetch_add(&vs->refreshes, 1);
out:
	atomic_fetch_add(&vs->added_total, f.added);
	if (added != NULL)
		*added = f.added;
	if (declines != NULL)
		*declines = f.declines;
	return r;
}

int64_t
velsync_held(struct velsync *vs)
{
	int64_t n;

	pthread_mutex_lock(&vs->mu);
	n = (int64_t)vs->n;
	pthread_mutex_unlock(&vs->mu);
	return n;
}

void
velsync_totals(struct velsync *vs, int64_t *added, int64_t *refreshes)
{
	*added = atomic_load(&vs->added_total);
	*refreshes = atomic_load(&vs->refreshes);
}
