/*
 * crypto/box.h — authenticated boxes between two known X25519 keys, the
 * "x25519-box" algorithm of a processor public key file (docs/keys.md).
 *
 * A sealed box (crypto/sealed.h) costs two X25519 operations per message
 * and proves nothing about its sender. A box here uses the shared key of
 * (the gateway's box key, the processor's key): crypto_box_beforenm is
 * computed once per pair and cached in guarded memory, and each message
 * is crypto_box_easy_afternm with a fresh random 24-byte nonce — no
 * X25519 at all per message, and only the two key holders can make one.
 *
 * Wire form: standard base64 of nonce (24) || MAC (16) || ciphertext.
 * Both directions share the key, so the nonce's lowest bit names the
 * direction (0: made by the key ring side, the gateway; 1: made by the
 * standalone side, the processor) and an opener refuses the other
 * direction's boxes: the nonce is authenticated, so a box cannot be
 * reflected back to its sender.
 */
#ifndef FGW_CRYPTO_BOX_H
#define FGW_CRYPTO_BOX_H

#include <stddef.h>

struct keyring;
struct secbuf;
struct sealed_keypair;

/* Gateway side, through the key ring (the shared key is cached with the
 * box key key_id, which must be current or in grace, and wiped with it).
 * FGW_ERR_NOT_FOUND: unknown or expired key id; FGW_ERR_CRYPTO: the peer
 * key is unusable (low order) or the box does not open; FGW_ERR_INVALID:
 * bad base64. *b64 is malloc'ed; *plain is guarded. */
int box_seal_b64(struct keyring *kr, const char *key_id, const unsigned char peer_pk[32],
                 const void *msg, size_t len, char **b64);
int box_open_b64(struct keyring *kr, const char *key_id, const unsigned char peer_pk[32],
                 const char *b64, size_t b64len, struct secbuf **plain);

/* Processor side, with a standalone key pair (the sandbox). Shared keys
 * are cached in the key pair (a few peers, oldest replaced first, wiped by
 * sealed_keypair_clear). Not thread safe: one thread per key pair. */
int box_seal_with(struct sealed_keypair *kp, const unsigned char peer_pk[32],
                  const void *msg, size_t len, char **b64);
int box_open_with(struct sealed_keypair *kp, const unsigned char peer_pk[32],
                  const char *b64, size_t b64len, struct secbuf **plain);

/* Room-internal (crypto/sealed.c, crypto/keys.c). */
enum { BOX_DIR_RING = 0, BOX_DIR_STANDALONE = 1 }; /* who made a box */
struct box_peers;
void box_peers_free(struct box_peers *p);
/* The per-message part, given the shared key k (32 bytes): seal writes
 * nonce || MAC || c into out (len + 40 bytes) with the direction bit dir;
 * open reads in (inlen >= 40) into out (inlen - 40 bytes). */
#define BOX_OVERHEAD 40
/* Decodes standard base64 and hands the bytes to opener (sealed boxes use
 * it too). FGW_ERR_INVALID: NULL or bad base64; else what opener says. */
int box_b64_open(int (*opener)(void *ctx, const unsigned char *c, size_t clen,
                               struct secbuf **plain),
                 void *ctx, const char *b64, size_t b64len, struct secbuf **plain);
void box_seal_afternm(const unsigned char *k, int dir, const void *msg, size_t len,
                      unsigned char *out);
int box_open_afternm(const unsigned char *k, int dir, const unsigned char *in,
                     size_t inlen, unsigned char *out);

#endif
