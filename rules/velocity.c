/*
 * rules/velocity.c — the velocity store behind count(), sum() and
 * declines().
 *
 * Layout: VEL_SHARDS shards, each a mutex, a chained hash table of keys and
 * an LRU list of the same keys (most recently recorded at the head). A key
 * holds its events in a ring buffer sorted by timestamp; in-order events
 * append at the back, late ones are shifted into place from the back, so a
 * replay in any order ends in the same state. The hash is SipHash-2-4 with
 * a random key per store, because keys (e-mails, IPs) come from clients and
 * a predictable hash would let them pile every key into one chain.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/err.h"
#include "rules/velocity.h"

#define VEL_SHARDS 16
#define VEV_ATTEMPT 1u
#define VEV_DECLINE 2u

struct vev {
	int64_t ts;
	int64_t amount;
	uint32_t flags;
};

struct vkey {
	struct vkey *hnext;
	struct vkey *lprev, *lnext;
	uint64_t hash;
	struct vev *ev; /* ring of cap (a power of two) slots */
	uint32_t head, n, cap;
	uint16_t klen;
	uint8_t dim;
	char key[];
};

struct vshard {
	pthread_mutex_t mu;
	struct vkey **buckets;
	size_t nbuckets, nkeys, nevents;
	struct vkey *lru_head, *lru_tail;
};

struct velocity {
	struct vshard shard[VEL_SHARDS];
	uint64_t k0, k1;
	_Atomic int64_t retention_ms;
	uint32_t max_per_key;
	size_t max_keys_shard, max_events_shard;
};

#define EV(k, i) ((k)->ev[((k)->head + (i)) & ((k)->cap - 1)])

/* ---- SipHash-2-4 ------------------------------------------------------ */

static inline uint64_t
rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND             \
	do {                     \
		v0 += v1;            \
		v1 = rotl64(v1, 13); \
		v1 ^= v0;            \
		v0 = rotl64(v0, 32); \
		v2 += v3;            \
		v3 = rotl64(v3, 16); \
		v3 ^= v2;            \
		v0 += v3;            \
		v3 = rotl64(v3, 21); \
		v3 ^= v0;            \
		v2 += v1;            \
		v1 = rotl64(v1, 17); \
		v1 ^= v2;            \
		v2 = rotl64(v2, 32); \
	} while (0)

static uint64_t
siphash24(uint64_t k0, uint64_t k1, const unsigned char *p, size_t len)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	uint64_t m, b = (uint64_t)len << 56;
	size_t i, left = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		m = 0;
		for (int j = 7; j >= 0; j--)
			m = (m << 8) | p[i + (size_t)j];
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; j < left; j++)
		b |= (uint64_t)p[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- helpers ------------------------------------------------------------ */

static int64_t
sat_sub(int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_sub_overflow(a, b, &r))
		return b > 0 ? INT64_MIN : INT64_MAX;
	return r;
}

/* First logical index whose ts is > t (after) or >= t (!after); the
 * events are in ts order. */
static uint32_t
bound(const struct vkey *k, int64_t t, int after)
{
	uint32_t lo = 0, hi = k->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (after ? EV(k, mid).ts > t : EV(k, mid).ts >= t)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static uint32_t
upper_bound(const struct vkey *k, int64_t t)
{
	return bound(k, t, 1);
}

static uint32_t
lower_bound(const struct vkey *k, int64_t t)
{
	return bound(k, t, 0);
}

static void
lru_unlink(struct vshard *sh, struct vkey *k)
{
	if (k->lprev)
		k->lprev->lnext = k->lnext;
	else
		sh->lru_head = k->lnext;
	if (k->lnext)
		k->lnext->lprev = k->lprev;
	else
		sh->lru_tail = k->lprev;
	k->lprev = k->lnext = NULL;
}

static void
lru_push_head(struct vshard *sh, struct vkey *k)
{
	k->lprev = NULL;
	k->lnext = sh->lru_head;
	if (sh->lru_head)
		sh->lru_head->lprev = k;
	sh->lru_head = k;
	if (sh->lru_tail == NULL)
		sh->lru_tail = k;
}

static void
key_evict(struct vshard *sh, struct vkey *k)
{
	struct vkey **pp = &sh->buckets[k->hash & (sh->nbuckets - 1)];
	while (*pp != k)
		pp = &(*pp)->hnext;
	*pp = k->hnext;
	lru_unlink(sh, k);
	sh->nkeys--;
	sh->nevents -= k->n;
	free(k->ev);
	free(k);
}

static struct vkey *
key_find(struct vshard *sh, uint64_t h, int dim, const char *key, size_t klen)
{
	for (struct vkey *k = sh->buckets[h & (sh->nbuckets - 1)]; k; k = k->hnext)
		if (k->hash == h && k->dim == dim && k->klen == klen &&
		    memcmp(k->key, key, klen) == 0)
			return k;
	return NULL;
}

/* Doubles the bucket array; on allocation failure chains just get longer. */
static void
shard_grow(struct vshard *sh)
{
	size_t nb = sh->nbuckets * 2;
	struct vkey **b = calloc(nb, sizeof(*b));
	if (b == NULL)
		return;
	for (size_t i = 0; i < sh->nbuckets; i++) {
		struct vkey *k = sh->buckets[i], *next;
		for (; k; k = next) {
			next = k->hnext;
			k->hnext = b[k->hash & (nb - 1)];
			b[k->hash & (nb - 1)] = k;
		}
	}
	free(sh->buckets);
	sh->buckets = b;
	sh->nbuckets = nb;
}

static struct vkey *
key_create(struct velocity *v, struct vshard *sh, uint64_t h, int dim, const char *key,
           size_t klen)
{
	struct vkey *k;
	if (sh->nkeys >= sh->nbuckets && sh->nbuckets < v->max_keys_shard)
		shard_grow(sh);
	if ((k = calloc(1, sizeof(*k) + klen + 1)) == NULL)
		return NULL;
	k->hash = h;
	k->dim = (uint8_t)dim;
	k->klen = (uint16_t)klen;
	memcpy(k->key, key, klen);
	k->hnext = sh->buckets[h & (sh->nbuckets - 1)];
	sh->buckets[h & (sh->nbuckets - 1)] = k;
	lru_push_head(sh, k);
	sh->nkeys++;
	return k;
}

/* Makes room for one more event. */
/* Moves k's ring into a new one of ncap slots (a power of two, >= k->n),
 * oldest event first. */
static int
key_resize(struct vkey *k, uint32_t ncap)
{
	struct vev *nev;

	if ((nev = malloc((size_t)ncap * sizeof(*nev))) == NULL)
		return FGW_ERR_NOMEM;
	for (uint32_t i = 0; i < k->n; i++)
		nev[i] = EV(k, i);
	free(k->ev);
	k->ev = nev;
	k->cap = ncap;
	k->head = 0;
	return FGW_OK;
}

static int
key_reserve(struct vkey *k)
{
	if (k->n < k->cap)
		return FGW_OK;
	return key_resize(k, k->cap ? k->cap * 2 : 2);
}

/* Drops the first cnt events of k. */
static void
key_drop_front(struct vshard *sh, struct vkey *k, uint32_t cnt)
{
	k->head = (k->head + cnt) & (k->cap - 1);
	k->n -= cnt;
	sh->nevents -= cnt;
}

/* Halves a ring that is mostly empty after pruning. */
static void
key_shrink(struct vkey *k)
{
	uint32_t ncap = k->cap;
	while (ncap > 8 && k->n * 4 < ncap)
		ncap /= 2;
	/* Out of memory: the larger ring stays, which is only wasteful. */
	if (ncap != k->cap)
		(void)key_resize(k, ncap);
}

static size_t
key_len(const char *key)
{
	size_t n = strnlen(key, VELOCITY_KEY_MAX);
	return n;
}

static struct vshard *
shard_of(struct velocity *v, uint64_t h)
{
	return &v->shard[h >> 60];
}

/* The shard that holds (dim, key), locked; *h is the key's keyed hash. */
static struct vshard *
shard_lock(struct velocity *v, enum velocity_dim dim, const char *key, size_t klen,
           uint64_t *h)
{
	struct vshard *sh;

	*h = siphash24(v->k0 ^ (uint64_t)dim, v->k1, (const unsigned char *)key, klen);
	sh = shard_of(v, *h);
	pthread_mutex_lock(&sh->mu);
	return sh;
}

/* Inserts an event into k (locked). Returns 0 or FGW_ERR_NOMEM; an event
 * that is already out of retention is silently ignored. */
static int
key_insert(struct velocity *v, struct vshard *sh, struct vkey *k, int64_t ts,
           int64_t amount, uint32_t flags)
{
	int64_t ret = atomic_load(&v->retention_ms), newest, cutoff;
	uint32_t p, cut;
	int r;

	newest = k->n ? EV(k, k->n - 1).ts : ts;
	if (ts > newest)
		newest = ts;
	cutoff = sat_sub(newest, ret);
	if (ts <= cutoff)
		return FGW_OK;
	if ((cut = upper_bound(k, cutoff)) > 0) {
		key_drop_front(sh, k, cut);
		key_shrink(k);
	}
	if (k->n >= v->max_per_key) {
		if (ts < EV(k, 0).ts)
			return FGW_OK; /* older than everything a full key keeps */
		key_drop_front(sh, k, 1);
	}
	if ((r = key_reserve(k)) != FGW_OK)
		return r;
	p = upper_bound(k, ts);
	for (uint32_t j = k->n; j > p; j--)
		EV(k, j) = EV(k, j - 1);
	EV(k, p) = (struct vev){ .ts = ts, .amount = amount, .flags = flags };
	k->n++;
	sh->nevents++;
	return FGW_OK;
}

/* After a record: keeps the shard within its caps and drops up to two
 * idle keys whose newest event is out of retention as seen from ts. */
static void
shard_trim(struct velocity *v, struct vshard *sh, struct vkey *keep, int64_t ts)
{
	int64_t cutoff = sat_sub(ts, atomic_load(&v->retention_ms));
	while ((sh->nkeys > v->max_keys_shard || sh->nevents > v->max_events_shard) &&
	       sh->lru_tail != NULL && sh->lru_tail != keep)
		key_evict(sh, sh->lru_tail);
	for (int i = 0; i < 2; i++) {
		struct vkey *t = sh->lru_tail;
		if (t == NULL || t == keep || (t->n > 0 && EV(t, t->n - 1).ts > cutoff))
			break;
		key_evict(sh, t);
	}
}

static int
record(struct velocity *v, enum velocity_dim dim, const char *key, int64_t ts_ms,
       int64_t amount, uint32_t flags, int mark)
{
	size_t klen;
	uint64_t h;
	struct vshard *sh;
	struct vkey *k;
	int r = FGW_OK, created = 0;

	if (v == NULL || key == NULL || (int)dim < 0 || dim >= VELOCITY_NDIMS || amount < 0)
		return FGW_ERR_INVALID;
	if ((klen = key_len(key)) == 0)
		return FGW_ERR_INVALID;
	sh = shard_lock(v, dim, key, klen, &h);
	if ((k = key_find(sh, h, (int)dim, key, klen)) == NULL) {
		if ((k = key_create(v, sh, h, (int)dim, key, klen)) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		created = 1;
	} else {
		lru_unlink(sh, k);
		lru_push_head(sh, k);
	}
	if (mark && !created) {
		for (uint32_t i = lower_bound(k, ts_ms); i < k->n && EV(k, i).ts == ts_ms; i++) {
			struct vev *e = &EV(k, i);
			if ((e->flags & VEV_ATTEMPT) && !(e->flags & VEV_DECLINE)) {
				e->flags |= VEV_DECLINE;
				goto trim;
			}
		}
	}
	if ((r = key_insert(v, sh, k, ts_ms, amount, flags)) != FGW_OK) {
		if (k->n == 0)
			key_evict(sh, k);
		goto out;
	}
trim:
	shard_trim(v, sh, k, ts_ms);
out:
	pthread_mutex_unlock(&sh->mu);
	return r;
}

/* ---- public ------------------------------------------------------------- */

int
velocity_new(const struct velocity_opts *opts, struct velocity **out)
{
	struct velocity *v;
	uint64_t seed[2];
	size_t got = 0;
	int i;

	*out = NULL;
	if (opts && (opts->retention_ms < 0))
		return FGW_ERR_INVALID;
	while (got < sizeof(seed)) {
		ssize_t n = getrandom((char *)seed + got, sizeof(seed) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return FGW_ERR_IO;
		got += (size_t)n;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return FGW_ERR_NOMEM;
	v->k0 = seed[0];
	v->k1 = seed[1];
	atomic_store(&v->retention_ms,
	             opts && opts->retention_ms ? opts->retention_ms : 24LL * 3600 * 1000);
	v->max_per_key = opts && opts->max_events_per_key ? opts->max_events_per_key : 512;
	if (v->max_per_key > (1u << 24))
		v->max_per_key = 1u << 24;
	v->max_keys_shard = ((opts && opts->max_keys ? opts->max_keys : 200000) + VEL_SHARDS -
	                     1) /
	                    VEL_SHARDS;
	v->max_events_shard = ((opts && opts->max_events ? opts->max_events : 1000000) +
	                       VEL_SHARDS - 1) /
	                      VEL_SHARDS;
	if (v->max_events_shard < v->max_per_key)
		v->max_events_shard = v->max_per_key;
	for (i = 0; i < VEL_SHARDS; i++) {
		struct vshard *sh = &v->shard[i];
		sh->nbuckets = 64;
		if ((sh->buckets = calloc(sh->nbuckets, sizeof(*sh->buckets))) == NULL ||
		    pthread_mutex_init(&sh->mu, NULL) != 0) {
			free(sh->buckets);
			while (i-- > 0) {
				pthread_mutex_destroy(&v->shard[i].mu);
				free(v->shard[i].buckets);
			}
			free(v);
			return FGW_ERR_NOMEM;
		}
	}
	*out = v;
	return FGW_OK;
}

void
velocity_free(struct velocity *v)
{
	if (v == NULL)
		return;
	for (int i = 0; i < VEL_SHARDS; i++) {
		struct vshard *sh = &v->shard[i];
		struct vkey *k = sh->lru_head, *next;
		for (; k; k = next) {
			next = k->lnext;
			free(k->ev);
			free(k);
		}
		free(sh->buckets);
		pthread_mutex_destroy(&sh->mu);
	}
	free(v);
}

int
velocity_record(struct velocity *v, enum velocity_dim dim, const char *key, int64_t ts_ms,
                int64_t amount, int declined)
{
	return record(v, dim, key, ts_ms, amount, VEV_ATTEMPT | (declined ? VEV_DECLINE : 0),
	              0);
}

int
velocity_mark_declined(struct velocity *v, enum velocity_dim dim, const char *key,
                       int64_t ts_ms)
{
	return record(v, dim, key, ts_ms, 0, VEV_DECLINE, 1);
}

int
velocity_query_windows(struct velocity *v, enum velocity_dim dim, const char *key,
                       int64_t now_ms, const int64_t *windows_ms, size_t n,
                       struct velocity_stats *out)
{
	struct velocity_stats run = { 0, 0, 0 };
	size_t klen, j = 0;
	uint64_t h;
	struct vshard *sh;
	struct vkey *k;

	if (n)
		memset(out, 0, n * sizeof(*out));
	if (v == NULL || key == NULL || (int)dim < 0 || dim >= VELOCITY_NDIMS)
		return FGW_ERR_INVALID;
	for (size_t i = 0; i < n; i++)
		if (windows_ms[i] < 0 || (i > 0 && windows_ms[i] < windows_ms[i - 1]))
			return FGW_ERR_INVALID;
	if ((klen = key_len(key)) == 0)
		return FGW_ERR_INVALID;
	sh = shard_lock(v, dim, key, klen, &h);
	if ((k = key_find(sh, h, (int)dim, key, klen)) != NULL) {
		/* newest to oldest: an event of age a is in every window > a */
		for (uint32_t i = k->n; i-- > 0 && j < n;) {
			const struct vev *e = &EV(k, i);
			int64_t age = sat_sub(now_ms, e->ts);
			while (j < n && windows_ms[j] <= age)
				out[j++] = run;
			if (j == n)
				break;
			if (e->flags & VEV_ATTEMPT) {
				run.count++;
				if (__builtin_add_overflow(run.sum, e->amount, &run.sum))
					run.sum = INT64_MAX;
			}
			if (e->flags & VEV_DECLINE)
				run.declines++;
		}
	}
	pthread_mutex_unlock(&sh->mu);
	while (j < n)
		out[j++] = run;
	return FGW_OK;
}

int
velocity_query(struct velocity *v, enum velocity_dim dim, const char *key, int64_t now_ms,
               int64_t window_ms, struct velocity_stats *out)
{
	return velocity_query_windows(v, dim, key, now_ms, &window_ms, 1, out);
}

void
velocity_ensure_retention(struct velocity *v, int64_t ms)
{
	int64_t cur = atomic_load(&v->retention_ms);
	while (cur < ms && !atomic_compare_exchange_weak(&v->retention_ms, &cur, ms))
		;
}

int64_t
velocity_retention_ms(const struct velocity *v)
{
	return atomic_load(&((struct velocity *)v)->retention_ms);
}

void
velocity_usage(struct velocity *v, size_t *keys, size_t *events)
{
	size_t nk = 0, ne = 0;
	for (int i = 0; i < VEL_SHARDS; i++) {
		pthread_mutex_lock(&v->shard[i].mu);
		nk += v->shard[i].nkeys;
		ne += v->shard[i].nevents;
		pthread_mutex_unlock(&v->shard[i].mu);
	}
	if (keys)
		*keys = nk;
	if (events)
		*events = ne;
}

const char *
velocity_dim_name(enum velocity_dim dim)
{
	switch (dim) {
	case VELOCITY_CARD:
		return "card";
	case VELOCITY_CUSTOMER:
		return "customer";
	case VELOCITY_IP:
		return "ip";
	case VELOCITY_EMAIL:
		return "email";
	default:
		return "?";
	}
}
