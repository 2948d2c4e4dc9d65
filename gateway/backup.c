/*
 * gateway/backup.c — backups: make, open, retention, S3 upload, and the
 * daemon's schedule (see gateway/backup.h).
 *
 * Layout: container helpers, make/open, list/prune, upload, schedule.
 * The schedule's timers live on the main loop's event_base; the checkpoint
 * is a store job (no I/O on the loop); a backup runs on a thread of its
 * own, so payments never wait for a snapshot or an upload.
 */
#define LOG_MODULE "backup"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/backup.h"
#include "pipeline/audit_emit.h"
#include "pipeline/notify.h"
#include "store/auditor.h"
#include "store/store.h"

#define PLAIN_MAGIC "FGWBKPLAIN1\n"
#define PLAIN_MAGIC_LEN 12
#define SUFFIX ".fgwbk"

/* ---- container ---------------------------------------------------------- */

static int
put_u64(FILE *f, uint64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	return fwrite(b, 1, 8, f) == 8 ? 0 : FGW_ERR_IO;
}

static int
get_u64(FILE *f, uint64_t *v)
{
	unsigned char b[8];
	if (fread(b, 1, 8, f) != 8)
		return FGW_ERR_CRYPTO;
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v = (*v << 8) | b[i];
	return 0;
}

/* Copies exactly len bytes (len < 0: to EOF) from in to out (out NULL:
 * skip). Returns the bytes copied in *done. */
static int
copy_bytes(FILE *in, FILE *out, int64_t len, int64_t *done)
{
	char buf[65536];
	int64_t total = 0;
	while (len < 0 || total < len) {
		size_t want = sizeof(buf);
		size_t n;
		if (len >= 0 && (int64_t)want > len - total)
			want = (size_t)(len - total);
		n = fread(buf, 1, want, in);
		if (n == 0)
			break;
		if (out != NULL && fwrite(buf, 1, n, out) != n)
			return FGW_ERR_IO;
		total += (int64_t)n;
	}
	if (done != NULL)
		*done = total;
	if (ferror(in))
		return FGW_ERR_IO;
	return len >= 0 && total != len ? FGW_ERR_CRYPTO : 0;
}

static int
file_size(const char *path, int64_t *size)
{
	struct stat sb;
	if (stat(path, &sb) != 0)
		return FGW_ERR_IO;
	*size = (int64_t)sb.st_size;
	return 0;
}

static int
path_join(char *out, size_t cap, const char *dir, const char *pre, const char *name,
          const char *suf)
{
	int n = snprintf(out, cap, "%s/%s%s%s", dir, pre, name, suf);
	return n < 0 || (size_t)n >= cap ? FGW_ERR_TOO_LARGE : 0;
}

int
backup_checksum(const char *path, char hex[65])
{
	crypto_generichash_state st;
	unsigned char buf[65536], h[32];
	FILE *f = fopen(path, "rb");
	size_t n;
	int r;
	if (f == NULL)
		return FGW_ERR_IO;
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		crypto_generichash_update(&st, buf, n);
	r = ferror(f) ? FGW_ERR_IO : 0;
	fclose(f);
	if (r == 0) {
		crypto_generichash_final(&st, h, sizeof(h));
		fgw_hex(h, sizeof(h), hex);
	}
	return r;
}

/* flairgw-YYYYMMDDTHHMMSS.mmmZ */
static int
backup_name(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char stamp[32];
	int n;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm) == 0)
		return FGW_ERR_INTERNAL;
	n = snprintf(out, cap, "flairgw-%s.%03dZ" SUFFIX, stamp, (int)(ms % 1000));
	return n < 0 || (size_t)n >= cap ? FGW_ERR_TOO_LARGE : 0;
}

/* ---- make / open -------------------------------------------------------- */

/* rd NULL: a SQLite store, the file snapshot and its export; else a
 * PostgreSQL store read through rd: the export alone (no database part:
 * the database is the operator's pg_dump or base backup). */
static int
make_backup(const struct fgw_config *cfg, struct keyring *kr, struct store_reader *rd,
            struct backup_info *out)
{
	char snap[1100], json[1100], plain[1100], tmp[1100];
	struct store_backup_stats bs;
	FILE *jf = NULL, *pf = NULL, *in = NULL, *ef = NULL;
	int64_t dblen = 0, jlen = 0;
	int r, fd;

	memset(out, 0, sizeof(*out));
	snap[0] = json[0] = plain[0] = tmp[0] = '\0';
	if (fgw_mkdirs(cfg->backup_dir, 0700) != 0) {
		r = FGW_ERR_IO;
		goto out;
	}
	if ((r = backup_name(fgw_now_ms(), out->name, sizeof(out->name))) != 0 ||
	    (r = path_join(out->path, sizeof(out->path), cfg->backup_dir, "", out->name,
	                   "")) != 0 ||
	    (r = path_join(snap, sizeof(snap), cfg->backup_dir, ".", out->name, ".db")) !=
	        0 ||
	    (r = path_join(json, sizeof(json), cfg->backup_dir, ".", out->name, ".json")) !=
	        0 ||
	    (r = path_join(plain, sizeof(plain), cfg->backup_dir, ".", out->name,
	                   ".plain")) != 0 ||
	    (r = path_join(tmp, sizeof(tmp), cfg->backup_dir, ".", out->name, ".tmp")) != 0)
		goto out;
	if (access(out->path, F_OK) == 0) {
		r = FGW_ERR_EXISTS;
		goto out;
	}
	if (rd == NULL && (r = store_backup_snapshot(cfg->database, snap, 5000)) != 0)
		goto out;
	if ((jf = fopen(json, "wbx")) == NULL) {
		r = FGW_ERR_IO;
		goto out;
	}
	if ((r = rd == NULL ? store_backup_export_json(snap, jf, &bs)
	                    : store_backup_export_store(rd, jf, &bs)) != 0)
		goto out;
	if (fclose(jf) != 0) {
		jf = NULL;
		r = FGW_ERR_IO;
		goto out;
	}
	jf = NULL;
	if ((rd == NULL && (r = file_size(snap, &dblen)) != 0) ||
	    (r = file_size(json, &jlen)) != 0)
		goto out;
	/* The plain container: the database and the export back to back. */
	if ((pf = fopen(plain, "w+bx")) == NULL) {
		r = FGW_ERR_IO;
		goto out;
	}
	if (fwrite(PLAIN_MAGIC, 1, PLAIN_MAGIC_LEN, pf) != PLAIN_MAGIC_LEN ||
	    (r = put_u64(pf, (uint64_t)dblen)) != 0)
		goto io;
	if (rd == NULL) {
		if ((in = fopen(snap, "rb")) == NULL ||
		    (r = copy_bytes(in, pf, dblen, NULL)) != 0)
			goto io;
		fclose(in);
		in = NULL;
	}
	if ((r = put_u64(pf, (uint64_t)jlen)) != 0)
		goto io;
	if ((in = fopen(json, "rb")) == NULL || (r = copy_bytes(in, pf, jlen, NULL)) != 0)
		goto io;
	fclose(in);
	in = NULL;
	if (fflush(pf) != 0 || fseek(pf, 0, SEEK_SET) != 0)
		goto io;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
	    (ef = fdopen(fd, "wb")) == NULL) {
		if (fd >= 0)
			close(fd);
		goto io;
	}
	if ((r = keyring_backup_encrypt(kr, pf, ef)) != 0)
		goto out;
	if (fflush(ef) != 0 || fsync(fileno(ef)) != 0)
		goto io;
	fclose(ef);
	ef = NULL;
	if (rename(tmp, out->path) != 0)
		goto io;
	tmp[0] = '\0';
	if ((r = file_size(out->path, &out->bytes)) != 0 ||
	    (r = backup_checksum(out->path, out->blake2b)) != 0)
		goto out;
	out->transactions = bs.transactions;
	out->audit_seq = bs.audit_seq;
	r = 0;
	goto out;
io:
	if (r == 0)
		r = FGW_ERR_IO;
out:
	if (jf != NULL)
		fclose(jf);
	if (in != NULL)
		fclose(in);
	if (pf != NULL)
		fclose(pf);
	if (ef != NULL)
		fclose(ef);
	if (snap[0])
		unlink(snap);
	if (json[0])
		unlink(json);
	if (plain[0])
		unlink(plain);
	if (tmp[0])
		unlink(tmp);
	if (r != 0)
		log_error("backup to %s failed: %s", cfg->backup_dir, fgw_strerror(r));
	return r;
}

int
backup_make(const struct fgw_config *cfg, struct keyring *kr, struct backup_info *out)
{
	return make_backup(cfg, kr, NULL, out);
}

int
backup_open(struct keyring *kr, const char *path, const char *db_out,
            const char *json_out)
{
	FILE *in = NULL, *pf = NULL, *out = NULL;
	char magic[PLAIN_MAGIC_LEN];
	uint64_t len = 0;
	int r, db_made = 0, json_made = 0;

	if ((in = fopen(path, "rb")) == NULL) {
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	/* The plaintext goes to an unlinked temporary file, never a name. */
	if ((pf = tmpfile()) == NULL) {
		r = FGW_ERR_IO;
		goto out;
	}
	if ((r = keyring_backup_decrypt(kr, in, pf)) != 0)
		goto out;
	if (fseek(pf, 0, SEEK_SET) != 0 ||
	    fread(magic, 1, sizeof(magic), pf) != sizeof(magic) ||
	    memcmp(magic, PLAIN_MAGIC, PLAIN_MAGIC_LEN) != 0 ||
	    (r = get_u64(pf, &len)) != 0 || len > INT64_MAX) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if (db_out == NULL) {
		if (fseeko(pf, (off_t)len, SEEK_CUR) != 0) {
			r = FGW_ERR_CRYPTO;
			goto out;
		}
	} else {
		if ((out = fopen(db_out, "wbx")) == NULL) {
			r = errno == EEXIST ? FGW_ERR_EXISTS : FGW_ERR_IO;
			goto out;
		}
		db_made = 1;
		if ((r = copy_bytes(pf, out, (int64_t)len, NULL)) != 0)
			goto out;
		if (fclose(out) != 0) {
			out = NULL;
			r = FGW_ERR_IO;
			goto out;
		}
		out = NULL;
	}
	if ((r = get_u64(pf, &len)) != 0 || len > INT64_MAX)
		goto out;
	if (json_out != NULL) {
		if ((out = fopen(json_out, "wbx")) == NULL) {
			r = errno == EEXIST ? FGW_ERR_EXISTS : FGW_ERR_IO;
			goto out;
		}
		json_made = 1;
	}
	if ((r = copy_bytes(pf, out, (int64_t)len, NULL)) != 0)
		goto out;
	r = 0;
out:
	if (out != NULL && fclose(out) != 0 && r == 0)
		r = FGW_ERR_IO;
	if (pf != NULL)
		fclose(pf);
	if (in != NULL)
		fclose(in);
	if (r != 0 && db_made)
		unlink(db_out);
	if (r != 0 && json_made)
		unlink(json_out);
	return r;
}

int
backup_details_json(const struct backup_info *b, char **out)
{
	cJSON *o = cJSON_CreateObject();
	int r = FGW_ERR_NOMEM;
	if (o != NULL && cJSON_AddStringToObject(o, "file", b->name) &&
	    cJSON_AddNumberToObject(o, "bytes", (double)b->bytes) &&
	    cJSON_AddStringToObject(o, "blake2b", b->blake2b) &&
	    cJSON_AddNumberToObject(o, "transactions", (double)b->transactions) &&
	    cJSON_AddNumberToObject(o, "auditSeq", (double)b->audit_seq) &&
	    (*out = cJSON_PrintUnformatted(o)) != NULL)
		r = 0;
	cJSON_Delete(o);
	return r;
}

/* ---- list / prune --------------------------------------------------------- */

static int
is_backup_name(const char *n)
{
	size_t len = strlen(n);
	return strncmp(n, "flairgw-", 8) == 0 && len == 8 + 20 + strlen(SUFFIX) &&
	       strcmp(n + len - strlen(SUFFIX), SUFFIX) == 0;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void
backup_names_free(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int
backup_list(const char *dir, char ***names, int *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	int cnt = 0, cap = 0, r;

	*names = NULL;
	*n = 0;
	if (d == NULL)
		return errno == ENOENT ? 0 : FGW_ERR_IO;
	while ((e = readdir(d)) != NULL) {
		if (!is_backup_name(e->d_name))
			continue;
		if (cnt == cap) {
			int nc = cap ? cap * 2 : 16;
			char **nv = realloc(v, (size_t)nc * sizeof(*v));
			if (nv == NULL) {
				r = FGW_ERR_NOMEM;
				goto out;
			}
			v = nv;
			cap = nc;
		}
		if ((v[cnt] = strdup(e->d_name)) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		cnt++;
	}
	/* The UTC timestamp in the name sorts like time. */
	if (cnt > 0)
		qsort(v, (size_t)cnt, sizeof(*v), cmp_names);
	*names = v;
	*n = cnt;
	v = NULL;
	cnt = 0;
	r = 0;
out:
	backup_names_free(v, cnt);
	closedir(d);
	return r;
}

int
backup_prune(const char *dir, int keep_last, int keep_days, int64_t now_ms, int *removed)
{
	char **names = NULL, path[1100], oldest_day[9] = "";
	int n = 0, r;
	*removed = 0;
	if ((r = backup_list(dir, &names, &n)) != 0)
		return r;
	if (keep_days > 0) {
		time_t t = (time_t)(now_ms / 1000) - (time_t)(keep_days - 1) * 86400;
		struct tm tm;
		if (gmtime_r(&t, &tm) == NULL ||
		    strftime(oldest_day, sizeof(oldest_day), "%Y%m%d", &tm) == 0) {
			r = FGW_ERR_INTERNAL;
			goto out;
		}
	}
	/* Newest first: the newest keep_last stay, and the newest of each day
	 * inside the window stays. */
	for (int i = n - 1; i >= 0; i--) {
		const char *day = names[i] + 8; /* YYYYMMDD */
		int keep = (n - 1 - i) < keep_last;
		if (!keep && keep_days > 0 && strncmp(day, oldest_day, 8) >= 0)
			keep = i == n - 1 || strncmp(names[i + 1] + 8, day, 8) != 0;
		if (keep)
			continue;
		if (path_join(path, sizeof(path), dir, "", names[i], "") != 0)
			continue;
		if (unlink(path) == 0) {
			(*removed)++;
			if (path_join(path, sizeof(path), dir, "", names[i], ".uploaded") == 0)
				unlink(path);
		}
	}
	r = 0;
out:
	backup_names_free(names, n);
	return r;
}

/* ---- upload --------------------------------------------------------------- */

static int
read_cred(const char *path, char *out, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	int r;
	if ((r = fgw_read_file(path, cap - 1, &text, &len)) != 0)
		return r;
	while (len > 0 &&
	       (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		len--;
	memcpy(out, text, len);
	out[len] = '\0';
	fgw_freezero(text, len);
	return len > 0 ? 0 : FGW_ERR_INVALID;
}

/* libcurl progress callback: a non-zero return aborts the transfer, so a
 * stopping daemon does not wait out a slow upload. */
static int
upload_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                curl_off_t ulnow)
{
	atomic_int *stop = clientp;
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return stop != NULL && atomic_load(stop) ? 1 : 0;
}

int
backup_upload_details(const char *bucket, int attempts, const char *error, char **out)
{
	cJSON *o = cJSON_CreateObject();
	int r = FGW_ERR_NOMEM;
	if (o != NULL && cJSON_AddStringToObject(o, "bucket", bucket) &&
	    cJSON_AddNumberToObject(o, "attempts", attempts) &&
	    (error == NULL || cJSON_AddStringToObject(o, "error", error)) &&
	    (*out = cJSON_PrintUnformatted(o)) != NULL)
		r = 0;
	cJSON_Delete(o);
	return r;
}

int
backup_upload_once(const struct fgw_config *cfg, const char *path, const char *name,
                   atomic_int *stop, struct fgw_why *why)
{
	char url[1400], sigv4[128], userpwd[600], hashhdr[100];
	char access[256], secret[256];
	unsigned char sha[crypto_hash_sha256_BYTES];
	char shahex[2 * crypto_hash_sha256_BYTES + 1];
	crypto_hash_sha256_state hs;
	struct curl_slist *hdrs = NULL;
	CURL *c = NULL;
	FILE *f = NULL;
	int64_t size = 0;
	long status = 0;
	CURLcode cc;
	int r, n;
	unsigned char buf[65536];
	size_t got;

	fgw_why_set(why, NULL, 0, 0, "%s", "");
	access[0] = secret[0] = userpwd[0] = '\0';
	if ((r = read_cred(cfg->s3_access_key_file, access, sizeof(access))) != 0 ||
	    (r = read_cred(cfg->s3_secret_key_file, secret, sizeof(secret))) != 0) {
		fgw_why_set(why, NULL, 0, 0, "S3 credentials files unreadable");
		goto out;
	}
	n = snprintf(url, sizeof(url), "%s/%s/%s%s", cfg->s3_endpoint, cfg->s3_bucket,
	             cfg->s3_prefix, name);
	if (n < 0 || (size_t)n >= sizeof(url) ||
	    (n = snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3", cfg->s3_region)) < 0 ||
	    (size_t)n >= sizeof(sigv4) ||
	    (n = snprintf(userpwd, sizeof(userpwd), "%s:%s", access, secret)) < 0 ||
	    (size_t)n >= sizeof(userpwd)) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	if ((f = fopen(path, "rb")) == NULL || (r = file_size(path, &size)) != 0) {
		r = FGW_ERR_IO;
		fgw_why_set(why, NULL, 0, 0, "cannot read %s", path);
		goto out;
	}
	/* SigV4 signs the payload hash; sending it spares the server a guess. */
	crypto_hash_sha256_init(&hs);
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
		crypto_hash_sha256_update(&hs, buf, got);
	crypto_hash_sha256_final(&hs, sha);
	fgw_hex(sha, sizeof(sha), shahex);
	rewind(f);
	n = snprintf(hashhdr, sizeof(hashhdr), "x-amz-content-sha256: %s", shahex);
	if (n < 0 || (size_t)n >= sizeof(hashhdr) ||
	    (hdrs = curl_slist_append(NULL, hashhdr)) == NULL ||
	    (c = curl_easy_init()) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(c, CURLOPT_READDATA, f);
	curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4);
	curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, upload_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, stop);
	if ((cc = curl_easy_perform(c)) == CURLE_ABORTED_BY_CALLBACK) {
		fgw_why_set(why, NULL, 0, 0, "stopped");
		r = FGW_ERR_SHUTDOWN;
		goto out;
	}
	if (cc != CURLE_OK) {
		fgw_why_set(why, NULL, 0, 0, "%s", curl_easy_strerror(cc));
		r = FGW_ERR_UNAVAILABLE;
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		fgw_why_set(why, NULL, 0, 0, "HTTP status %ld", status);
		r = FGW_ERR_UNAVAILABLE;
		goto out;
	}
	r = 0;
out:
	if (r != 0 && why != NULL && why->msg[0] == '\0')
		fgw_why_set(why, NULL, 0, 0, "%s", fgw_strerror(r));
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(userpwd, sizeof(userpwd));
	if (c != NULL)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	if (f != NULL)
		fclose(f);
	return r;
}

static pthread_mutex_t wait_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cv = PTHREAD_COND_INITIALIZER;

/* Sleeps ms unless *stop is set (backup_sched_stop signals wait_cv). */
static void
wait_or_stop(atomic_int *stop, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&wait_mu);
	if (stop == NULL || !atomic_load(stop))
		(void)pthread_cond_timedwait(&wait_cv, &wait_mu, &ts);
	pthread_mutex_unlock(&wait_mu);
}

int
backup_upload(const struct fgw_config *cfg, const char *path, const char *name,
              atomic_int *stop, int *attempts, struct fgw_why *why)
{
	int64_t delay = cfg->s3_retry_base_ms;
	struct fgw_why own;
	int r = FGW_ERR_UNAVAILABLE;
	*attempts = 0;
	if (why == NULL)
		why = &own; /* the log line below names the reason */
	for (long long i = 0; i <= cfg->s3_retries; i++) {
		if (stop != NULL && atomic_load(stop))
			return FGW_ERR_SHUTDOWN;
		(*attempts)++;
		if ((r = backup_upload_once(cfg, path, name, stop, why)) == 0)
			return 0;
		if (r == FGW_ERR_SHUTDOWN)
			return r;
		log_warn("upload of %s failed (attempt %d of %lld): %s", name, *attempts,
		         cfg->s3_retries + 1, why->msg);
		if (i == cfg->s3_retries)
			break;
		wait_or_stop(stop, delay);
		delay = delay * 2 > 30000 ? 30000 : delay * 2;
	}
	return r;
}

/* ---- the daemon's schedule ------------------------------------------------ */

/* The newest backup's time, published for /metrics (see backup.h). */
static atomic_llong last_backup_ms;

int64_t
backup_newest_ms(const char *dir)
{
	char **names = NULL;
	struct tm tm;
	int n = 0, ms = 0;
	int64_t at = 0;
	if (dir[0] == '\0' || backup_list(dir, &names, &n) != 0)
		return 0;
	memset(&tm, 0, sizeof(tm));
	if (n > 0 &&
	    sscanf(names[n - 1], "flairgw-%4d%2d%2dT%2d%2d%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
	           &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) == 7) {
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		at = (int64_t)timegm(&tm) * 1000 + ms;
	}
	backup_names_free(names, n);
	return at;
}

int64_t
backup_last_success_ms(void)
{
	return (int64_t)atomic_load(&last_backup_ms);
}

struct backup_sched {
	const struct fgw_config *cfg;
	struct keyring *kr;
	struct store *st;
	struct store_waker *w;
	struct event *cp_ev, *bk_ev, *seen_ev;
	pthread_t thread;
	int thread_live; /* joined by the loop thread only */
	atomic_int busy; /* a backup thread is running */
	atomic_int stop;
	unsigned char pk[32];
	/* PostgreSQL: the backup thread's own connection, which holds the
	 * leader's lock (store_backup_lead) once this instance leads. */
	int pg;
	struct store_reader *rd;
};

static void
checkpoint_done(void *arg, int rc)
{
	(void)arg;
	if (rc != 0)
		log_error("audit checkpoint failed: %s", fgw_strerror(rc));
}

static void
on_checkpoint(evutil_socket_t fd, short what, void *arg)
{
	struct backup_sched *s = arg;
	int r;
	(void)fd;
	(void)what;
	if ((r = store_audit_checkpoint(s->st, s->w, keyring_audit_sign_fn, s->kr, s->pk,
	                                checkpoint_done, s)) != 0)
		log_error("audit checkpoint not queued: %s", fgw_strerror(r));
}

static const char *
s3_configured(const struct fgw_config *cfg)
{
	return cfg->s3_endpoint[0] && cfg->s3_bucket[0] ? cfg->s3_endpoint : NULL;
}

/* Tells the operators (pipeline/notify.h); the mail is queued, never
 * sent from this thread. */
static void
notify_backup_failed(struct backup_sched *s, const char *where, const char *error)
{
	struct notify_var v[] = { { "dir", where }, { "error", error }, { "client", "" } };
	(void)notify_mail(s->st, s->w, "admin_backup_failed", NULL, NULL, "", NULL, v,
	                  sizeof(v) / sizeof(v[0]));
}

/* Uploads every backup without a NAME.uploaded marker, oldest first, so a
 * backup whose upload failed before is retried with the next one. */
static void
upload_pending(struct backup_sched *s)
{
	const struct fgw_config *cfg = s->cfg;
	char **names = NULL, path[1100], marker[1100], *details;
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	int n = 0, attempts = 0, r;

	if (backup_list(cfg->backup_dir, &names, &n) != 0)
		return;
	for (int i = 0; i < n && !atomic_load(&s->stop); i++) {
		if (path_join(path, sizeof(path), cfg->backup_dir, "", names[i], "") != 0 ||
		    path_join(marker, sizeof(marker), cfg->backup_dir, "", names[i],
		              ".uploaded") != 0 ||
		    access(marker, F_OK) == 0)
			continue;
		r = backup_upload(cfg, path, names[i], &s->stop, &attempts, &why);
		if (r == FGW_ERR_SHUTDOWN)
			break;
		if (r == 0) {
			int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd >= 0)
				close(fd);
			log_info("backup %s uploaded to %s/%s after %d attempt(s)", names[i],
			         cfg->s3_endpoint, cfg->s3_bucket, attempts);
		} else {
			log_error(
			    "backup %s not uploaded after %d attempts: %s (retried with the next backup)",
			    names[i], attempts, err);
			notify_backup_failed(s, cfg->s3_endpoint, err);
		}
		details = NULL;
		if (backup_upload_details(cfg->s3_bucket, attempts, r == 0 ? NULL : err,
		                          &details) != 0)
			details = NULL;
		audit_emit(s->st, s->w, "system", "local",
		           r == 0 ? "backup.uploaded" : "backup.upload_failed", names[i],
		           r == 0 ? "success" : "failure", details);
		free(details);
	}
	backup_names_free(names, n);
}

/* PostgreSQL: 1 when this instance makes the backups (it holds the
 * leader's lock on the thread's connection), 0 when another does (the
 * newest backup time is then the trail's). */
static int
pg_lead(struct backup_sched *s)
{
	int64_t last = 0;
	int lead = 0, r;

	if (s->rd == NULL && (r = store_reader_open(s->st, &s->rd)) != 0) {
		log_error("backup: no database connection: %s", fgw_strerror(r));
		return 0;
	}
	if ((r = store_backup_lead(s->rd, &lead)) != 0) {
		log_error("backup: leader's lock not asked: %s", fgw_strerror(r));
		return 0;
	}
	if (!lead) {
		log_debug("backup: another instance on the database makes the backups");
		if (store_backup_last_ms(s->rd, &last) == 0)
			atomic_store(&last_backup_ms, (long long)last);
	}
	return lead;
}

static void *
backup_thread(void *arg)
{
	struct backup_sched *s = arg;
	const struct fgw_config *cfg = s->cfg;
	struct backup_info bi;
	char *details = NULL, pd[96];
	int r, removed = 0;

	if (s->pg && !pg_lead(s)) {
		atomic_store(&s->busy, 0);
		return NULL;
	}
	r = make_backup(cfg, s->kr, s->pg ? s->rd : NULL, &bi);
	if (r == 0 && backup_details_json(&bi, &details) == 0) {
		log_info("backup %s written: %" PRId64 " bytes, blake2b %s", bi.name, bi.bytes,
		         bi.blake2b);
		audit_emit(s->st, s->w, "system", "local", "backup.created", bi.name, "success",
		           details);
	} else {
		snprintf(pd, sizeof(pd), "{\"error\":\"%s\"}",
		         fgw_strerror(r != 0 ? r : FGW_ERR_NOMEM));
		audit_emit(s->st, s->w, "system", "local", "backup.failed", cfg->backup_dir,
		           "failure", pd);
		notify_backup_failed(s, cfg->backup_dir,
		                     fgw_strerror(r != 0 ? r : FGW_ERR_NOMEM));
	}
	free(details);
	if (backup_prune(cfg->backup_dir, (int)cfg->backup_keep_last,
	                 (int)cfg->backup_keep_days, fgw_now_ms(), &removed) == 0 &&
	    removed > 0) {
		snprintf(pd, sizeof(pd), "{\"removed\":%d,\"keepLast\":%lld,\"keepDays\":%lld}",
		         removed, cfg->backup_keep_last, cfg->backup_keep_days);
		audit_emit(s->st, s->w, "system", "local", "backup.pruned", cfg->backup_dir,
		           "success", pd);
	}
	if (s3_configured(cfg))
		upload_pending(s);
	atomic_store(&last_backup_ms, (long long)backup_newest_ms(cfg->backup_dir));
	atomic_store(&s->busy, 0);
	return NULL;
}

/* On the main loop's thread, never a reactor's: it reads the directory. */
static void
on_backup_seen(evutil_socket_t fd, short what, void *arg)
{
	struct backup_sched *s = arg;
	(void)fd;
	(void)what;
	/* PostgreSQL: the backup thread publishes it (this directory holds
	 * only what this instance made while it led). */
	if (!s->pg)
		atomic_store(&last_backup_ms, (long long)backup_newest_ms(s->cfg->backup_dir));
}

static void
on_backup(evutil_socket_t fd, short what, void *arg)
{
	struct backup_sched *s = arg;
	(void)fd;
	(void)what;
	if (atomic_load(&s->busy)) {
		log_warn("backup skipped: the previous one is still running");
		return;
	}
	if (s->thread_live) {
		pthread_join(s->thread, NULL); /* finished: busy is 0 */
		s->thread_live = 0;
	}
	atomic_store(&s->busy, 1);
	if (pthread_create(&s->thread, NULL, backup_thread, s) != 0) {
		atomic_store(&s->busy, 0);
		log_error("backup thread not started");
		return;
	}
	s->thread_live = 1;
}

int
backup_sched_start(const struct fgw_config *cfg, struct keyring *kr, struct store *st,
                   struct event_base *base, struct store_waker *w,
                   struct backup_sched **out)
{
	struct backup_sched *s = calloc(1, sizeof(*s));
	struct timeval tv;
	if (s == NULL)
		return FGW_ERR_NOMEM;
	s->cfg = cfg;
	s->kr = kr;
	s->st = st;
	s->w = w;
	s->pg = strcmp(cfg->store_backend, "postgresql") == 0;
	keyring_audit_public(kr, s->pk);
	atomic_store(&last_backup_ms, (long long)backup_newest_ms(cfg->backup_dir));
	tv.tv_sec = 60;
	tv.tv_usec = 0;
	if ((s->seen_ev = event_new(base, -1, EV_PERSIST, on_backup_seen, s)) == NULL ||
	    event_add(s->seen_ev, &tv) != 0)
		goto fail;
	if (cfg->audit_checkpoint_interval_s > 0) {
		tv.tv_sec = (time_t)cfg->audit_checkpoint_interval_s;
		tv.tv_usec = 0;
		if ((s->cp_ev = event_new(base, -1, EV_PERSIST, on_checkpoint, s)) == NULL ||
		    event_add(s->cp_ev, &tv) != 0)
			goto fail;
	}
	if (cfg->backup_interval_s > 0) {
		tv.tv_sec = (time_t)cfg->backup_interval_s;
		tv.tv_usec = 0;
		if ((s->bk_ev = event_new(base, -1, EV_PERSIST, on_backup, s)) == NULL ||
		    event_add(s->bk_ev, &tv) != 0)
			goto fail;
	}
	*out = s;
	return 0;
fail:
	backup_sched_stop(s);
	return FGW_ERR_NOMEM;
}

void
backup_sched_stop(struct backup_sched *s)
{
	if (s == NULL)
		return;
	if (s->cp_ev != NULL)
		event_free(s->cp_ev);
	if (s->bk_ev != NULL)
		event_free(s->bk_ev);
	if (s->seen_ev != NULL)
		event_free(s->seen_ev);
	pthread_mutex_lock(&wait_mu);
	atomic_store(&s->stop, 1);
	pthread_cond_broadcast(&wait_cv);
	pthread_mutex_unlock(&wait_mu);
	if (s->thread_live)
		pthread_join(s->thread, NULL);
	/* Ends the session: the leader's lock goes to another instance. */
	store_reader_close(s->rd);
	/* A last checkpoint, so rows cut off the tail after a clean stop are
	 * detected too. No waker: store_close commits it. */
	(void)store_audit_checkpoint(s->st, NULL, keyring_audit_sign_fn, s->kr, s->pk, NULL,
	                             NULL);
	free(s);
}
