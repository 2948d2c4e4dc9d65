/*
 * tools/flairctl_resv.c — flairctl's reservation and JWT commands:
 * `slots list|add|load|set-capacity` manage the catalogue the daemon sells
 * (the writer serializes these with the daemon's own capacity jobs through
 * SQLite's lock), and `jwt sign|jwks` mint test tokens and key sets.
 */
#define LOG_MODULE "flairctl"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include <sodium.h>
#include "store/reservations.h"
#include "tools/flairctl_resv.h"

static void
print_slot(void *arg, const struct resv_slot *s, const struct resv_experience *e)
{
	char iso[32];
	(void)arg;
	if (fgw_iso8601(s->starts_at, iso, sizeof(iso)) != 0)
		iso[0] = '\0';
	printf("%-24s %-20s %s  %d/%d taken  %s  %lld %s per guest\n", s->id, e->id, iso,
	       s->taken, s->capacity, s->status, (long long)e->price, e->currency);
}

int
ctl_slots_list(struct store_reader *rd, int argc, char **argv)
{
	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: flairctl slots list\n");
		return FGW_ERR_INVALID;
	}
	return resv_slots_each(rd, print_slot, NULL);
}

static int
wait_rc(struct resv_wait *w, int submitted)
{
	if (submitted != 0) {
		resv_wait_done(w, submitted);
		(void)resv_wait_end(w);
		return submitted;
	}
	return resv_wait_end(w);
}

int
ctl_slots_add(struct store *st, int argc, char **argv)
{
	struct resv_slot s;
	struct resv_wait *w = NULL;
	int64_t starts, cap;
	int r;
	if (argc != 4 || fgw_parse_i64(argv[2], 0, 32503680000000LL, &starts) != 0 ||
	    fgw_parse_i64(argv[3], 0, 1000000, &cap) != 0 ||
	    strlen(argv[0]) >= sizeof(s.id) || strlen(argv[1]) >= sizeof(s.experience_id)) {
		fprintf(stderr,
		        "usage: flairctl slots add SLOT_ID EXPERIENCE_ID STARTS_AT_MS CAPACITY\n");
		return FGW_ERR_INVALID;
	}
	memset(&s, 0, sizeof(s));
	fgw_strlcpy(s.id, argv[0], sizeof(s.id));
	fgw_strlcpy(s.experience_id, argv[1], sizeof(s.experience_id));
	fgw_strlcpy(s.status, "open", sizeof(s.status));
	s.starts_at = starts;
	s.capacity = (int)cap;
	if ((r = resv_wait_new(&w)) != 0)
		return r;
	r = wait_rc(w, resv_slot_put(st, NULL, &s, resv_wait_done, w));
	if (r != 0)
		fprintf(stderr, "flairctl: slots add: %s\n", fgw_strerror(r));
	return r;
}

int
ctl_slots_load(struct store *st, int argc, char **argv)
{
	struct fgw_why why = { 0 };
	char *text = NULL;
	size_t len = 0;
	int r;
	if (argc != 1) {
		fprintf(stderr, "usage: flairctl slots load FILE.json\n");
		return FGW_ERR_INVALID;
	}
	if ((r = fgw_read_file(argv[0], 4 << 20, &text, &len)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	if ((r = resv_load_catalogue(st, text, len, &why)) != 0)
		fprintf(stderr, "flairctl: %s: %s\n", argv[0], why.msg);
	free(text);
	return r;
}

int
ctl_slots_set_capacity(struct store *st, int argc, char **argv)
{
	struct resv_wait *w = NULL;
	int64_t cap;
	int r;
	if (argc != 2 || fgw_parse_i64(argv[1], 0, 1000000, &cap) != 0) {
		fprintf(stderr, "usage: flairctl slots set-capacity SLOT_ID CAPACITY\n");
		return FGW_ERR_INVALID;
	}
	if ((r = resv_wait_new(&w)) != 0)
		return r;
	r = wait_rc(w,
	            resv_slot_set_capacity(st, NULL, argv[0], (int)cap, resv_wait_done, w));
	if (r == FGW_ERR_STATE)
		fprintf(stderr, "flairctl: no such slot, or fewer places than already taken\n");
	else if (r != 0)
		fprintf(stderr, "flairctl: slots set-capacity: %s\n", fgw_strerror(r));
	return r;
}

int
ctl_jwt_sign(int argc, char **argv)
{
	char *token = NULL, *secret = NULL;
	size_t slen = 0;
	int r;
	if (argc == 3 && strcmp(argv[0], "--hs256") == 0) {
		/* The secret file is read as the daemon reads
		 * jwt_hs256_secret_file, so a token minted here verifies there
		 * (a test may pass a public key PEM: the algorithm-confusion
		 * attack). */
		if ((r = fgw_read_secret_file(argv[1], 1 << 16, &secret, &slen)) == 0)
			r = jwt_sign_hs256((const unsigned char *)secret, slen, argv[2], NULL,
			                   &token);
		fgw_freezero(secret, slen);
	} else if (argc == 5 && strcmp(argv[0], "--rs256") == 0 &&
	           strcmp(argv[2], "--kid") == 0) {
		r = jwt_sign_rs256(argv[1], argv[3], argv[4], &token);
	} else {
		fprintf(stderr, "usage: flairctl jwt sign (--hs256 SECRET_FILE | --rs256 KEY.pem "
		                "--kid KID) CLAIMS_JSON\n");
		return FGW_ERR_INVALID;
	}
	if (r == 0)
		printf("%s\n", token);
	else
		fprintf(stderr, "flairctl: jwt sign: %s\n", fgw_strerror(r));
	free(token);
	return r;
}

int
ctl_jwt_jwks(int argc, char **argv)
{
	char *json = NULL;
	int r;
	if (argc != 2) {
		fprintf(stderr, "usage: flairctl jwt jwks KEY.pem KID\n");
		return FGW_ERR_INVALID;
	}
	if ((r = jwt_jwks_from_pem(argv[0], argv[1], &json)) == 0)
		printf("%s\n", json);
	else
		fprintf(stderr, "flairctl: jwt jwks: %s\n", fgw_strerror(r));
	free(json);
	return r;
}
