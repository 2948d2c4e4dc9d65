/* tests/unit/test_core.c — core/: card helpers, log scrubbing, utils. */
#include <stdlib.h>
#include <string.h>

#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "tt.h"

static int
test_luhn(void)
{
	TT_BEGIN;
	CHECK(card_luhn_ok("4242424242424242", 16));
	CHECK(card_luhn_ok("4000000000000002", 16));
	CHECK(card_luhn_ok("4000002500003155", 16));
	CHECK(card_luhn_ok("378282246310005", 15));
	CHECK(!card_luhn_ok("4242424242424241", 16));
	CHECK(!card_luhn_ok("42424242424a4242", 16));
	CHECK(!card_luhn_ok("42", 2));
	CHECK(!card_luhn_ok("42424242424242424242", 20));
	/* 12 digits: no brand issues them (was accepted, and then stored as
	 * 6 + 4 with only 2 digits hidden). */
	CHECK(!card_luhn_ok("424242424242", 12));
	CHECK(card_luhn_ok("4222222222222", 13));
end:
	TT_END;
}

static int
test_brand(void)
{
	TT_BEGIN;
	CHECK_STR(card_brand_name(card_brand_of("4242424242424242", 16)), "Visa");
	CHECK_STR(card_brand_name(card_brand_of("5555555555554444", 16)), "Mastercard");
	CHECK_STR(card_brand_name(card_brand_of("2223003122003222", 16)), "Mastercard");
	CHECK_STR(card_brand_name(card_brand_of("378282246310005", 15)), "Amex");
	CHECK_STR(card_brand_name(card_brand_of("6011111111111117", 16)), "Discover");
	CHECK_STR(card_brand_name(card_brand_of("3566002020360505", 16)), "JCB");
	CHECK_STR(card_brand_name(card_brand_of("30569309025904", 14)), "Diners");
	CHECK_STR(card_brand_name(card_brand_of("6200000000000005", 16)), "UnionPay");
	CHECK_STR(card_brand_name(card_brand_of("9999999999999995", 16)), "Unknown");
end:
	TT_END;
}

/* Only the lengths each brand issues are cards. */
static int
test_brand_lengths(void)
{
	TT_BEGIN;
	CHECK(card_pan_ok("4242424242424242", 16));
	CHECK(card_pan_ok("4222222222222", 13));           /* Visa 13 */
	CHECK(card_pan_ok("4111111111111111110", 19));     /* Visa 19 */
	CHECK(card_pan_ok("378282246310005", 15));         /* Amex 15 */
	CHECK(card_pan_ok("30569309025904", 14));          /* Diners 14 */
	CHECK(card_pan_ok("6011111111111117", 16));
	CHECK(!card_pan_ok("424242424242", 12));           /* too short */
	CHECK(!card_pan_ok("42424242424242426", 17));      /* Visa 17 */
	CHECK(!card_pan_ok("3782822463100052", 16));       /* Amex 16 */
	CHECK(!card_pan_ok("555555555555444", 15));        /* Mastercard 15 */
	CHECK(!card_pan_ok("601111111111110", 15));        /* Discover 15 */
	CHECK(!card_length_ok(CARD_BRAND_UNKNOWN, 15));
	CHECK(!card_length_ok(CARD_BRAND_VISA, 14));
end:
	TT_END;
}

/* Card numbers typed into free text: found with or without separators,
 * only when Luhn-valid and 13..19 digits. */
static int
test_find_pan(void)
{
	static const char *const found[] = {
		"4242424242424242",
		"card 4242424242424242 please",
		"4242 4242 4242 4242",
		"4242-4242-4242-4242",
		"x4242424242424242y",
		"4242 4242 4242 4242 12/30",        /* expiry right after */
		"4242424242424242 123",             /* CVC right after */
		"ref 12345 4242 4242 4242 4242",    /* digits right before */
		"4242\t4242  4242 - 4242",
		"4242\xc2\xa0" "4242\xc2\xa0" "4242\xc2\xa0" "4242",  /* no-break spaces */
		"4242\xe2\x80\x93" "4242\xe2\x80\x93" "4242\xe2\x80\x93" "4242", /* en dash */
		"378282246310005",                  /* Amex 15 */
		"4222222222222",                    /* Visa 13 */
		"3056 9309 0259 04",                /* Diners 14 */
		"5555 5555 5555 4444 and more text",
		"card4242424242424242.",            /* glued to a word */
		"4242 4242 4242 4242 h-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
		NULL
	};
	static const char *const clean[] = {
		"",
		"no digits at all",
		"4242424242424241",                 /* not Luhn */
		"424242424242",                     /* 12 digits */
		"phone +1 415-555-0100",
		"2026-12-04 10:30",
		"42424242424242424242",             /* 20 digits, one group */
		"4242    4242 4242 4242",           /* gap of four */
		"4242.4242.4242.4242x",             /* dots are not separators */
		"amount 15000 USD",
		/* UUIDs and digests whose digit groups would pass: their
		 * digits are not a typed card (1 in 300 random UUIDs). */
		"h-42424242-4242-4242-abcd-0123456789ab",
		"42424242-4242-4242-4242-4242abcdef01",
		"sha ab4242424242424242cd0123456789abcdef0123",
		NULL
	};
	size_t s = 0, e = 0;
	TT_BEGIN;
	for (int i = 0; found[i]; i++) {
		if (!card_find_pan(found[i], strlen(found[i]), &s, &e))
			fprintf(stderr, "  not found in \"%s\"\n", found[i]);
		CHECK(card_find_pan(found[i], strlen(found[i]), &s, &e));
		CHECK(e > s && e <= strlen(found[i]));
	}
	CHECK(card_find_pan("ab 4242-4242-4242-4242 cd", 25, &s, &e));
	CHECK_EQ_INT(s, 3);
	CHECK_EQ_INT(e, 22);
	for (int i = 0; clean[i]; i++) {
		if (card_find_pan(clean[i], strlen(clean[i]), &s, &e))
			fprintf(stderr, "  found in \"%s\"\n", clean[i]);
		CHECK(!card_find_pan(clean[i], strlen(clean[i]), &s, &e));
	}
	/* Bounded by len, not by a NUL. */
	CHECK(!card_find_pan("4242424242424242", 12, &s, &e));
	/* A long run of single digits is looked at in overlapping chunks. */
	{
		char buf[400];
		size_t o = 0;
		for (int i = 0; i < 150; i++) {
			buf[o++] = '1';
			buf[o++] = ' ';
		}
		memcpy(buf + o, "4242 4242 4242 4242", 19);
		o += 19;
		CHECK(card_find_pan(buf, o, &s, &e));
		CHECK(!card_find_pan(buf, 300, &s, &e));
	}
end:
	TT_END;
}

static int
test_bin_last4_expiry(void)
{
	char bin[7], last4[5];
	TT_BEGIN;
	card_bin_last4("4000002500003155", 16, bin, last4);
	CHECK_STR(bin, "400000");
	CHECK_STR(last4, "3155");
	/* Short numbers keep 6 digits hidden: shown BIN shrinks. */
	card_bin_last4("378282246310005", 15, bin, last4);
	CHECK_STR(bin, "37828");
	CHECK_STR(last4, "0005");
	card_bin_last4("30569309025904", 14, bin, last4);
	CHECK_STR(bin, "3056");
	card_bin_last4("4222222222222", 13, bin, last4);
	CHECK_STR(bin, "422");
	CHECK_STR(last4, "2222");
	card_bin_last4("424242424242", 12, bin, last4);
	CHECK_STR(bin, "42");
	card_bin_last4("4111111111111111110", 19, bin, last4);
	CHECK_STR(bin, "411111");
	CHECK_STR(last4, "1110");
	/* 2026-11-22 */
	long long now = 1795392000000LL;
	CHECK(card_expiry_ok(11, 2026, now));
	CHECK(card_expiry_ok(1, 2027, now));
	CHECK(!card_expiry_ok(10, 2026, now));
	CHECK(!card_expiry_ok(13, 2030, now));
	CHECK(!card_expiry_ok(0, 2030, now));
end:
	TT_END;
}

static int
test_scrub(void)
{
	char a[] = "card 4242424242424242 failed";
	char b[] = "card 4242 4242 4242 4242 and 4242-4242-4242-4242";
	char c[] = "amount 150000000 ok, id 1234567890123";
	TT_BEGIN;
	log_scrub_digits(a);
	CHECK_STR(a, "card ################ failed");
	log_scrub_digits(b);
	CHECK(strstr(b, "4242") == NULL);
	log_scrub_digits(c);
	CHECK(strstr(c, "150000000") != NULL); /* 9 digits: kept */
	CHECK(strstr(c, "1234567890123") == NULL);
	/* The shapes card_find_pan finds are masked too. */
	{
		char d[] = "n 4242\t4242  4242 - 4242 x";
		char e[] = "n 4242\xc2\xa0" "4242\xc2\xa0" "4242\xc2\xa0" "4242 x";
		char f[] = "n 4242\xe2\x80\x93" "4242\xe2\x80\x93" "4242\xe2\x80\x93" "4242 x";
		log_scrub_digits(d);
		log_scrub_digits(e);
		log_scrub_digits(f);
		CHECK(strstr(d, "4242") == NULL);
		CHECK(strstr(e, "4242") == NULL);
		CHECK(strstr(f, "4242") == NULL);
	}
end:
	TT_END;
}

/* Ids: prefix, 8 time characters, 16 random ones, all base62; they sort
 * by creation time (the store's primary keys stay append-mostly). */
static int
test_ids(void)
{
	static const char b62[] =
	    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	char id[40], prev[40], ids[64][40];
	int64_t t0, t1;
	int distinct_first = 0;
	TT_BEGIN;
	t0 = fgw_now_ms();
	CHECK_EQ_INT(fgw_random_id("tok_", id, sizeof(id)), 0);
	t1 = fgw_now_ms();
	CHECK_EQ_INT(strlen(id), 4 + FGW_ID_CHARS);
	CHECK(strncmp(id, "tok_", 4) == 0);
	CHECK_EQ_INT(strspn(id + 4, b62), FGW_ID_CHARS);
	CHECK(fgw_id_time_ms(id + 4) >= t0 && fgw_id_time_ms(id + 4) <= t1);
	CHECK_EQ_INT(fgw_id_time_ms("0000000!"), -1);
	CHECK_EQ_INT(fgw_id_time_ms("0000001z"), 62 + 61);
	/* The exact size fits; one less does not. */
	CHECK_EQ_INT(fgw_random_id("tok_", id, 4 + FGW_ID_CHARS + 1), 0);
	CHECK_EQ_INT(fgw_random_id("tok_", id, 4 + FGW_ID_CHARS), FGW_ERR_TOO_LARGE);
	/* Later ids sort after earlier ones, byte by byte (strcmp, SQLite's
	 * BINARY collation), across digit and letter boundaries. */
	prev[0] = '\0';
	for (int i = 0; i < 64; i++) {
		fgw_clock_set_offset_ms((int64_t)i * 997 * 61);
		CHECK_EQ_INT(fgw_random_id("txn_", id, sizeof(id)), 0);
		CHECK(strcmp(prev, id) < 0);
		memcpy(prev, id, sizeof(prev));
	}
	/* Ids of one millisecond differ in their random part. */
	fgw_clock_set_offset_ms(0);
	for (int i = 0; i < 64; i++) {
		CHECK_EQ_INT(fgw_random_id("txn_", ids[i], sizeof(ids[i])), 0);
		for (int k = 0; k < i; k++)
			CHECK(strcmp(ids[i] + 4 + FGW_ID_TIME_CHARS,
			             ids[k] + 4 + FGW_ID_TIME_CHARS) != 0);
		distinct_first += ids[i][4 + FGW_ID_TIME_CHARS] != ids[0][4 + FGW_ID_TIME_CHARS];
	}
	CHECK(distinct_first > 32); /* 1 in 62 odds each of being equal */
	/* The time is clamped into its 8 characters. */
	fgw_clock_set_offset_ms(-fgw_now_ms() - 1000);
	CHECK_EQ_INT(fgw_random_id("pm_", id, sizeof(id)), 0);
	CHECK(strncmp(id, "pm_00000000", 11) == 0);
	fgw_clock_set_offset_ms(FGW_ID_TIME_MAX);
	CHECK_EQ_INT(fgw_random_id("pm_", id, sizeof(id)), 0);
	CHECK(strncmp(id, "pm_zzzzzzzz", 11) == 0);
	CHECK_EQ_INT(fgw_id_time_ms(id + 3), FGW_ID_TIME_MAX);
end:
	fgw_clock_set_offset_ms(0);
	TT_END;
}

static int
test_util(void)
{
	char id[40], ts[32];
	int64_t v;
	char *b64 = NULL;
	unsigned char *raw = NULL;
	size_t rawlen = 0;
	TT_BEGIN;
	CHECK_EQ_INT(fgw_random_id("txn_", id, sizeof(id)), 0);
	CHECK_EQ_INT(strlen(id), 28);
	CHECK(strncmp(id, "txn_", 4) == 0);
	CHECK_EQ_INT(fgw_random_id("txn_", id, 10), FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(fgw_iso8601(1704111300000LL, ts, sizeof(ts)), 0);
	CHECK_STR(ts, "2024-01-01T12:15:00Z");
	CHECK_EQ_INT(fgw_parse_i64("42", 0, 100, &v), 0);
	CHECK_EQ_INT(v, 42);
	CHECK_EQ_INT(fgw_parse_i64("4x", 0, 100, &v), FGW_ERR_INVALID);
	CHECK_EQ_INT(fgw_parse_i64("101", 0, 100, &v), FGW_ERR_INVALID);
	CHECK_EQ_INT(fgw_parse_i64("", 0, 100, &v), FGW_ERR_INVALID);
	CHECK_EQ_INT(fgw_b64_encode("hello", 5, &b64), 0);
	CHECK_STR(b64, "aGVsbG8=");
	CHECK_EQ_INT(fgw_b64_decode(b64, strlen(b64), &raw, &rawlen), 0);
	CHECK_EQ_INT(rawlen, 5);
	CHECK(memcmp(raw, "hello", 5) == 0);
	free(raw);
	raw = NULL;
	CHECK_EQ_INT(fgw_b64_decode("a$==", 4, &raw, &rawlen), FGW_ERR_INVALID);
	int64_t t0 = fgw_now_ms();
	fgw_clock_set_offset_ms(3600000);
	CHECK(fgw_now_ms() - t0 >= 3600000);
	fgw_clock_set_offset_ms(0);
end:
	free(b64);
	free(raw);
	TT_END;
}

static int
test_json_strict(void)
{
	static const struct { const char *text; size_t len; int ok; } cases[] = {
		{ "{\"a\":1}", 7, 1 },
		{ " {\"a\":\"caf\xc3\xa9 \xf0\x9f\x8e\x89\"}\r\n", 21, 1 },
		{ "{\"a\":1} x", 10, 0 },          /* trailing garbage */
		{ "{\"a\":1}{}", 9, 0 },           /* two values */
		{ "{\"a\":\"\xff\"}", 9, 0 },   /* invalid byte */
		{ "{\"a\":\"\xc0\xaf\"}", 10, 0 },/* overlong */
		{ "{\"a\":\"\xed\xa0\x80\"}", 11, 0 }, /* surrogate */
		{ "{\"a\":\"\x01\"}", 9, 0 },   /* raw control character */
		{ "{\"a\":\"x\0\"}", 10, 0 },    /* raw NUL inside the length */
		{ "{\"a\":1}", 5, 0 },             /* only part of the text */
		{ "", 0, 0 },
	};
	cJSON *v = NULL;
	TT_BEGIN;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = fgw_json_parse_strict(cases[i].text, cases[i].len);
		if ((v != NULL) != cases[i].ok)
			fprintf(stderr, "  case %zu\n", i);
		CHECK((v != NULL) == cases[i].ok);
		cJSON_Delete(v);
		v = NULL;
	}
end:
	cJSON_Delete(v);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "json_strict", test_json_strict },
	{ "luhn", test_luhn },
	{ "brand", test_brand },
	{ "brand_lengths", test_brand_lengths },
	{ "find_pan", test_find_pan },
	{ "bin_last4_expiry", test_bin_last4_expiry },
	{ "scrub", test_scrub },
	{ "util", test_util },
	{ "ids", test_ids },
	{ NULL, NULL },
};
TT_MAIN(cases)
