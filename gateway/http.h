/*
 * gateway/http.h — what every route file shares: JSON answers, errors,
 * authentication, the idempotency front door, and the route table type.
 *
 * A feature adds its routes as a `const struct route NAME_routes[]` table
 * in its own routes_NAME.c, declared here and listed once in routes.c.
 */
#ifndef FGW_GATEWAY_HTTP_H
#define FGW_GATEWAY_HTTP_H

#include <event2/http.h>

#include "gateway/gateway.h"

struct route {
	const char *path;        /* exact path, or a pattern in which a segment
	                            that is just '*' matches any one non-empty
	                            path segment */
	enum evhttp_cmd_type method;
	void (*handler)(struct reactor *rx, struct evhttp_request *req,
	                const char *path);
};

/* Route tables, each ended by { NULL }. */
extern const struct route txn_routes[];
extern const struct route methods_routes[];
extern const struct route resv_routes[];
extern const struct route webhook_routes[];
extern const struct route txnops_routes[];

/* Answers with a JSON body (copied). */
void http_send_json(struct reactor *rx, struct evhttp_request *req, int status,
                    const char *body);
/* Answers {"error": code, "message": message}. */
void http_send_error(struct reactor *rx, struct evhttp_request *req, int status,
                     const char *code, const char *message);
/* Remote address of the request's connection ("" if unknown). */
void http_peer_address(struct evhttp_request *req, char *out, size_t outlen);
/* The n-th ('*') segment of path matched by pattern into out; 0 or
 * FGW_ERR_NOT_FOUND / FGW_ERR_TOO_LARGE. */
int http_path_segment(const char *pattern, const char *path, int n, char *out,
                      size_t outlen);

/* ---- authentication (auth.c) ------------------------------------------ */

enum auth_kind { AUTH_API_KEY = 1, AUTH_JWT = 2 };

struct auth_ctx {
	enum auth_kind kind;
	char client_id[64];      /* API key's client, or the JWT's client_id/aud */
	char subject[128];       /* the customer: JWT sub, or X-Customer-Id sent
	                            by an API-key client ("" when none) */
	char source[64];         /* remote address */
};

/* Authenticates the Bearer credential against the kinds in `accept`
 * (AUTH_API_KEY | AUTH_JWT). On failure answers 401 UNAUTHORIZED, audits
 * auth.failed, and returns FGW_ERR_AUTH. */
int http_authenticate(struct reactor *rx, struct evhttp_request *req,
                      const char *path, int accept, struct auth_ctx *out);

/* ---- request bodies and idempotency ----------------------------------- */

/* Requires Content-Type: application/json and a non-empty body; answers
 * 415/400 and returns FGW_ERR_INVALID otherwise. */
int http_json_body(struct reactor *rx, struct evhttp_request *req,
                   const char **body, size_t *len);
/* The Idempotency-Key (or X-Idempotency-Key) header: *key NULL when absent;
 * answers 400 and returns FGW_ERR_INVALID when malformed. */
int http_idempotency_key(struct reactor *rx, struct evhttp_request *req,
                         const char **key);
/* BLAKE2b-256 hex of method, path and body: what "same request" means. */
void http_request_hash(const char *method, const char *path, const void *body,
                       size_t len, char out[65]);
/* Claims (client, key) or answers: 409 in flight, 422 different request,
 * the stored answer byte for byte (Idempotent-Replayed: true). Returns 0
 * when the request should run (the key is then claimed: release it with
 * idem_end after the answer is committed), 1 when it answered. */
int http_idempotency_front(struct reactor *rx, struct evhttp_request *req,
                           const char *client, const char *key,
                           const char *hash);

/* Parses the body of POST /v1/transactions/{id}/refund ({"amount": N},
 * amount optional: *amount 0 then), capture and cancel ({}). Returns 0, or
 * FGW_ERR_INVALID with *why set to a static reason. */
int txnop_body_parse(const char *body, size_t len, enum proc_op op, int64_t *amount,
                     const char **why);

#endif
