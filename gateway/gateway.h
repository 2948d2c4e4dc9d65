/*
 * gateway/gateway.h — the daemon's shared state and its reactors
 * (private to the gateway room).
 *
 * One struct gateway, read-only after start-up except for atomics and the
 * idempotency table; N struct reactor, each owned by its thread: its own
 * event_base, evhttp, SO_REUSEPORT listener, curl multi (httpc), store
 * waker and read connection.
 */
#ifndef FGW_GATEWAY_GATEWAY_H
#define FGW_GATEWAY_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>

#include "crypto/keys.h"
#include "gateway/config.h"
#include "pipeline/pipeline.h"
#include "pipeline/risk.h"
#include "processors/adapter.h"
#include "processors/instance.h"

struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;
struct refusals;
struct idem_table;
struct jwt_verifier;
struct ratelimit;
struct web;
struct keyring;
struct store_ring;
struct velsync;
struct store;
struct store_reader;
struct webhooks;
struct mail;
struct ssl_ctx_st;
struct gw_req;
struct edge_conn;
struct http_req;
struct admit_wait;

/* Counters for /metrics (gateway/metrics.c renders them). */
#define METRICS_LATENCY_BUCKETS 13 /* 5 ms … 30 s, then +Inf */
#define METRICS_ROUTES_MAX 64      /* routes with their own counter */
struct gw_metrics {
	atomic_ullong http_requests;
	atomic_ullong http_4xx;
	atomic_ullong http_5xx;
	atomic_ullong http_status[600];                       /* answers by status code */
	atomic_ullong route_requests[METRICS_ROUTES_MAX + 1]; /* last: no route */
	atomic_ullong txn_started;
	atomic_ullong txn_by_status[8]; /* index: see metrics_status_index */
	atomic_ullong txn_latency_ms_sum;
	atomic_ullong txn_latency_bucket[METRICS_LATENCY_BUCKETS];
	atomic_ullong idem_replays;
	atomic_ullong auth_failures;
	atomic_ullong rate_limited;     /* answered 429 by the request limit */
	atomic_ullong webhooks_in[4];   /* accepted, refused, duplicate, deferred */
	atomic_ullong webhooks_out[3];  /* delivered, retry, failed attempts */
	atomic_ullong resv_moves[2];    /* reservation listener: queued, skipped */
	atomic_ullong mail_attempts[3]; /* sent, retry, failed (given up) */
	atomic_llong payments_running;  /* admit.c: payments in the pipeline */
	atomic_llong payments_waiting;  /* admit.c: payments waiting for a slot */
	atomic_ullong payments_waited;  /* admit.c: payments that had to wait */
};

struct reactor {
	int idx;
	pthread_t thread;
	struct gateway *gw;
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct httpc *httpc; /* the first processor's (outbound webhooks
	                                 use it too) */
	struct httpc *proc_httpc[PROC_INSTANCES_MAX]; /* each processor's own client
	                                 (TLS settings, connection pool) */
	struct store_waker *waker;
	struct store_reader *reader;
	struct pipeline_env env;
	struct event *stop_ev;
	struct event *drain_ev;
	int64_t drain_deadline;
	int draining;
	int inflight;                 /* requests answered later (reqctx.c) */
	struct gw_req *reqs_inflight; /* reqctx.c: every request answered later */
	int ready;                    /* 1 once listening, -1 on failure */
	struct event *resv_timer;     /* reservations: hold expiry (reactor 0) */
	int resv_sweeping;            /* a sweep job is queued */
	int resv_publishing;          /* reservation events being queued */
	struct reconciler *recon;     /* reactor 0 only */
	struct edge_conn *edge_conns; /* edge.c: every open connection */
	struct event *edge_timer;     /* edge.c: deadlines and releases */
	int edge_rejects;             /* edge.c: connections flagged reject_next */
	struct event *accept_ev;      /* re-enables accepting after EMFILE */
	unsigned long accept_errors;  /* accept failures not yet logged */
	int64_t accept_logged;        /* when accept failures were last logged */
	struct http_req *reqs;        /* reqlog.c: requests not logged yet */
	struct event *reqlog_timer;   /* reqlog.c: finds vanished clients */
	int pay_running;              /* admit.c: payments running ... */
	int pay_waiting;              /* ... and waiting for a slot, */
	struct admit_wait *wait_head; /* oldest first */
	struct admit_wait *wait_tail; /* newest */
	struct event *admit_ev;       /* starts the next when one ends */
	int admitting;                /* inside admit.c's own handler call */
};

enum access_log_mode { ACCESS_LOG_MAIN = 0, ACCESS_LOG_OFF, ACCESS_LOG_FILE };

struct gateway {
	struct fgw_config cfg;
	struct keyring *kr;
	/* PostgreSQL store: where the key ring lives (store/keyring.h), and
	 * the source kr reads it through; NULL: keys_dir/keyring.json. */
	struct store_ring *ring;
	struct keyring_source ring_src;
	struct velsync *velsync; /* other instances' attempts (NULL: off) */
	struct store *store;
	struct pipeline pl;
	struct proc_instance procs[PROC_INSTANCES_MAX]; /* in failover order */
	int n_procs;
	struct idem_table *idem;
	struct jwt_verifier *jwt; /* NULL: customer JWTs not accepted */
	struct reactor *rx;
	int n_rx;
	atomic_int stopping;
	struct gw_metrics metrics;
	struct webhooks *wh; /* webhook secrets and delivery */
	struct mail *mail;   /* e-mail notifications; NULL: none */
	int64_t started_at;
	struct ssl_ctx_st *tls;    /* website listener TLS; NULL: plain HTTP */
	struct risk risk;          /* rules and velocity (risk.up: loaded) */
	int pid_fd;                /* pid_file, locked while we run */
	int log_fd;                /* log_file, reopened on SIGUSR1; -1: standard error */
	int data_dir_lock;         /* DATA_DIR/flairgw.lock, locked while we run */
	char instance_id[40];      /* DATA_DIR/instance.id (store_opts.instance_id) */
	struct refusals *refusals; /* bounds audit rows of refused requests */
	unsigned char admin_token_hash[32]; /* BLAKE2b-256 of admin_token_file */
	int has_admin_token;
	struct ratelimit *rl;             /* request limit buckets (gateway/browser.h) */
	struct web *web;                  /* flair.js and the demo (gateway/web.h) */
	enum access_log_mode access_mode; /* access_log: the main log, off, a file */
	int access_fd;                    /* ACCESS_LOG_FILE: the file, reopened on SIGUSR1 */
};
/* server.c: opens access_log again (SIGUSR1). */
void server_reopen_access_log(struct gateway *gw);

/* routes.c: the HTTP surface. */
void routes_handle(struct evhttp_request *req, void *arg); /* arg: reactor */
/* metrics.c: counting, and the text exposition of /metrics. */
/* The txn_by_status index of an outcome: its state, or rejected (1:
 * refused before anything was recorded). */
int metrics_status_index(enum txn_state state, int rejected);
/* An answer with this status code (counted once per response). */
void metrics_http_answer(struct gw_metrics *m, int status);
/* A finished transaction: its outcome and the time it took. */
void metrics_txn_done(struct gw_metrics *m, enum txn_state state, int rejected,
                      int64_t ms);
/* GET /metrics: the counters, and the backlogs read from the store
 * through store_read (off the reactor on PostgreSQL). */
void metrics_serve(struct reactor *rx, struct evhttp_request *req);

/* server.c: reactors. */
/* listen is HOST:PORT and resolves (nothing is bound): 0, or an error
 * with why naming it. */
int server_listen_check(const char *listen_addr, struct fgw_why *why);
int server_start(struct gateway *gw, struct fgw_why *why);
/* Asks every reactor to drain and stop; returns when all have stopped. */
void server_stop(struct gateway *gw);

#endif
