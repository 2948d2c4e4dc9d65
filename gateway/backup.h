/*
 * gateway/backup.h — encrypted backups of the database and its audit
 * trail, their retention and their upload to S3-compatible storage; used
 * by the daemon's backup thread and by `flairctl backup`.
 *
 * A backup file BACKUP_DIR/flairgw-YYYYMMDDTHHMMSS.mmmZ.fgwbk is the key
 * ring's secretstream encryption (crypto/keys.h) of the container
 *
 *   "FGWBKPLAIN1\n" || u64be(db_len) || snapshot.db || u64be(json_len) ||
 *   export.json
 *
 * where snapshot.db is an online-backup-API copy and export.json the audit
 * trail and transactions as JSON. Its BLAKE2b-256 (of the encrypted file)
 * goes into the backup.created audit event. Nothing here runs on a
 * reactor thread: every function does file and network I/O.
 *
 * Every function returns 0 or a negative FGW_ERR_* code.
 */
#ifndef FGW_GATEWAY_BACKUP_H
#define FGW_GATEWAY_BACKUP_H

#include <stdatomic.h>
#include <stdint.h>

#include "gateway/config.h"

struct keyring;
struct event_base;
struct store;
struct store_waker;

#define BACKUP_NAME_MAX 64

struct backup_info {
	char name[BACKUP_NAME_MAX];
	char path[1100];
	int64_t bytes;
	char blake2b[65];
	int64_t transactions;
	int64_t audit_seq;
};

/* Takes a backup of cfg->database into cfg->backup_dir. */
int backup_make(const struct fgw_config *cfg, struct keyring *kr,
                struct backup_info *out);
/* Decrypts a backup; writes the database to db_out and the JSON export
 * to json_out, each unless NULL; neither may exist (FGW_ERR_EXISTS), and
 * neither is left behind on failure. FGW_ERR_CRYPTO for a file that is
 * not an intact backup of this key ring. */
int backup_open(struct keyring *kr, const char *path, const char *db_out,
                const char *json_out);
/* Hex BLAKE2b-256 of a file. */
int backup_checksum(const char *path, char hex[65]);
/* The details JSON of a backup.created event (malloc'ed). */
int backup_details_json(const struct backup_info *b, char **out);

/* Names of the backups in dir, oldest first (malloc'ed array of malloc'ed
 * strings; free with backup_names_free). */
int backup_list(const char *dir, char ***names, int *n);
void backup_names_free(char **names, int n);
/* Retention: keeps the newest keep_last, plus the newest of each UTC day
 * for keep_days days back from now_ms; deletes the rest. *removed counts
 * the files deleted. */
int backup_prune(const char *dir, int keep_last, int keep_days, int64_t now_ms,
                 int *removed);

/* One PUT of the file to the configured S3 bucket (AWS Signature V4);
 * FGW_ERR_UNAVAILABLE with why filled on any failure. A transfer in
 * progress is aborted (FGW_ERR_SHUTDOWN) once *stop is set (stop may be
 * NULL). */
int backup_upload_once(const struct fgw_config *cfg, const char *path, const char *name,
                       atomic_int *stop, struct fgw_why *why);
/* {"bucket":…,"attempts":N[,"error":…]} for the upload events (malloc'ed). */
int backup_upload_details(const char *bucket, int attempts, const char *error,
                          char **out);
/* Uploads with up to cfg->s3_retries retries, waiting s3_retry_base_ms,
 * doubled each time (at most 30 s), between them; returns early with
 * FGW_ERR_SHUTDOWN once *stop is set. *attempts counts the tries. */
int backup_upload(const struct fgw_config *cfg, const char *path, const char *name,
                  atomic_int *stop, int *attempts, struct fgw_why *why);

/* The time of the newest backup in dir from its name
 * (flairgw-YYYYMMDDTHHMMSS.mmmZ.fgwbk), in ms; 0 when there is none. Reads
 * the directory: never on a reactor. */
int64_t backup_newest_ms(const char *dir);
/* What the scheduler last published of backup_newest_ms(backup_dir): read
 * at start, after each scheduled backup and once a minute (a backup taken
 * by `flairctl backup now` shows within that minute). Safe on any thread;
 * 0 before the scheduler has started or when there is no backup. */
int64_t backup_last_success_ms(void);

/* The daemon's schedule: timers on base for audit checkpoints and
 * backups; backups run on their own thread and record their outcome as
 * audit events through the store (jobs completed on w). */
struct backup_sched;
int backup_sched_start(const struct fgw_config *cfg, struct keyring *kr, struct store *st,
                       struct event_base *base, struct store_waker *w,
                       struct backup_sched **out);
/* Stops the timers, waits for a running backup (its upload is cut short)
 * and writes a last checkpoint. Call before store_close, on base's thread. */
void backup_sched_stop(struct backup_sched *s);

#endif
