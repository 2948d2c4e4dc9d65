/*
 * crypto/tls.h — the TLS server context for the website listener.
 *
 * One SSL_CTX per daemon, shared by every reactor (SSL_new on a shared
 * context is thread-safe). TLS 1.2 is the minimum; the certificate chain
 * and private key are PEM files from configuration and must match.
 */
#ifndef FGW_CRYPTO_TLS_H
#define FGW_CRYPTO_TLS_H

#include <stddef.h>

#include "core/err.h"

struct ssl_ctx_st;
struct ssl_st;

/* Loads cert_file (chain) and key_file. On error why names the file and
 * the reason and returns FGW_ERR_INVALID / FGW_ERR_CRYPTO. */
int tls_server_ctx_new(const char *cert_file, const char *key_file,
                       struct ssl_ctx_st **out, struct fgw_why *why);
void tls_server_ctx_free(struct ssl_ctx_st *ctx);
/* Loads a processor's TLS client files as each request will (CA bundle,
 * client certificate chain and its key, each optional; key_file given
 * when cert_file is), so a missing or broken one stops start-up instead
 * of failing every payment. prefix names the directives in why. */
int tls_client_files_check(const char *prefix, const char *ca_file, const char *cert_file,
                           const char *key_file, struct fgw_why *why);
/* A new server-side connection object, or NULL. */
struct ssl_st *tls_server_conn_new(struct ssl_ctx_st *ctx);

#endif
