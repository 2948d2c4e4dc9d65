/* tests/unit/test_core.c — core/: card helpers, log scrubbing, utils. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/txnstate.h"
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
	CHECK(card_pan_ok("4222222222222", 13));       /* Visa 13 */
	CHECK(card_pan_ok("4111111111111111110", 19)); /* Visa 19 */
	CHECK(card_pan_ok("378282246310005", 15));     /* Amex 15 */
	CHECK(card_pan_ok("30569309025904", 14));      /* Diners 14 */
	CHECK(card_pan_ok("6011111111111117", 16));
	CHECK(!card_pan_ok("424242424242", 12));      /* too short */
	CHECK(!card_pan_ok("42424242424242426", 17)); /* Visa 17 */
	CHECK(!card_pan_ok("3782822463100052", 16));  /* Amex 16 */
	CHECK(!card_pan_ok("555555555555444", 15));   /* Mastercard 15 */
	CHECK(!card_pan_ok("601111111111110", 15));   /* Discover 15 */
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
		"4242 4242 4242 4242 12/30",     /* expiry right after */
		"4242424242424242 123",          /* CVC right after */
		"ref 12345 4242 4242 4242 4242", /* digits right before */
		"4242\t4242  4242 - 4242",
		"4242\xc2\xa0"
		"4242\xc2\xa0"
		"4242\xc2\xa0"
		"4242", /* no-break spaces */
		"4242\xe2\x80\x93"
		"4242\xe2\x80\x93"
		"4242\xe2\x80\x93"
		"4242",              /* en dash */
		"378282246310005",   /* Amex 15 */
		"4222222222222",     /* Visa 13 */
		"3056 9309 0259 04", /* Diners 14 */
		"5555 5555 5555 4444 and more text",
		"card4242424242424242.", /* glued to a word */
		"4242 4242 4242 4242 h-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
		NULL
	};
	static const char *const clean[] = {
		"", "no digits at all", "4242424242424241", /* not Luhn */
		"424242424242",                             /* 12 digits */
		"phone +1 415-555-0100", "2026-12-04 10:30",
		"42424242424242424242",   /* 20 digits, one group */
		"4242    4242 4242 4242", /* gap of four */
		"4242.4242.4242.4242x",   /* dots are not separators */
		"amount 15000 USD",
		/* UUIDs and digests whose digit groups would pass: their
		 * digits are not a typed card (1 in 300 random UUIDs). */
		"h-42424242-4242-4242-abcd-0123456789ab", "42424242-4242-4242-4242-4242abcdef01",
		"sha ab4242424242424242cd0123456789abcdef0123", NULL
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
		char e[] = "n 4242\xc2\xa0"
		           "4242\xc2\xa0"
		           "4242\xc2\xa0"
		           "4242 x";
		char f[] = "n 4242\xe2\x80\x93"
		           "4242\xe2\x80\x93"
		           "4242\xe2\x80\x93"
		           "4242 x";
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
	{
		long long b = 7;
		CHECK_EQ_INT(fgw_parse_bool("yes", &b), 0);
		CHECK_EQ_INT(b, 1);
		CHECK_EQ_INT(fgw_parse_bool("off", &b), 0);
		CHECK_EQ_INT(b, 0);
		CHECK_EQ_INT(fgw_parse_bool("true", &b), 0);
		CHECK_EQ_INT(b, 1);
		CHECK_EQ_INT(fgw_parse_bool("Yes", &b), FGW_ERR_INVALID);
		CHECK_EQ_INT(fgw_parse_bool("", &b), FGW_ERR_INVALID);
		CHECK_EQ_INT(b, 1);
	}
	CHECK_EQ_INT(fgw_b64_encode("hello", 5, &b64), 0);
	CHECK_STR(b64, "aGVsbG8=");
	CHECK_EQ_INT(fgw_b64_decode(b64, strlen(b64), &raw, &rawlen), 0);
	CHECK_EQ_INT(rawlen, 5);
	CHECK(memcmp(raw, "hello", 5) == 0);
	free(raw);
	raw = NULL;
	CHECK_EQ_INT(fgw_b64_decode("a$==", 4, &raw, &rawlen), FGW_ERR_INVALID);
	{
		/* Every byte: the 22 hex digits have their value, nothing else. */
		int digits = 0;
		for (int c = 0; c < 256; c++) {
			const char *p = c != 0 ? strchr("0123456789abcdef", tolower(c)) : NULL;
			int want = p != NULL ? (int)(p - "0123456789abcdef") : -1;
			CHECK_EQ_INT(fgw_hexval(c), want);
			digits += want >= 0;
		}
		CHECK_EQ_INT(digits, 22);
		CHECK_EQ_INT(fgw_hexval(-1), -1);
	}
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
	static const struct {
		const char *text;
		size_t len;
		int ok;
	} cases[] = {
		{ "{\"a\":1}", 7, 1 },
		{ " {\"a\":\"caf\xc3\xa9 \xf0\x9f\x8e\x89\"}\r\n", 21, 1 },
		{ "{\"a\":1} x", 10, 0 },              /* trailing garbage */
		{ "{\"a\":1}{}", 9, 0 },               /* two values */
		{ "{\"a\":\"\xff\"}", 9, 0 },          /* invalid byte */
		{ "{\"a\":\"\xc0\xaf\"}", 10, 0 },     /* overlong */
		{ "{\"a\":\"\xed\xa0\x80\"}", 11, 0 }, /* surrogate */
		{ "{\"a\":\"\x01\"}", 9, 0 },          /* raw control character */
		{ "{\"a\":\"x\0\"}", 10, 0 },          /* raw NUL inside the length */
		{ "{\"a\":1}", 5, 0 },                 /* only part of the text */
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


/*
 * RFC 8259 accept/reject table, JSONTestSuite-style: y_ must parse, n_ must
 * be refused (at byte `at` when at >= 0), i_ are the grammar's
 * implementation-defined corners and say what this parser does with them.
 */
#define J(s) s, sizeof(s) - 1
static const struct json_case {
	const char *name;
	const char *text;
	size_t len;
	int ok;
	long at;
} json_cases[] = {
	{ "y_object_empty", J("{}"), 1, -1 },
	{ "y_array_empty", J("[]"), 1, -1 },
	{ "y_scalar_zero", J("0"), 1, -1 },
	{ "y_scalar_minus_zero", J("-0"), 1, -1 },
	{ "y_int", J("123"), 1, -1 },
	{ "y_int_negative", J("-123"), 1, -1 },
	{ "y_fraction", J("1.5"), 1, -1 },
	{ "y_zero_fraction", J("0.0"), 1, -1 },
	{ "y_exp", J("1e2"), 1, -1 },
	{ "y_exp_capital_plus", J("1E+2"), 1, -1 },
	{ "y_exp_minus", J("-1.5e-10"), 1, -1 },
	{ "y_zero_exp", J("0e0"), 1, -1 },
	{ "y_exp_leading_zeros", J("1e007"), 1, -1 },
	{ "y_true", J("true"), 1, -1 },
	{ "y_false", J("false"), 1, -1 },
	{ "y_null", J("null"), 1, -1 },
	{ "y_string_empty", J("\"\""), 1, -1 },
	{ "y_string_escapes", J("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), 1, -1 },
	{ "y_string_u_escape", J("\"\\u00e9\\u20AC\""), 1, -1 },
	{ "y_string_u_escaped_control", J("\"\\u001f\""), 1, -1 },
	{ "y_string_surrogate_pair", J("\"\\uD83D\\uDE00\""), 1, -1 },
	{ "y_string_noncharacter", J("\"\\uFFFF\""), 1, -1 },
	{ "y_string_utf8", J("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x89\""), 1, -1 },
	{ "y_string_utf8_max", J("\"\xf4\x8f\xbf\xbf\""), 1, -1 },
	{ "y_string_del", J("\"\x7f\""), 1, -1 },
	{ "y_object", J("{\"a\":[{\"b\":null}],\"c\":\"d\",\"\":1}"), 1, -1 },
	{ "y_array", J("[1,\"2\",true,false,null,{},[]]"), 1, -1 },
	{ "y_whitespace", J(" \t\r\n{ \"a\" : [ 1 , 2 ] } \t\r\n"), 1, -1 },
	{ "y_same_key_in_sibling_objects", J("[{\"a\":1},{\"a\":2}]"), 1, -1 },
	{ "y_keys_differ_in_case", J("{\"a\":1,\"A\":2}"), 1, -1 },
	{ "n_number_leading_zero", J("01"), 0, 1 },
	{ "n_number_minus_leading_zero", J("-01"), 0, 2 },
	{ "n_number_double_zero", J("00"), 0, 1 },
	{ "n_number_dot_no_digit", J("2."), 0, 2 },
	{ "n_number_dot_first", J(".5"), 0, 0 },
	{ "n_number_dot_then_exp", J("0.e1"), 0, 2 },
	{ "n_number_plus", J("+1"), 0, 0 },
	{ "n_number_minus_alone", J("-"), 0, 1 },
	{ "n_number_minus_minus", J("--1"), 0, 1 },
	{ "n_number_minus_space", J("- 1"), 0, 1 },
	{ "n_number_exp_no_digit", J("1e"), 0, 2 },
	{ "n_number_exp_sign_no_digit", J("1e+"), 0, 3 },
	{ "n_number_hex", J("0x10"), 0, 1 },
	{ "n_number_nan", J("NaN"), 0, 0 },
	{ "n_number_infinity", J("Infinity"), 0, 0 },
	{ "n_number_minus_infinity", J("-Infinity"), 0, 1 },
	{ "n_number_in_object_leading_zero", J("{\"amount\":-01}"), 0, 12 },
	{ "n_number_in_array_dot", J("[2.]"), 0, 3 },
	{ "n_string_escape_uqqqq", J("\"\\uqqqq\""), 0, 1 },
	{ "n_string_escape_u_short", J("\"\\u12\""), 0, 1 },
	{ "n_string_escape_x", J("\"\\x41\""), 0, 1 },
	{ "n_string_escape_a", J("\"\\a\""), 0, 1 },
	{ "n_string_escape_quote", J("\"\\'\""), 0, 1 },
	{ "n_string_escape_upper_u", J("\"\\U0041\""), 0, 1 },
	{ "n_string_lone_high_surrogate", J("\"\\ud800\""), 0, 1 },
	{ "n_string_high_surrogate_then_text", J("\"\\ud800x\""), 0, 1 },
	{ "n_string_lone_low_surrogate", J("\"\\udc00\""), 0, 1 },
	{ "n_string_high_then_bmp", J("\"\\ud800\\u0041\""), 0, 1 },
	{ "n_string_two_high_surrogates", J("\"\\ud800\\ud800\""), 0, 1 },
	{ "n_string_escaped_nul", J("\"a\\u0000b\""), 0, 2 },
	{ "n_key_escaped_nul", J("{\"a\\u0000\":1}"), 0, 3 },
	{ "n_string_raw_newline", J("\"a\nb\""), 0, 2 },
	{ "n_string_raw_tab", J("\"a\tb\""), 0, 2 },
	{ "n_string_raw_cr", J("\"a\rb\""), 0, 2 },
	{ "n_string_raw_nul", J("\"a\0b\""), 0, 2 },
	{ "n_string_unterminated", J("\"abc"), 0, 4 },
	{ "n_string_backslash_at_end", J("\"abc\\"), 0, 4 },
	{ "n_string_single_quotes", J("'a'"), 0, 0 },
	{ "n_utf8_invalid_byte", J("{\"a\":\"\xff\"}"), 0, 6 },
	{ "n_utf8_lone_continuation", J("\"\x80\""), 0, 1 },
	{ "n_utf8_overlong", J("\"\xc0\xaf\""), 0, 1 },
	{ "n_utf8_overlong_3", J("\"\xe0\x80\xaf\""), 0, 1 },
	{ "n_utf8_surrogate", J("\"\xed\xa0\x80\""), 0, 1 },
	{ "n_utf8_beyond_10ffff", J("\"\xf4\x90\x80\x80\""), 0, 1 },
	{ "n_utf8_truncated", J("\"\xe2\x82\""), 0, 1 },
	{ "n_utf8_truncated_at_end", J("\"\xe2\x82"), 0, 1 },
	{ "n_utf8_outside_string", J("[\xc3\xa9]"), 0, 1 },
	{ "n_object_duplicate_key", J("{\"a\":1,\"a\":2}"), 0, 7 },
	{ "n_object_duplicate_key_escaped", J("{\"ab\":1,\"a\\u0062\":2}"), 0, 8 },
	{ "n_object_duplicate_key_later", J("{\"a\":1,\"b\":2,\"c\":3,\"b\":4}"), 0, 19 },
	{ "n_object_trailing_comma", J("{\"a\":1,}"), 0, 7 },
	{ "n_object_empty_member", J("{,}"), 0, 1 },
	{ "n_object_key_only", J("{\"a\"}"), 0, 4 },
	{ "n_object_no_value", J("{\"a\":}"), 0, 5 },
	{ "n_object_number_key", J("{1:2}"), 0, 1 },
	{ "n_object_missing_comma", J("{\"a\":1 \"b\":2}"), 0, 7 },
	{ "n_object_unclosed", J("{\"a\":1"), 0, 6 },
	{ "n_object_single_quoted_key", J("{'a':1}"), 0, 1 },
	{ "n_array_trailing_comma", J("[1,]"), 0, 3 },
	{ "n_array_leading_comma", J("[,1]"), 0, 1 },
	{ "n_array_missing_comma", J("[1 2]"), 0, 3 },
	{ "n_array_unclosed", J("[1"), 0, 2 },
	{ "n_array_close_only", J("]"), 0, 0 },
	{ "n_literal_truncated", J("tru"), 0, 0 },
	{ "n_literal_capital", J("True"), 0, 0 },
	{ "n_literal_trailing_letter", J("nullx"), 0, 4 },
	{ "n_two_values", J("1 2"), 0, 2 },
	{ "n_trailing_garbage", J("{\"a\":1} x"), 0, 8 },
	{ "n_trailing_nul", J("{}\0"), 0, 2 },
	{ "n_comment", J("/**/{}"), 0, 0 },
	{ "n_bom", J("\xef\xbb\xbf{}"), 0, 0 },
	{ "n_whitespace_vertical_tab", J("[\x0b]"), 0, 1 },
	{ "n_whitespace_formfeed", J("[\f]"), 0, 1 },
	{ "n_whitespace_nbsp", J("[\xc2\xa0]"), 0, 1 },
	{ "n_empty", J(""), 0, 0 },
	{ "n_only_whitespace", J(" \n"), 0, 2 },
	{ "i_number_huge_exponent", J("1e400"), 0, 0 },
	{ "i_number_huge_negative", J("-1e400"), 0, 0 },
	{ "i_number_tiny_is_zero", J("1e-400"), 1, -1 },
	{ "i_number_big_int", J("123456789012345678901234567890"), 1, -1 },
};
#undef J

static int
test_json_rfc8259(void)
{
	cJSON *v = NULL;
	int bad = 0;
	TT_BEGIN;
	for (size_t i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
		const struct json_case *c = &json_cases[i];
		struct fgw_json_error e = { 0, NULL };
		v = fgw_json_parse(c->text, c->len, &e);
		if ((v != NULL) != c->ok) {
			fprintf(stderr, "  %s: %s\n", c->name, v ? "accepted" : "refused");
			bad++;
		} else if (v == NULL &&
		           (e.reason == NULL || (c->at >= 0 && e.offset != (size_t)c->at))) {
			fprintf(stderr, "  %s: refused at byte %zu (%s), expected %ld\n", c->name,
			        e.offset, e.reason ? e.reason : "no reason", c->at);
			bad++;
		}
		cJSON_Delete(v);
		v = NULL;
	}
	CHECK_EQ_INT(bad, 0);
end:
	cJSON_Delete(v);
	TT_END;
}


/* Nesting: FGW_JSON_MAX_DEPTH levels parse, one more is refused where it
 * starts; a very deep text is refused without exhausting the stack. */
static int
test_json_depth(void)
{
	char *deep = NULL;
	size_t n = 100000;
	struct fgw_json_error e = { 0, NULL };
	cJSON *v = NULL;
	TT_BEGIN;
	CHECK((deep = malloc(2 * n)) != NULL);
	memset(deep, '[', n);
	memset(deep + n, ']', n);
	v = fgw_json_parse(deep + n - FGW_JSON_MAX_DEPTH, 2 * FGW_JSON_MAX_DEPTH, &e);
	CHECK(v != NULL);
	cJSON_Delete(v);
	v = fgw_json_parse(deep + n - FGW_JSON_MAX_DEPTH - 1, 2 * FGW_JSON_MAX_DEPTH + 2, &e);
	CHECK(v == NULL);
	CHECK_EQ_INT(e.offset, FGW_JSON_MAX_DEPTH);
	v = fgw_json_parse(deep, 2 * n, &e);
	CHECK(v == NULL);
	CHECK_EQ_INT(e.offset, FGW_JSON_MAX_DEPTH);
end:
	cJSON_Delete(v);
	free(deep);
	TT_END;
}

/* Strings come out decoded, with escapes and pairs turned into UTF-8, and
 * the error text names the byte. */
static int
test_json_values(void)
{
	static const char text[] =
	    "{\"s\":\"a\\u00e9\\uD83D\\uDE00\\n\\/\",\"n\":-1.5e2,\"t\":true,"
	    "\"z\":null,\"a\":[1,2,3]}";
	struct fgw_json_error e = { 0, NULL };
	char msg[96];
	cJSON *v = NULL;
	TT_BEGIN;
	CHECK((v = fgw_json_parse(text, sizeof(text) - 1, &e)) != NULL);
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(v, "s")->valuestring,
	          "a\xc3\xa9\xf0\x9f\x98\x80\n/");
	CHECK(cJSON_GetObjectItemCaseSensitive(v, "n")->valuedouble == -150.0);
	CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "t")));
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(v, "z")));
	CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(v, "a")), 3);
	cJSON_Delete(v);
	v = NULL;
	CHECK(fgw_json_parse("{\"a\":-01}", 9, &e) == NULL);
	fgw_json_error_str(&e, msg, sizeof(msg));
	CHECK_STR(msg, "invalid JSON at byte 7: leading zero in number");
	CHECK(fgw_json_parse(NULL, 0, &e) == NULL);
	CHECK_EQ_INT(e.offset, 0);
end:
	cJSON_Delete(v);
	TT_END;
}

/* fgw_json_int takes integer tokens only, exactly, within the range. */
static int
test_json_int(void)
{
	static const struct {
		const char *text;
		int64_t min, max;
		int ok;
		int64_t want;
	} cases[] = {
		{ "1", 1, 100, 1, 1 },
		{ "0", 0, 0, 1, 0 },
		{ "-0", 0, 0, 1, 0 },
		{ "-42", -100, 100, 1, -42 },
		{ "100", 1, 100, 1, 100 },
		{ "101", 1, 100, 0, 0 },
		{ "0", 1, 100, 0, 0 },
		{ "9007199254740991", 0, INT64_MAX, 1, 9007199254740991LL },
		{ "-9007199254740991", INT64_MIN, 0, 1, -9007199254740991LL },
		{ "9007199254740992", 0, INT64_MAX, 0, 0 },
		{ "9007199254740993", 0, INT64_MAX, 0, 0 },
		{ "100000000000000000000", 0, INT64_MAX, 0, 0 },
		{ "1.0", 0, 100, 0, 0 },
		{ "1e3", 0, 10000, 0, 0 },
		{ "1E0", 0, 10000, 0, 0 },
		{ "0.99999999999999999", 0, 100, 0, 0 },
		{ "1.5", 0, 100, 0, 0 },
		{ "\"1\"", 0, 100, 0, 0 },
		{ "true", 0, 100, 0, 0 },
		{ "null", 0, 100, 0, 0 },
		{ "[1]", 0, 100, 0, 0 },
	};
	cJSON *v = NULL;
	int64_t got;
	TT_BEGIN;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;
		CHECK((v = fgw_json_parse(cases[i].text, strlen(cases[i].text), NULL)) != NULL);
		got = -7;
		r = fgw_json_int(v, cases[i].min, cases[i].max, &got);
		if ((r == 0) != cases[i].ok || (r == 0 && got != cases[i].want) ||
		    (r != 0 && (r != FGW_ERR_INVALID || got != -7)))
			fprintf(stderr, "  case %s\n", cases[i].text);
		CHECK((r == 0) == cases[i].ok);
		if (r == 0)
			CHECK_EQ_INT(got, cases[i].want);
		else
			CHECK(r == FGW_ERR_INVALID && got == -7);
		cJSON_Delete(v);
		v = NULL;
	}
	/* a number the program built is not an integer token */
	CHECK((v = cJSON_CreateNumber(5)) != NULL);
	CHECK_EQ_INT(fgw_json_int(v, 0, 10, &got), FGW_ERR_INVALID);
	cJSON_Delete(v);
	v = NULL;
	/* a parsed integer whose value is later changed is checked again */
	CHECK((v = fgw_json_parse("5", 1, NULL)) != NULL);
	cJSON_SetNumberValue(v, 5.5);
	CHECK_EQ_INT(fgw_json_int(v, 0, 10, &got), FGW_ERR_INVALID);
	/* the private flag survives cJSON_Duplicate and does not upset print */
	cJSON_Delete(v);
	CHECK((v = fgw_json_parse("{\"a\":[7]}", 9, NULL)) != NULL);
	{
		cJSON *d = cJSON_Duplicate(v, 1);
		char *p = cJSON_PrintUnformatted(d);
		int ok = d != NULL && p != NULL && strcmp(p, "{\"a\":[7]}") == 0 &&
		         fgw_json_int(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "a"), 0), 0, 9,
		                      &got) == 0 &&
		         got == 7;
		free(p);
		cJSON_Delete(d);
		CHECK(ok);
	}
	CHECK(fgw_json_int(NULL, 0, 1, &got) == FGW_ERR_INVALID);
end:
	cJSON_Delete(v);
	TT_END;
}

/* Lines name the request the thread works for, and only while it does. */
static int
test_log_request_id(void)
{
	int fds[2] = { -1, -1 };
	char buf[4096];
	ssize_t n;
	TT_BEGIN;
	CHECK(pipe(fds) == 0);
	log_setup(LOG_LVL_INFO, 1, fds[1]);
	log_request_set("rq-1");
	log_info("one");
	log_request_set(NULL);
	log_info("two");
	log_setup(LOG_LVL_INFO, 0, fds[1]);
	log_request_set("rq-2");
	log_txn_info("txn_x", "three");
	log_request_set("");
	n = read(fds[0], buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK(strstr(buf, "\"req\":\"rq-1\",\"msg\":\"one\"") != NULL);
	CHECK(strstr(buf, "\"module\":\"fgw\",\"msg\":\"two\"") != NULL);
	CHECK(strstr(buf, "[fgw] req=rq-2 txn_x three") != NULL);
	CHECK_STR(log_request_get(), "");
end:
	log_setup(LOG_LVL_ERROR, 0, 2);
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	TT_END;
}

/* The one error-detail shape: as much of where:line:col as is known. */
static int
test_why(void)
{
	struct fgw_why why;
	char buf[600], *p = NULL;

	fgw_why_set(NULL, "x", 1, 1, "ignored"); /* no detail wanted */
	fgw_why_set(&why, "rules.conf", 3, 7, "unknown field %s", "amout");
	CHECK_STR(fgw_why_format(&why, buf, sizeof(buf)),
	          "rules.conf:3:7: unknown field amout");
	fgw_why_set(&why, "receipt.txt", 2, 0, "unterminated {{");
	CHECK_STR(fgw_why_format(&why, buf, sizeof(buf)), "receipt.txt:2: unterminated {{");
	fgw_why_set(&why, "mail_from", 0, 0, "not an address");
	CHECK_STR(fgw_why_format(&why, buf, sizeof(buf)), "mail_from: not an address");
	fgw_why_set(&why, NULL, 0, 0, "bad");
	CHECK_STR(fgw_why_format(&why, buf, sizeof(buf)), "bad");
	CHECK_STR(fgw_why_format(&why, buf, 3), "ba");
	/* fgw_freezero: NULL is fine; a buffer is wiped and freed (ASan
	 * reports a leak or a double free). */
	fgw_freezero(NULL, 16);
	CHECK((p = malloc(16)) != NULL);
	memcpy(p, "0123456789abcdef", 16);
	fgw_freezero(p, 16);
	return 0;
end:
	return 1;
}

/* The transition table, written out here a second time on purpose: a move
 * added to or dropped from core/txnstate.c without this list agreeing
 * fails here. Every pair of states is tried. */
static int
test_txnstate_moves(void)
{
	static const char *const allowed[][2] = {
		{ "posting", "processing" },
		{ "posting", "requires_action" },
		{ "posting", "succeeded" },
		{ "posting", "declined" },
		{ "posting", "failed" },
		{ "posting", "authorized" },
		{ "processing", "requires_action" },
		{ "processing", "succeeded" },
		{ "processing", "declined" },
		{ "processing", "failed" },
		{ "processing", "authorized" },
		{ "requires_action", "processing" },
		{ "requires_action", "succeeded" },
		{ "requires_action", "declined" },
		{ "requires_action", "failed" },
		{ "requires_action", "authorized" },
		{ "authorized", "succeeded" },
		{ "authorized", "canceled" },
		{ "succeeded", "partially_refunded" },
		{ "succeeded", "refunded" },
		{ "partially_refunded", "refunded" },
		{ "partially_refunded", "partially_refunded" },
	};
	static const char *const final[] = { "declined", "failed", "canceled", "refunded" };
	const enum txn_state(*moves)[2];
	int n_moves = 0, n_seen = 0;
	TT_BEGIN;
	for (int f = TXN_STATE_NONE; f < TXN_STATE_COUNT; f++) {
		for (int t = TXN_STATE_NONE; t < TXN_STATE_COUNT; t++) {
			int want = 0;
			for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
				if (strcmp(allowed[i][0], txn_state_name(f)) == 0 &&
				    strcmp(allowed[i][1], txn_state_name(t)) == 0)
					want = 1;
			if (txn_state_may_move(f, t) != want)
				fprintf(stderr, "  move %s -> %s: expected %d\n", txn_state_name(f),
				        txn_state_name(t), want);
			CHECK(txn_state_may_move(f, t) == want);
			n_seen += want;
		}
	}
	CHECK_EQ_INT(n_seen, sizeof(allowed) / sizeof(allowed[0]));
	moves = txn_state_moves(&n_moves);
	CHECK(moves != NULL);
	CHECK_EQ_INT(n_moves, n_seen);
	/* Backward and sideways moves out of a settled payment are refused. */
	CHECK(!txn_state_may_move(TXN_SUCCEEDED, TXN_PROCESSING));
	CHECK(!txn_state_may_move(TXN_SUCCEEDED, TXN_POSTING));
	CHECK(!txn_state_may_move(TXN_SUCCEEDED, TXN_AUTHORIZED));
	CHECK(!txn_state_may_move(TXN_SUCCEEDED, TXN_FAILED));
	CHECK(!txn_state_may_move(TXN_SUCCEEDED, TXN_SUCCEEDED));
	CHECK(!txn_state_may_move(TXN_PARTIALLY_REFUNDED, TXN_SUCCEEDED));
	CHECK(!txn_state_may_move(TXN_AUTHORIZED, TXN_REFUNDED));
	CHECK(!txn_state_may_move(TXN_STATE_NONE, TXN_FAILED));
	CHECK(!txn_state_may_move(TXN_POSTING, TXN_STATE_COUNT));
	CHECK(!txn_state_may_move((enum txn_state) - 1, TXN_FAILED));
	for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++)
		CHECK(txn_state_final(txn_state_of(final[i])));
	for (int s = TXN_STATE_NONE + 1; s < TXN_STATE_COUNT; s++) {
		int is_final = 0;
		for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++)
			is_final |= strcmp(final[i], txn_state_name(s)) == 0;
		CHECK(txn_state_final(s) == is_final);
	}
	CHECK(!txn_state_final(TXN_STATE_NONE));
end:
	TT_END;
}

/* Names are the database's and the API's text: each round-trips, and
 * nothing else is a state. */
static int
test_txnstate_names(void)
{
	static const char *const all[] = { "posting",    "processing", "requires_action",
		                               "succeeded",  "declined",   "failed",
		                               "authorized", "canceled",   "partially_refunded",
		                               "refunded" };
	TT_BEGIN;
	CHECK_EQ_INT(sizeof(all) / sizeof(all[0]), TXN_STATE_COUNT - 1);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		enum txn_state s = txn_state_of(all[i]);
		CHECK(txn_state_known(s));
		CHECK_STR(txn_state_name(s), all[i]);
	}
	CHECK(txn_state_of("charged_back") == TXN_STATE_NONE);
	CHECK(txn_state_of("Succeeded") == TXN_STATE_NONE);
	CHECK(txn_state_of("succeeded ") == TXN_STATE_NONE);
	CHECK(txn_state_of("") == TXN_STATE_NONE);
	CHECK(txn_state_of(NULL) == TXN_STATE_NONE);
	CHECK(!txn_state_known(TXN_STATE_NONE));
	CHECK(!txn_state_known(TXN_STATE_COUNT));
	CHECK_STR(txn_state_name(TXN_STATE_NONE), "");
	CHECK_STR(txn_state_name(TXN_STATE_COUNT), "");
	CHECK_STR(txn_state_name((enum txn_state) - 3), "");
end:
	TT_END;
}

/* fgw_jw writes the same bytes as cJSON_PrintUnformatted of the same
 * members: every byte value in strings and keys, integers around the
 * points where cJSON's number printing changes form, nesting, raw text. */
static int
test_json_writer(void)
{
	static const int64_t nums[] = {
		0,
		1,
		-1,
		15000,
		2147483647LL,
		2147483648LL,
		-2147483648LL,
		-2147483649LL,
		100000000000000LL,
		999999999999999LL,
		1000000000000000LL,
		-1000000000000001LL,
		9007199254740993LL,
		INT64_MAX,
		INT64_MIN,
	};
	struct fgw_jw w;
	cJSON *o = NULL, *in;
	char all[256], key[8], *want = NULL, *got = NULL;
	TT_BEGIN;
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	o = cJSON_CreateObject();
	fgw_jw_begin(&w);
	cJSON_AddStringToObject(o, "all", all);
	fgw_jw_str(&w, "all", all);
	cJSON_AddStringToObject(o, all, "key of every byte");
	fgw_jw_str(&w, all, "key of every byte");
	fgw_jw_str(&w, "absent", NULL); /* cJSON adds no member for NULL */
	cJSON_AddStringToObject(o, "empty", "");
	fgw_jw_str(&w, "empty", "");
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		snprintf(key, sizeof(key), "n%zu", i);
		cJSON_AddNumberToObject(o, key, (double)nums[i]);
		fgw_jw_int(&w, key, nums[i]);
	}
	in = cJSON_AddObjectToObject(o, "inner");
	fgw_jw_open(&w, "inner");
	cJSON_AddStringToObject(in, "a", "x\"y");
	fgw_jw_str(&w, "a", "x\"y");
	cJSON_AddObjectToObject(in, "empty");
	fgw_jw_open(&w, "empty");
	fgw_jw_close(&w);
	fgw_jw_close(&w);
	cJSON_AddItemToObject(o, "raw", cJSON_Parse("{\"url\":\"https://x/y\",\"n\":[1,2]}"));
	fgw_jw_raw(&w, "raw", "{\"url\":\"https://x/y\",\"n\":[1,2]}");
	cJSON_AddStringToObject(o, "last", "end");
	fgw_jw_str(&w, "last", "end");
	CHECK((want = cJSON_PrintUnformatted(o)) != NULL);
	CHECK((got = fgw_jw_end(&w)) != NULL);
	CHECK_STR(got, want);
	/* An empty object too. */
	free(got);
	fgw_jw_begin(&w);
	got = fgw_jw_end(&w);
	CHECK(got != NULL);
	CHECK_STR(got, "{}");
end:
	cJSON_Delete(o);
	cJSON_free(want);
	free(got);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "why", test_why },
	{ "log_request_id", test_log_request_id },
	{ "json_strict", test_json_strict },
	{ "json_writer", test_json_writer },
	{ "json_rfc8259", test_json_rfc8259 },
	{ "json_depth", test_json_depth },
	{ "json_values", test_json_values },
	{ "json_int", test_json_int },
	{ "luhn", test_luhn },
	{ "brand", test_brand },
	{ "brand_lengths", test_brand_lengths },
	{ "find_pan", test_find_pan },
	{ "bin_last4_expiry", test_bin_last4_expiry },
	{ "scrub", test_scrub },
	{ "util", test_util },
	{ "ids", test_ids },
	{ "txnstate_moves", test_txnstate_moves },
	{ "txnstate_names", test_txnstate_names },
	{ NULL, NULL },
};
TT_MAIN(cases)
