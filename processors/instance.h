/*
 * processors/instance.h — processor instances: a type (struct proc_type,
 * the protocol) plus one configuration (struct proc_config) plus the
 * context every reactor shares (the breaker). Any number of them, in the
 * configured order; routing picks one by name, failover takes the next.
 *
 * Configuration is one line per instance, `processor NAME key=value...`
 * (proc_settings_line); the older processor_KEY / processor2_KEY
 * directives set KEY of the first / second instance (gateway/config.c).
 */
#ifndef FGW_PROCESSORS_INSTANCE_H
#define FGW_PROCESSORS_INSTANCE_H

#include <stddef.h>

#include "core/err.h"
#include "processors/adapter.h"
#include "processors/breaker.h"

#define PROC_INSTANCES_MAX 8

/* One instance's settings, as configured (nothing loaded yet). */
struct proc_settings {
	char name[32];
	char type[32]; /* a proc_type name; default sandbox */
	char url[256];
	char public_key_file[512]; /* "": keys_dir/processor-NAME.json */
	char secret[256];          /* never logged */
	char secret_file[512];
	char secret_env[64];
	char map_file[512]; /* the type's own description file */
	char api_version[40];
	char ca_file[512];
	char client_cert[512];
	char client_key[512];
	long long verify_tls;         /* default 1 */
	long long timeout_ms;         /* 0: processor_timeout_ms */
	long long connect_timeout_ms; /* 0: processor_connect_timeout_ms */
	long long max_conns;          /* 0: processor_max_conns */
	/* Set with an old processor_KEY / processor2_KEY directive: errors
	 * then name that spelling ("processor_" or "processor2_"). */
	char old_prefix[16];
};

/* Empty settings of instance name with the defaults. */
void proc_settings_init(struct proc_settings *s, const char *name);
/* Sets one key ("url", "timeout_ms", ...). 0, or FGW_ERR_INVALID with
 * why filled (where: "processor eu timeout_ms" or the old spelling). */
int proc_settings_set(struct proc_settings *s, const char *key, const char *value,
                      struct fgw_why *why);
/* Applies a line "NAME key=value..." to the instance of that name in
 * list (n of them, at most max), appended when there is none yet. A bad
 * line changes nothing; why never repeats a value (it may be a secret). */
int proc_settings_line(struct proc_settings *list, int *n, int max, const char *line,
                       struct fgw_why *why);
/* How errors name key of s: "processor_url" (old spelling) or
 * "processor eu url"; key "": the processor itself. */
void proc_settings_where(const struct proc_settings *s, const char *key, char *buf,
                         size_t cap);
/* Whether key is one a processor line takes. */
int proc_settings_key_known(const char *key);

struct proc_instance {
	struct proc_config cfg; /* what the type's functions read */
	const struct proc_type *type;
	struct proc_breaker breaker;
};

/* Fills pi from s: the type, URL, timeout (default_timeout_ms when s has
 * none), the sealing key (key_file, already derived) and the type's own
 * load step. The credential is left to the caller. 0, or an error with
 * why naming the setting. */
int proc_instance_load(struct proc_instance *pi, const struct proc_settings *s,
                       long long default_timeout_ms, struct fgw_why *why);
/* Releases what load took and wipes the credential. */
void proc_instance_free(struct proc_instance *pi);

/* The instance called name among n, or NULL. */
struct proc_instance *proc_instance_find(struct proc_instance *list, int n,
                                         const char *name);

#endif
