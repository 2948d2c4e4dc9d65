/*
 * crypto/tls.c — server TLS context: TLS 1.2+, no compression, no
 * renegotiation, server cipher preference, certificate and key checked
 * against each other at start-up so a mismatch stops the daemon with the
 * file named instead of failing every handshake later.
 */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/err.h"
#include "crypto/tls.h"

static int
fail(struct fgw_why *why, const char *what, const char *file, int r)
{
	unsigned long e = ERR_get_error();
	char reason[160];
	ERR_error_string_n(e, reason, sizeof(reason));
	fgw_why_set(why, NULL, 0, 0, "%s %s: %s", what, file, e ? reason : "unusable");
	ERR_clear_error();
	return r;
}

int
tls_server_ctx_new(const char *cert_file, const char *key_file, SSL_CTX **out,
                   struct fgw_why *why)
{
	SSL_CTX *ctx = NULL;
	int r;

	*out = NULL;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		r = fail(why, "TLS", "context", FGW_ERR_NOMEM);
		goto out;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		r = fail(why, "TLS", "minimum version", FGW_ERR_CRYPTO);
		goto out;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		r = fail(why, "tls_cert_file", cert_file, FGW_ERR_INVALID);
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		r = fail(why, "tls_key_file", key_file, FGW_ERR_INVALID);
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		r = fail(why, "tls_key_file does not match", cert_file, FGW_ERR_INVALID);
		goto out;
	}
	*out = ctx;
	ctx = NULL;
	r = FGW_OK;
out:
	SSL_CTX_free(ctx);
	return r;
}

int
tls_client_files_check(const char *prefix, const char *ca_file, const char *cert_file,
                       const char *key_file, struct fgw_why *why)
{
	SSL_CTX *ctx = NULL;
	char what[64];
	int r;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		r = fail(why, "TLS", "context", FGW_ERR_NOMEM);
		goto out;
	}
	if (ca_file != NULL && ca_file[0] != '\0' &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		snprintf(what, sizeof(what), "%s_ca_file", prefix);
		r = fail(why, what, ca_file, FGW_ERR_INVALID);
		goto out;
	}
	if (cert_file != NULL && cert_file[0] != '\0') {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
			snprintf(what, sizeof(what), "%s_client_cert", prefix);
			r = fail(why, what, cert_file, FGW_ERR_INVALID);
			goto out;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
			snprintf(what, sizeof(what), "%s_client_key", prefix);
			r = fail(why, what, key_file, FGW_ERR_INVALID);
			goto out;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(what, sizeof(what), "%s_client_key does not match", prefix);
			r = fail(why, what, cert_file, FGW_ERR_INVALID);
			goto out;
		}
	}
	r = FGW_OK;
out:
	SSL_CTX_free(ctx);
	return r;
}

void
tls_server_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

SSL *
tls_server_conn_new(SSL_CTX *ctx)
{
	return SSL_new(ctx);
}
