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

struct cJSON;

struct route {
	const char *path; /* exact path, or a pattern in which a segment
	                            that is just '*' matches any one non-empty
	                            path segment */
	enum evhttp_cmd_type method;
	void (*handler)(struct reactor *rx, struct evhttp_request *req, const char *path);
};

/* Route tables, each ended by { NULL }. */
extern const struct route txn_routes[];
extern const struct route methods_routes[];
extern const struct route resv_routes[];
extern const struct route webhook_routes[];
extern const struct route txnops_routes[];
extern const struct route web_routes[];

/* Every route in one flat numbering (per-route metrics): how many, route
 * i (NULL past the end), and a method's name. */
int http_routes_count(void);
const struct route *http_route(int i);
const char *http_method_name(enum evhttp_cmd_type m);

/* Answers with a JSON body (copied). */
void http_send_json(struct reactor *rx, struct evhttp_request *req, int status,
                    const char *body);
/* Answers {"error": code, "message": message, "requestId": id}. */
void http_send_error(struct reactor *rx, struct evhttp_request *req, int status,
                     const char *code, const char *message);
/* The same with "param": the JSON path of the offending field (a header
 * by its name), or no param when param is NULL or "". */
void http_send_error_param(struct reactor *rx, struct evhttp_request *req, int status,
                           const char *code, const char *message, const char *param);
/* Remote address of the request's connection ("" if unknown). */
void http_peer_address(struct evhttp_request *req, char *out, size_t outlen);
/* The n-th ('*') segment of path matched by pattern into out; 0 or
 * FGW_ERR_NOT_FOUND / FGW_ERR_TOO_LARGE. */
int http_path_segment(const char *pattern, const char *path, int n, char *out,
                      size_t outlen);

/* ---- request ids and the access log (reqlog.c) ------------------------ */

#define HTTP_REQUEST_ID_MAX 128
/* A client's X-Request-Id is used when it is 1 to 128 visible ASCII
 * characters other than '"' and '\\' and holds no card number. */
int http_request_id_valid(const char *id);
/* Starts the record of a dispatched request (route: its pattern, "-"
 * when none matched): takes or makes its id, answers it as X-Request-Id,
 * and sets it as the thread's log request id. */
void http_req_begin(struct reactor *rx, struct evhttp_request *req, const char *route);
/* The id of a request not answered yet, or NULL. */
const char *http_req_id(struct reactor *rx, struct evhttp_request *req);
/* Just before evhttp_send_reply: the answer's status, body size and body
 * (its transactionId goes on the access log line). */
void http_req_answer(struct reactor *rx, struct evhttp_request *req, int status,
                     size_t bytes, const char *body);
int reqlog_reactor_start(struct reactor *rx);
/* After evhttp_free: writes the lines of requests that never completed. */
void reqlog_reactor_stop(struct reactor *rx);

/* ---- authentication (auth.c) ------------------------------------------ */

enum auth_kind { AUTH_API_KEY = 1, AUTH_JWT = 2 };

struct auth_ctx {
	enum auth_kind kind;
	char client_id[64]; /* API key's client, or jwt_client (configuration) */
	/* The customer, "" when none. Two namespaces that cannot meet:
	 * "key:CLIENT/ID" for the X-Customer-Id of an API-key client (ID has
	 * no '/'), "jwt:NAMESPACE/SUB" for a JWT subject (jwt_namespace). */
	char subject[192];
	char source[64]; /* remote address */
};

/* Authenticates the Bearer credential against the kinds in `accept`
 * (AUTH_API_KEY | AUTH_JWT). On failure answers 401 UNAUTHORIZED, audits
 * auth.failed (rate limited, gateway/refusals.h), and returns
 * FGW_ERR_AUTH. */
int http_authenticate(struct reactor *rx, struct evhttp_request *req, const char *path,
                      int accept, struct auth_ctx *out);
/* The operator credential for /v1/admin routes (admin_token_file; never a
 * website key). 403 FORBIDDEN unless in development mode with a token
 * configured; 401 UNAUTHORIZED (audited like any refusal) for anything
 * but that token. 0 when the caller may go on; out->client_id is
 * "operator". */
int http_authenticate_admin(struct reactor *rx, struct evhttp_request *req,
                            const char *path, struct auth_ctx *out);

/* ---- request bodies and idempotency ----------------------------------- */

/* Requires Content-Type: application/json and a non-empty body; answers
 * 415/400 and returns FGW_ERR_INVALID otherwise. */
int http_json_body(struct reactor *rx, struct evhttp_request *req, const char **body,
                   size_t *len);
/* The Idempotency-Key (or X-Idempotency-Key) header: *key NULL when absent;
 * answers 400 and returns FGW_ERR_INVALID when malformed. */
int http_idempotency_key(struct reactor *rx, struct evhttp_request *req,
                         const char **key);
/* Keyed MAC hex (keyring_request_mac) of method, path and body: what
 * "same request" means. Never a plain hash: the body may carry a card.
 * Returns 0 or a negative FGW_ERR_* code (answer 500). */
int http_request_hash(struct reactor *rx, const char *method, const char *path,
                      const void *body, size_t len, char out[65]);
/* Card numbers where none belongs (cardtext.c). Every string value and
 * member name of a JSON body, at any depth, except card.number: 0 when none
 * holds a card number (card_find_pan), else FGW_ERR_INVALID with why's
 * where the field's JSON path ("" for the body itself; for a member name,
 * the object holding it) and msg the sentence answered. A body that is not
 * JSON passes (its route's parser refuses it). */
int http_card_text_check(const char *body, size_t len, struct fgw_why *why);
/* http_card_text_check plus the customer (X-Customer-Id or the token's
 * subject); answers 400 VALIDATION_ERROR naming the field and returns
 * FGW_ERR_INVALID. Call once per request, before anything is written. */
int http_refuse_card_text(struct reactor *rx, struct evhttp_request *req,
                          const struct auth_ctx *who, const char *body, size_t len);
/* The same over a body the route parsed itself (NULL: not JSON), so it is
 * parsed once; free that tree with http_json_wipe_delete. */
int http_refuse_card_text_tree(struct reactor *rx, struct evhttp_request *req,
                               const struct auth_ctx *who, const struct cJSON *root);
/* Wipes every string of a parsed body, then frees it (NULL is fine). */
void http_json_wipe_delete(struct cJSON *root);
/* What a POST that may carry an Idempotency-Key starts with, in this
 * order: its JSON body (http_json_body), the key (http_idempotency_key,
 * *key NULL when absent) and no card number where none belongs
 * (http_refuse_card_text). 0, or FGW_ERR_INVALID once it has answered. */
int http_keyed_body(struct reactor *rx, struct evhttp_request *req,
                    const struct auth_ctx *who, const char **body, size_t *len,
                    const char **key);
/* The idempotency front door off the reactor. The key is claimed in
 * memory for g, then its stored row is read with store_read; on g's
 * reactor, later (never inside the call), g either answers what the key
 * answers and is finished (the stored answer byte for byte with
 * Idempotent-Replayed: true, 422 different request or a key stored before
 * hashes were keyed, 409 in flight; 500 when the read failed, 503 when the
 * store refused it at shutdown), or it is the key's to run: cont(g) is
 * called with the claim held by g (gw_req_claim), released when g ends. */
struct gw_req;
struct store_reader;
struct idem_look;
typedef void (*http_idem_cont_fn)(struct gw_req *g);
void http_idem_front(struct gw_req *g, const char *scope, const char *key,
                     const char *hash, http_idem_cont_fn cont);
/* The same in three steps, for a route whose own reads go in the same
 * store_read (one hop): http_idem_claim on the reactor (0, or an error to
 * answer 500), http_idem_read in the route's store_read fn (1 when the
 * key answers: the route's own reads are not needed), http_idem_decide in
 * its done with done's rc (1: answered and g finished; 0: go on, the
 * claim held by g). */
int http_idem_claim(struct gw_req *g, const char *scope, const char *key,
                    const char *hash);
int http_idem_read(struct store_reader *rd, struct gw_req *g);
int http_idem_decide(struct gw_req *g, int rc);
/* The store refused the claim of g's key that a request's write carried:
 * another request committed the key first, on this instance or another
 * one sharing the database. Answers, after a store_read of the key's row,
 * what a repeat of the key answers: the stored answer, 422 for different
 * parameters, 409 while the other request is in progress (also when its
 * row is gone again: a claim rolled back since); then g is finished.
 * gw_req_repeat calls it. */
void http_idem_repeat(struct gw_req *g, const char *hash);
/* What release frees of a look still in flight (a forced stop). */
void http_idem_look_free(struct idem_look *l);

/* Parses the body of POST /v1/transactions/{id}/refund ({"amount": N},
 * amount optional: *amount 0 then), capture and cancel ({}). Returns 0, or
 * FGW_ERR_INVALID with the reason for a 400 in why->msg. */
int txnop_body_parse(const char *body, size_t len, enum proc_op op, int64_t *amount,
                     struct fgw_why *why);

#endif
