/*
 * gateway/startup.h — the daemon's start-up steps, shared by its real
 * start-up (gateway/main.c), `flairgw --check` and `flairctl config check`
 * (private to the gateway room and its tools).
 *
 * Each step reads one part of the configuration and builds what the daemon
 * needs from it into struct gateway. STARTUP_RUN is the daemon's start;
 * STARTUP_CHECK does the same reading and checking without listening,
 * creating, migrating, locking or writing anything. A step reports every
 * problem it finds to a check_report (a problem is one line, naming the
 * directive or file) and returns 0 or the first error. gateway_check runs
 * all of them in check mode, going on after a failed one, so one run names
 * every problem; the daemon stops at the first.
 */
#ifndef FGW_GATEWAY_STARTUP_H
#define FGW_GATEWAY_STARTUP_H

#include "gateway/config.h"

struct gateway;

/* Where problems and notes go: emit(arg, is_problem, message). */
struct check_report {
	int problems;
	int notes;
	void (*emit)(void *arg, int is_problem, const char *msg);
	void *arg;
};

void check_problem(struct check_report *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Something worth saying that is not a problem ("created on first start"). */
void check_note(struct check_report *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

enum startup_mode { STARTUP_RUN, STARTUP_CHECK };

/* Derived paths and cross-field rules (config_finish), every problem. */
int startup_config(struct fgw_config *cfg, struct check_report *rep);
/* data_dir: RUN creates it (0700) and locks it for the life of the
 * process; CHECK only checks that it exists or can be created, and can be
 * written. */
int startup_data_dir(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* log_file can be opened for appending (CHECK; RUN opens it in main). */
int startup_log_file(const struct fgw_config *cfg, struct check_report *rep);
/* listen is HOST:PORT and resolves; never binds. */
int startup_listen(const struct fgw_config *cfg, struct check_report *rep);
/* The KEK and key ring into g->kr; CHECK opens an existing ring without
 * create and leaves g->kr NULL. */
int startup_keyring(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* Processor instances, their sealing keys, maps and credentials. */
int startup_processors(struct gateway *g, struct check_report *rep);
/* The longest timeout of any processor: the reconciler's grace outlasts it. */
long long startup_longest_timeout(const struct gateway *g);
/* Customer JWT verification (JWKS file, HS256 secret) into g->jwt. */
int startup_jwt(struct gateway *g, struct check_report *rep);
/* admin_token_file into g->admin_token_hash. */
int startup_admin_token(struct gateway *g, struct check_report *rep);
/* Webhook secrets into g->wh (RUN also subscribes the outbox). */
int startup_webhooks(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* stages_request / stages_response into g->pl. */
int startup_pipeline(struct gateway *g, struct check_report *rep);
/* rules_file with every list and BIN table it names into g->risk. */
int startup_rules(struct gateway *g, struct check_report *rep);
/* tls_cert_file and tls_key_file into g->tls. */
int startup_tls(struct gateway *g, struct check_report *rep);
/* pid_file: RUN writes and locks it; CHECK checks its directory. */
int startup_pid_file(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* The database: its schema version must be one this build migrates.
 * RUN then opens (creates, migrates) it into g->store; CHECK never opens
 * it for writing. Needs g->kr in RUN. */
int startup_database(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* slots_file: RUN loads it into the store, CHECK checks the document. */
int startup_slots(struct gateway *g, enum startup_mode m, struct check_report *rep);
/* Timing rules between directives (reconcile_grace_ms and timeouts);
 * after startup_processors. */
int startup_timing(struct gateway *g, struct check_report *rep);
/* Frees what the steps built into g (not g itself, not the store). */
void startup_release(struct gateway *g);

/* Every start-up check on a copy of cfg (as config_from_args left it,
 * before config_finish), changing nothing on disk and binding nothing, so
 * it is safe while a daemon runs on the same configuration. 0 when there
 * was no problem, FGW_ERR_INVALID otherwise. */
int gateway_check(const struct fgw_config *cfg, struct check_report *rep);

#endif
