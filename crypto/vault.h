/*
 * crypto/vault.h — vault cryptography: PAN encryption under the active
 * data key, decryption under any known (active or retired) data key,
 * keyed fingerprints, and random tokens.
 *
 * Vault blob format (text, safe to store): "v1:<dk_id>:<base64(nonce||ct)>"
 * encrypted with XChaCha20-Poly1305, associated data = the token, so a blob
 * cannot be moved to another token. The key id is in every blob.
 */
#ifndef FGW_CRYPTO_VAULT_H
#define FGW_CRYPTO_VAULT_H

#include <stddef.h>

struct keyring;
struct secbuf;

/* Writes "tok_" + 8 base62 characters of the creation time (ms) + 16
 * random ones (needs 29 bytes; core/util.h fgw_random_id). Tokens are
 * never derived from the PAN. */
int vault_new_token(char *out, size_t outlen);
/* Encrypts pan under the active data key; *blob is malloc'ed text. */
int vault_encrypt(struct keyring *kr, const char *token, const struct secbuf *plain,
                  char **blob);
/* Decrypts a blob into a guarded buffer. FGW_ERR_NOT_FOUND for an unknown
 * key id, FGW_ERR_CRYPTO when authentication fails. */
int vault_decrypt(struct keyring *kr, const char *token, const char *blob,
                  struct secbuf **plain);
/* Re-encrypts a blob under the active key (rewrap). *out is malloc'ed. */
int vault_rewrap(struct keyring *kr, const char *token, const char *blob, char **out);
/* Key id of a blob into id (needs 32). */
int vault_blob_key_id(const char *blob, char *id, size_t idlen);
/* Keyed BLAKE2b-256 of the PAN digits as 64 hex chars + NUL. Same card,
 * same fingerprint; no brute force without the key. Spaces and dashes in
 * pan are skipped; anything else, or fewer than 12 / more than 19 digits,
 * is FGW_ERR_INVALID. The fingerprint key never rotates, so fingerprints
 * stay comparable across data key rotations. */
int vault_fingerprint(struct keyring *kr, const char *pan, size_t len, char out[65]);

#endif
