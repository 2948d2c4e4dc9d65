/*
 * crypto/box.c — authenticated boxes with a cached shared key (box.h).
 *
 * The per-message code (box_seal_afternm / box_open_afternm) takes the
 * shared key as an argument: crypto/keys.c calls it with the key ring's
 * cached keys, the standalone side below with the key pair's own cache.
 * Then base64 around both.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"

#define NONCE crypto_box_NONCEBYTES
#define PEERS_MAX 16 /* a sandbox talks to a handful of gateway keys */

void
box_seal_afternm(const unsigned char *k, int dir, const void *msg, size_t len,
                 unsigned char *out)
{
	randombytes_buf(out, NONCE);
	out[0] = (unsigned char)((out[0] & 0xfe) | (dir & 1));
	crypto_box_easy_afternm(out + NONCE, msg, len, out, k);
}

int
box_open_afternm(const unsigned char *k, int dir, const unsigned char *in, size_t inlen,
                 unsigned char *out)
{
	if (inlen < BOX_OVERHEAD || (in[0] & 1) != (dir & 1))
		return FGW_ERR_CRYPTO;
	if (crypto_box_open_easy_afternm(out, in + NONCE, inlen - NONCE, in, k) != 0)
		return FGW_ERR_CRYPTO;
	return FGW_OK;
}

/* Base64 of nonce || MAC || c, from a sealer that fills len + 40 bytes. */
static int
seal_b64(int (*sealer)(void *ctx, unsigned char *out), void *ctx, size_t len, char **b64)
{
	unsigned char *c = NULL;
	int r;

	*b64 = NULL;
	if (len > SIZE_MAX - BOX_OVERHEAD)
		return FGW_ERR_INVALID;
	if ((c = malloc(len + BOX_OVERHEAD)) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = sealer(ctx, c)) == FGW_OK)
		r = fgw_b64_encode(c, len + BOX_OVERHEAD, b64);
	free(c);
	return r;
}

struct seal_ctx {
	struct keyring *kr;
	struct sealed_keypair *kp;
	const char *key_id;
	const unsigned char *peer;
	const void *msg;
	size_t len;
};

static int
ring_sealer(void *arg, unsigned char *out)
{
	struct seal_ctx *c = arg;
	return keyring_box_seal_to(c->kr, c->key_id, c->peer, c->msg, c->len, out);
}

int
box_seal_b64(struct keyring *kr, const char *key_id, const unsigned char peer_pk[32],
             const void *msg, size_t len, char **b64)
{
	struct seal_ctx c = { kr, NULL, key_id, peer_pk, msg, len };

	if (msg == NULL && len > 0) {
		*b64 = NULL;
		return FGW_ERR_INVALID;
	}
	return seal_b64(ring_sealer, &c, len, b64);
}

int
box_b64_open(int (*opener)(void *ctx, const unsigned char *c, size_t clen,
                           struct secbuf **plain),
             void *ctx, const char *b64, size_t b64len, struct secbuf **plain)
{
	unsigned char *c = NULL;
	size_t clen = 0;
	int r;

	*plain = NULL;
	if (b64 == NULL)
		return FGW_ERR_INVALID;
	if ((r = fgw_b64_decode(b64, b64len, &c, &clen)) != FGW_OK)
		return r;
	r = opener(ctx, c, clen, plain);
	free(c);
	return r;
}

static int
ring_opener(void *arg, const unsigned char *c, size_t clen, struct secbuf **plain)
{
	struct seal_ctx *x = arg;
	return keyring_box_open_from(x->kr, x->key_id, x->peer, c, clen, plain);
}

int
box_open_b64(struct keyring *kr, const char *key_id, const unsigned char peer_pk[32],
             const char *b64, size_t b64len, struct secbuf **plain)
{
	struct seal_ctx x = { kr, NULL, key_id, peer_pk, NULL, 0 };

	return box_b64_open(ring_opener, &x, b64, b64len, plain);
}

/* ---- the standalone side -------------------------------------------- */

struct box_peers {
	unsigned char pk[PEERS_MAX][crypto_box_PUBLICKEYBYTES];
	struct secbuf *k[PEERS_MAX];
	size_t n;
	size_t next; /* the slot replaced next once all are used */
};

void
box_peers_free(struct box_peers *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++)
		secbuf_free(p->k[i]);
	free(p);
}

/* The cached shared key for peer, computed on first use. FGW_ERR_CRYPTO:
 * a peer key crypto_box cannot use (a low-order point). */
static int
peer_key(struct sealed_keypair *kp, const unsigned char peer[32], const unsigned char **k)
{
	struct box_peers *p;
	struct secbuf *nk = NULL;
	size_t slot;
	int r;

	if (kp == NULL || kp->sk == NULL)
		return FGW_ERR_INVALID;
	if (kp->peers == NULL && (kp->peers = calloc(1, sizeof(*kp->peers))) == NULL)
		return FGW_ERR_NOMEM;
	p = kp->peers;
	for (size_t i = 0; i < p->n; i++) {
		if (memcmp(p->pk[i], peer, crypto_box_PUBLICKEYBYTES) == 0) {
			*k = p->k[i]->data;
			return FGW_OK;
		}
	}
	if ((r = secbuf_alloc(&nk, crypto_box_BEFORENMBYTES)) != FGW_OK)
		return r;
	if (crypto_box_beforenm(nk->data, peer, kp->sk->data) != 0) {
		secbuf_free(nk);
		return FGW_ERR_CRYPTO;
	}
	if (p->n < PEERS_MAX) {
		slot = p->n++;
	} else {
		slot = p->next;
		p->next = (p->next + 1) % PEERS_MAX;
		secbuf_free(p->k[slot]);
	}
	memcpy(p->pk[slot], peer, crypto_box_PUBLICKEYBYTES);
	p->k[slot] = nk;
	*k = nk->data;
	return FGW_OK;
}

static int
standalone_sealer(void *arg, unsigned char *out)
{
	struct seal_ctx *c = arg;
	const unsigned char *k = NULL;
	int r;

	if ((r = peer_key(c->kp, c->peer, &k)) == FGW_OK)
		box_seal_afternm(k, BOX_DIR_STANDALONE, c->msg, c->len, out);
	return r;
}

int
box_seal_with(struct sealed_keypair *kp, const unsigned char peer_pk[32], const void *msg,
              size_t len, char **b64)
{
	struct seal_ctx c = { NULL, kp, NULL, peer_pk, msg, len };

	if (msg == NULL && len > 0) {
		*b64 = NULL;
		return FGW_ERR_INVALID;
	}
	return seal_b64(standalone_sealer, &c, len, b64);
}

static int
standalone_opener(void *arg, const unsigned char *c, size_t clen, struct secbuf **plain)
{
	struct seal_ctx *x = arg;
	const unsigned char *k = NULL;
	struct secbuf *p = NULL;
	int r;

	if (clen < BOX_OVERHEAD)
		return FGW_ERR_CRYPTO;
	if ((r = peer_key(x->kp, x->peer, &k)) == FGW_OK &&
	    (r = secbuf_alloc(&p, clen - BOX_OVERHEAD)) == FGW_OK &&
	    (r = box_open_afternm(k, BOX_DIR_RING, c, clen, p->data)) == FGW_OK) {
		*plain = p;
		p = NULL; /* owned by the caller now */
	}
	secbuf_free(p);
	return r;
}

int
box_open_with(struct sealed_keypair *kp, const unsigned char peer_pk[32], const char *b64,
              size_t b64len, struct secbuf **plain)
{
	struct seal_ctx x = { NULL, kp, NULL, peer_pk, NULL, 0 };

	return box_b64_open(standalone_opener, &x, b64, b64len, plain);
}
