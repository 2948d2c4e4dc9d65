/*
 * core/log.h — leveled logging, one line per call, thread-safe.
 *
 * Define LOG_MODULE ("store", "pipeline", ...) before including this header.
 * log_*() skip formatting entirely below the configured level. Lines are
 * plain text or one JSON object per line (log_setup(..., json=1, ...)).
 * As a last line of defence every line is scrubbed: any run of 13 or more
 * digits (a possible PAN), also split by spaces or dashes as
 * card_digit_run defines, is replaced before it is written.
 */
#ifndef FGW_CORE_LOG_H
#define FGW_CORE_LOG_H

#include <stddef.h>

#ifndef LOG_MODULE
#define LOG_MODULE "fgw"
#endif

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern int log_current_level;

/* fd: where lines go (2 for stderr). json: 1 for JSON lines. */
void log_setup(int level, int json, int fd);
/* Returns 0 and sets *level, or FGW_ERR_INVALID. */
int log_level_parse(const char *name, int *level);

/* The request (its X-Request-Id) the calling thread works for: every line
 * it logs carries it, until cleared. Set by the HTTP dispatcher around a
 * handler and by every point that resumes a request's work later (the
 * pipeline runner, from the id its transaction carries). NULL or "" clears. */
#define LOG_REQUEST_ID_MAX 129 /* 128 characters and the NUL */
void log_request_set(const char *id);
/* "" when none. */
const char *log_request_get(void);
/* Where lines go now (access log lines share it). */
int log_fd_get(void);
/* Writes one whole line (ending in '\n') with one write(2). Not scrubbed:
 * only for lines made of values the caller produced or checked (the
 * access log: a request id is checked with card_find_pan, and masking
 * digit runs in it would make it unfindable). */
void log_write_line(int fd, const char *line, size_t len);

void log_emit(int level, const char *module, const char *txn_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lvl, txn, ...)                                \
	do {                                                     \
		if ((lvl) <= log_current_level)                      \
			log_emit((lvl), LOG_MODULE, (txn), __VA_ARGS__); \
	} while (0)

#define log_error(...) LOG_AT(LOG_LVL_ERROR, NULL, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARN, NULL, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, NULL, __VA_ARGS__)
#define log_txn_error(t, ...) LOG_AT(LOG_LVL_ERROR, (t), __VA_ARGS__)
#define log_txn_warn(t, ...) LOG_AT(LOG_LVL_WARN, (t), __VA_ARGS__)
#define log_txn_info(t, ...) LOG_AT(LOG_LVL_INFO, (t), __VA_ARGS__)
#define log_txn_debug(t, ...) LOG_AT(LOG_LVL_DEBUG, (t), __VA_ARGS__)

/* Replaces the digits of every run of >= 13 digits (card_digit_run: spaces
 * and dashes between digits allowed) in buf with '#'. Exposed for tests
 * and for error bodies. */
void log_scrub_digits(char *buf);

#endif
