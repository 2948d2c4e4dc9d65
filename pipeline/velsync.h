/*
 * pipeline/velsync.h — velocity counts across instances. Each instance
 * counts its own attempts in memory when it decides them (pipeline/
 * risk.h); on a store that several instances share (PostgreSQL) it also
 * adds the other instances' attempts, read from the transactions table
 * every refresh interval. docs/rules.md says how fresh that makes them.
 *
 * A refresh reads the rows created since the previous refresh minus a
 * lag (a row is stamped created_at before its commit, so it may become
 * visible a little after a refresh that covered its time), and records
 * every row it has not counted yet: rows of this instance's own attempts
 * are known by id (velsync_own, called when they are decided) and
 * skipped, rows of other instances are remembered by id while they can
 * still be read again. A row another instance declined after this one
 * counted it is counted as a decline at the next refresh that still
 * reads it. The first refresh reads the whole retention window: it is
 * the start-up replay.
 *
 * Thread safety: velsync_own from any thread (reactors, under the risk's
 * decide lock); velsync_refresh from one thread at a time (the gateway's
 * main loop starts one store_read at a time: on PostgreSQL it runs on a
 * store read thread, on SQLite in place on the main thread).
 */
#ifndef FGW_PIPELINE_VELSYNC_H
#define FGW_PIPELINE_VELSYNC_H

#include <stdint.h>

struct risk;
struct store_reader;
struct velsync;

/* lag_ms: how long after its created_at a row may commit and still be
 * counted (> 0). 0 or FGW_ERR_NOMEM / FGW_ERR_INVALID. */
int velsync_new(struct risk *rk, int64_t lag_ms, struct velsync **out);
void velsync_free(struct velsync *vs);

/* This instance decided txn_id (created at ts_ms) and counted it. */
void velsync_own(struct velsync *vs, const char *txn_id, int64_t ts_ms);

/* Reads and records what other instances added since the last refresh
 * (everything in the retention window the first time). *added (may be
 * NULL): attempts recorded; *declines (may be NULL): later declines of
 * attempts counted before. 0 or the reader's FGW_ERR_* code (nothing is
 * lost: the next refresh reads the same window again). */
int velsync_refresh(struct velsync *vs, struct store_reader *rd, int64_t now_ms,
                    int64_t *added, int64_t *declines);

/* Ids held (own and others'), for tests and metrics. */
int64_t velsync_held(struct velsync *vs);
/* Since velsync_new: other instances' attempts recorded, and refreshes
 * that succeeded (for /metrics; any thread). */
void velsync_totals(struct velsync *vs, int64_t *added, int64_t *refreshes);

#endif
