/* tests/unit/test_rules.c — rules/: the language (good files and exact
 * error positions), every attribute and action, first-match semantics,
 * velocity windows at their edges, out-of-order recording, concurrency,
 * CIDR and BIN sets, the BIN table, and the shipped etc/rules.conf. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "rules/rules.h"
#include "tt.h"

/* 2024-01-01T12:15:00Z, a Monday. */
#define T0 1704111300000LL
#define MIN 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL

/* ---- helpers ---------------------------------------------------------- */

static char tdir[64];

static void
rm_tdir(void)
{
	static const char *const names[] = { "bins.csv",
		                                 "countries.txt",
		                                 "ips.txt",
		                                 "bins.txt",
		                                 "bad_ips.txt",
		                                 "bad_bins.csv",
		                                 "dup_bins.csv",
		                                 "glob.txt",
		                                 "rules.conf",
		                                 "nul.conf",
		                                 NULL };
	char p[128];
	for (int i = 0; names[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", tdir, names[i]);
		unlink(p);
	}
	rmdir(tdir);
}

static int
write_file(const char *name, const char *text, size_t len)
{
	char p[128];
	FILE *f;
	snprintf(p, sizeof(p), "%s/%s", tdir, name);
	if ((f = fopen(p, "wb")) == NULL)
		return -1;
	fwrite(text, 1, len, f);
	return fclose(f);
}

/* A directory with a BIN table and list files the tests refer to. */
static const char *
fixture_dir(void)
{
	static const char bins[] = "bin_prefix,country\n"
	                           "# comment\n"
	                           "4,GB\n"
	                           "424242,US\n"
	                           "40000025,FR\n"
	                           "4571,DK\n"
	                           "457199,SE\n"
	                           "5555 , us , extra column\n";
	static const char countries[] = "# high risk\nKP\n  ir  \n\"MM\"\n\n";
	static const char ips[] = "10.0.0.0/8\n192.168.1.7\n2001:db8::/32\n::1\n";
	static const char binl[] = "424242\n400000-400099\n5\n";
	static const char bad_ips[] = "10.0.0.0/8\n\n  10.1.2.3/8\n";
	static const char bad_bins[] = "bin_prefix,country\n424242,US\n42x,US\n";
	static const char dup_bins[] = "424242,US\n4000,US\n424242,GB\n";
	static const char glob[] = "*@mailinator.com\n*+*@*\n";
	if (tdir[0])
		return tdir;
	snprintf(tdir, sizeof(tdir), "/tmp/test_rules.XXXXXX");
	if (mkdtemp(tdir) == NULL)
		abort();
	atexit(rm_tdir);
	if (write_file("bins.csv", bins, strlen(bins)) ||
	    write_file("countries.txt", countries, strlen(countries)) ||
	    write_file("ips.txt", ips, strlen(ips)) ||
	    write_file("bins.txt", binl, strlen(binl)) ||
	    write_file("bad_ips.txt", bad_ips, strlen(bad_ips)) ||
	    write_file("bad_bins.csv", bad_bins, strlen(bad_bins)) ||
	    write_file("dup_bins.csv", dup_bins, strlen(dup_bins)) ||
	    write_file("glob.txt", glob, strlen(glob)))
		abort();
	return tdir;
}

static int
load(const char *text, struct rules **r, struct fgw_why *err)
{
	struct rules_load_opts o = { .base_dir = fixture_dir() };
	char buf[600];
	int rc = rules_load_string(text, "t.rules", &o, r, err);
	if (rc != 0)
		fprintf(stderr, "  load: %s\n", fgw_why_format(err, buf, sizeof(buf)));
	return rc;
}

/* Loads text, expecting an error at line:col whose message contains msg. */
static int
bad(const char *text, const char *file, int line, int col, const char *msg)
{
	struct rules_load_opts o = { .base_dir = fixture_dir() };
	struct fgw_why err;
	struct rules *r = NULL;
	char buf[600];
	int rc = rules_load_string(text, "t.rules", &o, &r, &err);
	fgw_why_format(&err, buf, sizeof(buf));
	if (rc == 0 || r != NULL) {
		fprintf(stderr, "  loaded, expected an error: %s\n", text);
		rules_unref(r);
		return 0;
	}
	if (strcmp(err.where + strlen(err.where) - strlen(file), file) != 0 ||
	    err.line != line || err.col != col || strstr(err.msg, msg) == NULL) {
		fprintf(stderr, "  got \"%s\"\n  want %s:%d:%d: ...%s...\n", buf, file, line, col,
		        msg);
		return 0;
	}
	return 1;
}

static void
base_input(struct rules_input *in)
{
	memset(in, 0, sizeof(*in));
	in->amount = 15000;
	in->currency = "USD";
	in->bin = "424242";
	in->customer_country = "US";
	in->ip = "203.0.113.7";
	in->email = "Alice@Example.com";
	in->processor = "sandbox";
	in->fingerprint = "fp-aaaa";
	in->threeds = "none";
	in->mode = "development";
	in->now_ms = T0;
}

/* 1 if "when COND" fires for in, 0 if not, -1 if it does not load. */
static int
fires(const char *cond, const struct rules_input *in, struct velocity *v)
{
	char text[2048];
	struct rules *r = NULL;
	struct fgw_why err;
	struct rules_decision d;
	int res;
	snprintf(text, sizeof(text),
	         "bin_table \"bins.csv\"\n"
	         "list hr = file \"countries.txt\"\n"
	         "list nets = file \"ips.txt\"\n"
	         "list bins = file \"bins.txt\"\n"
	         "rule T: when %s then decline X\n",
	         cond);
	if (load(text, &r, &err) != 0)
		return -1;
	res = rules_eval(r, in, v, &d) == 0 && d.action == RULES_DECLINE;
	rules_unref(r);
	return res;
}

/* ---- the language --------------------------------------------------------- */

static int
test_parse_good(void)
{
	struct rules *r = NULL;
	struct fgw_why err;
	static const char text[] =
	    "# every construct once\n"
	    "bin_table \"bins.csv\"\n"
	    "list hr = file \"countries.txt\"\n"
	    "list inline = [\"NG\", RU, \"br\",]   # trailing comma, bare words\n"
	    "list empty = []\n"
	    "list weekend = [sat, sun]\n"
	    "list nums = [1, 5-9, 1_000]\n"
	    "rule R1 \"desc with \\\"quotes\\\" and \\\\\": when amount > 500_000 then decline AMOUNT_LIMIT\n"
	    "rule R2: when amount >= 1 and amount <= 2 or amount < 3 and amount != 4 "
	    "and amount == 5 then allow\n"
	    "rule 300 \"numeric id\":\n"
	    "    when not (currency == \"usd\" or card.brand == \"visa\")\n"
	    "     and not not card.saved\n"
	    "    then review\n"
	    "list bins2 = [\"601111\"]\n"
	    "rule R5: when card.bin matches 4242 or card.bin matches 400000-400099 or card.bin == 424242\n"
	    "    then review\n"
	    "rule R6: when ip in [\"10.0.0.0/8\", \"2001:db8::/32\"] or ip matches \"192.168.0.0/16\"\n"
	    "      or ip == \"::1\" or ip not matches \"0.0.0.0/0\" then review\n"
	    "rule R7: when email matches \"*@mailinator.com\" or email.domain in [\"example.com\"]\n"
	    "      or email not matches \"?*@*\" or processor == \"sandbox\" then review\n"
	    "rule R8: when hour in [0-5, 22-23] or weekday in weekend or weekday == mon\n"
	    "      or threeds in [failed, \"required\"] or threeds != authenticated then review\n"
	    "rule R9: when mode == production and card.saved == false or card.saved != true then review\n"
	    "rule R10: when count(card, 30s) > 5 or sum(email, 24h) > 200000 or declines >= 5\n"
	    "      or declines(ip, 7d) > 0 or count(customer, 10m) in nums or count(ip, 1m) > count(card, 1m)\n"
	    "    then decline VELOCITY_LIMIT\n"
	    "rule R11: when card.country != customer.country and card.country in hr\n"
	    "      and customer.country not in inline and customer.country in empty\n"
	    "      and fingerprint == \"abc\" and customer.id is missing and email is present\n"
	    "      and ip is not missing and card.country is missing then review\n"
	    "rule R_12.x: when amount > amount then allow\n"
	    "rule R4: when card.bin in [424242, 400000-499999, \"5\"] and card.bin not in bins2\n"
	    "    then require_3ds\n";
	static const char late_list[] = "rule R1: when amount > 1 then allow\n"
	                                "rule R2: when card.bin not in later then allow\n"
	                                "list later = [\"601111\"]\n";
	TT_BEGIN;
	CHECK_EQ_INT(load(text, &r, &err), 0);
	CHECK_EQ_INT(rules_count(r), 12);
	CHECK_EQ_INT(rules_max_window_ms(r), 7 * DAY);
	/* a list is defined before it is used */
	CHECK(bad(late_list, "t.rules", 2, 31, "unknown list 'later'"));
end:
	rules_unref(r);
	TT_END;
}

static int
test_parse_errors(void)
{
	TT_BEGIN;
	/* statement level */
	CHECK(
	    bad("rul R1: when amount > 1 then allow", "t.rules", 1, 1,
	        "expected 'rule', 'list' or 'bin_table', found 'rul' (did you mean 'rule'?)"));
	CHECK(bad(
	    "rule R1: when amount > 1 then allow\n\n  rule R1: when amount > 2 then allow\n",
	    "t.rules", 3, 8, "rule id 'R1' is already used on line 1"));
	CHECK(bad("rule R1 when amount > 1 then allow", "t.rules", 1, 9, "expected ':'"));
	CHECK(bad("rule R1: whne amount > 1 then allow", "t.rules", 1, 10,
	          "expected 'when', found 'whne' (did you mean 'when'?)"));
	CHECK(bad("rule R1: when amount > 1 than allow", "t.rules", 1, 26,
	          "expected 'and', 'or' or 'then', found 'than'"));
	CHECK(bad(
	    "rule R1: when amount > 1 then alow", "t.rules", 1, 31,
	    "expected an action (allow, decline CODE, review or require_3ds), found 'alow' (did you mean 'allow'?)"));
	CHECK(bad("rule R1: when amount > 1 then decline", "t.rules", 1, 38,
	          "decline needs a reason code"));
	CHECK(bad("rule R1: when amount > 1 then decline lower_case", "t.rules", 1, 39,
	          "decline needs a reason code"));
	CHECK(bad("rule R1: when amount > 1 then allow and amount > 2", "t.rules", 1, 37,
	          "expected 'rule', 'list' or 'bin_table', found 'and'"));
	CHECK(bad("rule when: when amount > 1 then allow", "t.rules", 1, 6, "is a keyword"));
	CHECK(bad("rule R1234567890123456789012345678901: when amount > 1 then allow",
	          "t.rules", 1, 6, "rule id longer than 31"));
	/* attributes and values */
	CHECK(bad("rule R1: when amount > 1 then allow\n"
	          "rule R2 \"x\": when card.contry == \"US\" then review\n",
	          "t.rules", 2, 19,
	          "unknown attribute 'card.contry' (did you mean 'card.country'?)"));
	CHECK(bad("rule R1: when card.country == \"USA\" then review", "t.rules", 1, 31,
	          "'USA' is not a two-letter country code"));
	CHECK(bad("rule R1: when currency == \"US\" then review", "t.rules", 1, 27,
	          "not a three-letter currency code"));
	CHECK(bad("rule R1: when card.brand == \"Visaa\" then review", "t.rules", 1, 29,
	          "is not a card brand"));
	CHECK(bad("rule R1: when card.country == US then review", "t.rules", 1, 31,
	          "unknown attribute 'US' (text goes in quotes: \"US\")"));
	CHECK(bad("rule R1: when email == \"\" then review", "t.rules", 1, 24,
	          "use 'is missing'"));
	CHECK(bad("rule R1: when amount > \"5\" then review", "t.rules", 1, 24,
	          "amount is a number; write it without quotes"));
	CHECK(bad("rule R1: when amount > 5.50 then review", "t.rules", 1, 24,
	          "numbers are whole"));
	CHECK(bad("rule R1: when ip == 10.0.0.1 then review", "t.rules", 1, 21,
	          "IP addresses go in quotes"));
	CHECK(bad("rule R1: when ip == \"10.0.0.0/8\" then review", "t.rules", 1, 21,
	          "use 'matches' or 'in' for CIDR ranges"));
	CHECK(bad("rule R1: when amount > 99999999999999999999 then review", "t.rules", 1, 24,
	          "number too large"));
	CHECK(bad("rule R1: when amount > 1__0 then review", "t.rules", 1, 25,
	          "'_' may only separate digits"));
	CHECK(
	    bad("rule R1: when hour > 24 then review", "t.rules", 1, 22, "hour is 0 to 23"));
	CHECK(bad("rule R1: when card.country < \"US\" then review", "t.rules", 1, 28,
	          "'<' compares numbers; card.country is text"));
	CHECK(bad("rule R1: when card.country == amount then review", "t.rules", 1, 31,
	          "cannot compare card.country (text) with amount (a number)"));
	CHECK(bad("rule R1: when weekday == sunday then review", "t.rules", 1, 26,
	          "'sunday' is not a weekday"));
	CHECK(bad("rule R1: when threeds == \"ok\" then review", "t.rules", 1, 26,
	          "is not a 3-D Secure outcome"));
	CHECK(bad("rule R1: when mode = production then review", "t.rules", 1, 20,
	          "use '==' to compare"));
	CHECK(bad("rule R1: when amount then review", "t.rules", 1, 22,
	          "amount needs a test after it"));
	CHECK(bad("rule R1: when \"US\" == card.country then review", "t.rules", 1, 15,
	          "expected a condition such as amount > 1000"));
	CHECK(bad("rule R1: when amount > 1 && amount < 2 then review", "t.rules", 1, 26,
	          "use 'and'"));
	CHECK(bad("rule R1: when amount > 1 || amount < 2 then review", "t.rules", 1, 26,
	          "use 'or'"));
	CHECK(bad("rule R1: when ! card.saved then review", "t.rules", 1, 15,
	          "use '!=' or 'not'"));
	CHECK(bad("rule R1: when card.saved == 'x' then review", "t.rules", 1, 29,
	          "double quotes"));
	CHECK(bad("rule R1: when amount > 1 then review\n\t@", "t.rules", 2, 2,
	          "unexpected character '@'"));
	CHECK(
	    bad("rule R1: when email == \"caf\xc3\xa9\" and amount > 1 then review \xc3\xa9",
	        "t.rules", 1, 58, "unexpected byte 0xc3"));
	CHECK(bad("rule R1: when email == \"abc then review", "t.rules", 1, 24,
	          "unterminated string"));
	CHECK(bad("rule R1: when email == \"a\\nb\" then review", "t.rules", 1, 26,
	          "unknown escape"));
	/* functions and durations */
	CHECK(bad("rule R1: when count(cart, 10m) > 5 then review", "t.rules", 1, 21,
	          "unknown dimension 'cart' (did you mean 'card'?)"));
	CHECK(bad("rule R1: when count(card, 10) > 5 then review", "t.rules", 1, 27,
	          "expected a window such as 30s"));
	CHECK(bad("rule R1: when count(card, 10w) > 5 then review", "t.rules", 1, 29,
	          "unknown duration unit 'w'"));
	CHECK(bad("rule R1: when count(card, 91d) > 5 then review", "t.rules", 1, 27,
	          "a window is between 1s and 90d"));
	CHECK(bad("rule R1: when count > 5 then review", "t.rules", 1, 15,
	          "count needs a dimension and a window"));
	CHECK(bad("rule R1: when amount > 10m then review", "t.rules", 1, 24,
	          "a duration only goes inside count()"));
	CHECK(bad("rule R1: when amount > 1-5 then review", "t.rules", 1, 24,
	          "a range goes after 'in' or 'matches'"));
	/* lists, sets and patterns */
	CHECK(bad("list hr = [\"US\"]\nrule R1: when card.country in hrr then review",
	          "t.rules", 2, 31, "unknown list 'hrr' (did you mean 'hr'?)"));
	CHECK(bad("list hr = [\"US\"]\nlist hr = [\"GB\"]\n", "t.rules", 2, 6,
	          "list 'hr' is already defined on line 1"));
	CHECK(bad("list rule = [\"US\"]\n", "t.rules", 1, 6, "cannot name a list"));
	CHECK(bad("rule R1: when card.country in [\"US\", \"GBR\"] then review", "t.rules", 1,
	          38, "'GBR' is not a two-letter country code"));
	CHECK(bad("rule R1: when card.bin in [424242, 4000-400] then review", "t.rules", 1,
	          36, "both ends of a BIN range need the same number of digits"));
	CHECK(bad("rule R1: when card.bin in [499999-400000] then review", "t.rules", 1, 28,
	          "must go from low to high"));
	CHECK(bad("rule R1: when card.bin in [abc] then review", "t.rules", 1, 28,
	          "a BIN is 1 to 12 digits"));
	CHECK(bad("rule R1: when ip in [\"10.0.0.1/8\"] then review", "t.rules", 1, 22,
	          "has host bits set (did you mean '10.0.0.0/8'?)"));
	CHECK(bad("rule R1: when ip in [\"2001:db8::1/32\"] then review", "t.rules", 1, 22,
	          "did you mean '2001:db8::/32'?"));
	CHECK(bad("rule R1: when ip in [\"10.0.0.0/33\"] then review", "t.rules", 1, 22,
	          "prefix length /33 is over /32"));
	CHECK(bad("rule R1: when ip in [\"bogus\"] then review", "t.rules", 1, 22,
	          "not an IP address or CIDR range"));
	CHECK(bad("rule R1: when hour in [20-25] then review", "t.rules", 1, 24,
	          "outside hour's range 0-23"));
	CHECK(bad("rule R1: when weekday in [sat, sunday] then review", "t.rules", 1, 32,
	          "'sunday' is not a weekday"));
	CHECK(bad("rule R1: when amount matches \"1*\" then review", "t.rules", 1, 22,
	          "'matches' works on text, card.bin and ip"));
	CHECK(bad("rule R1: when card.saved in [true] then review", "t.rules", 1, 26,
	          "card.saved is true or false"));
	CHECK(bad("rule R1: when card.country in [\"US\" \"GB\"] then review", "t.rules", 1,
	          37, "expected ',' or ']'"));
	CHECK(bad("rule R1: when card.country not \"US\" then review", "t.rules", 1, 32,
	          "expected 'in' or 'matches' after 'not'"));
	CHECK(bad("rule R1: when email is gone then review", "t.rules", 1, 24,
	          "expected 'missing', 'not missing' or 'present'"));
	/* nesting and parentheses */
	CHECK(bad("rule R1: when (amount > 1 then review", "t.rules", 1, 27, "expected ')'"));
	{
		char deep[400];
		size_t n = 0;
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "rule R1: when ");
		for (int i = 0; i < 65; i++)
			deep[n++] = '(';
		snprintf(deep + n, sizeof(deep) - n, "amount > 1");
		CHECK(bad(deep, "t.rules", 1, 79, "nested more than 64 deep"));
	}
	/* files: errors point into the file that is wrong */
	CHECK(bad("list n = file \"bad_ips.txt\"\nrule R1: when ip in n then review",
	          "bad_ips.txt", 3, 3, "'10.1.2.3/8' has host bits set"));
	CHECK(bad("list n = file \"nope.txt\"\n", "t.rules", 1, 15, "cannot read list file"));
	CHECK(bad("bin_table \"bad_bins.csv\"\n", "bad_bins.csv", 3, 1,
	          "a BIN prefix is 1 to 12 digits"));
	CHECK(bad("bin_table \"dup_bins.csv\"\n", "dup_bins.csv", 3, 1,
	          "duplicate BIN prefix (first on line 1)"));
	CHECK(bad("bin_table \"bins.csv\"\nbin_table \"bins.csv\"\n", "t.rules", 2, 1,
	          "only one bin_table"));
end:
	TT_END;
}

static int
test_load_file(void)
{
	char path[128], buf[600];
	struct rules *r = NULL;
	struct fgw_why err;
	static const char text[] = "list hr = file \"countries.txt\"\n"
	                           "rule R1: when customer.country in hr then review\n";
	static const char nul[] = "rule R1: when amount > 1\n then\0 review\n";
	struct rules_input in;
	struct rules_decision d;
	TT_BEGIN;
	fixture_dir();
	/* relative file names resolve against the rules file's directory */
	CHECK(write_file("rules.conf", text, strlen(text)) == 0);
	snprintf(path, sizeof(path), "%s/rules.conf", tdir);
	CHECK_EQ_INT(rules_load_file(path, NULL, &r, &err), 0);
	base_input(&in);
	in.customer_country = "ir";
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW);
	rules_unref(r);
	r = NULL;
	CHECK(write_file("nul.conf", nul, sizeof(nul) - 1) == 0);
	snprintf(path, sizeof(path), "%s/nul.conf", tdir);
	CHECK_EQ_INT(rules_load_file(path, NULL, &r, &err), FGW_ERR_INVALID);
	CHECK(r == NULL);
	CHECK_EQ_INT(err.line, 2);
	CHECK_EQ_INT(err.col, 6);
	snprintf(path, sizeof(path), "%s/absent.conf", tdir);
	CHECK_EQ_INT(rules_load_file(path, NULL, &r, &err), FGW_ERR_NOT_FOUND);
	CHECK(strstr(fgw_why_format(&err, buf, sizeof(buf)), "cannot read rules file") !=
	      NULL);
	/* no_files refuses file references */
	{
		struct rules_load_opts o = { .no_files = 1 };
		CHECK_EQ_INT(rules_load_string(text, "x", &o, &r, &err), FGW_ERR_INVALID);
		CHECK_EQ_INT(err.line, 1);
		CHECK_EQ_INT(err.col, 16);
		CHECK(strstr(err.msg, "not allowed") != NULL);
	}
	/* an empty file is a valid, empty rule set */
	CHECK_EQ_INT(rules_load_string("  # nothing\n", "x", NULL, &r, &err), 0);
	CHECK_EQ_INT(rules_count(r), 0);
end:
	rules_unref(r);
	TT_END;
}

/* ---- attributes --------------------------------------------------------------- */

static int
test_attr_amount_currency_brand(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in);
	CHECK_EQ_INT(fires("amount > 14999", &in, NULL), 1);
	CHECK_EQ_INT(fires("amount > 15000", &in, NULL), 0);
	CHECK_EQ_INT(fires("amount >= 15000", &in, NULL), 1);
	CHECK_EQ_INT(fires("amount < 15000", &in, NULL), 0);
	CHECK_EQ_INT(fires("amount <= 15000", &in, NULL), 1);
	CHECK_EQ_INT(fires("amount == 15_000", &in, NULL), 1);
	CHECK_EQ_INT(fires("amount != 15000", &in, NULL), 0);
	CHECK_EQ_INT(fires("amount in [100-200, 15000]", &in, NULL), 1);
	CHECK_EQ_INT(fires("amount not in [100-200]", &in, NULL), 1);
	CHECK_EQ_INT(fires("currency == \"usd\"", &in, NULL), 1); /* case-insensitive */
	CHECK_EQ_INT(fires("currency in [\"EUR\", \"GBP\"]", &in, NULL), 0);
	in.currency = NULL;
	CHECK_EQ_INT(fires("currency is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("currency != \"EUR\"", &in, NULL), 0); /* unknown */
	base_input(&in);
	/* brand from the BIN when not given, else as given */
	CHECK_EQ_INT(fires("card.brand == \"Visa\"", &in, NULL), 1);
	in.bin = "555555";
	CHECK_EQ_INT(fires("card.brand == \"mastercard\"", &in, NULL), 1);
	in.brand = "Amex";
	CHECK_EQ_INT(fires("card.brand in [\"AMEX\", \"JCB\"]", &in, NULL), 1);
end:
	TT_END;
}

static int
test_attr_bin_country(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in);
	CHECK_EQ_INT(fires("card.bin == \"424242\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.bin == 4242", &in, NULL), 0);      /* == is exact */
	CHECK_EQ_INT(fires("card.bin matches 4242", &in, NULL), 1); /* prefix */
	CHECK_EQ_INT(fires("card.bin matches 424200-424299", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.bin matches 424243-424299", &in, NULL), 0);
	CHECK_EQ_INT(fires("card.bin in bins", &in, NULL), 1);
	in.bin = "400050";
	CHECK_EQ_INT(fires("card.bin in bins", &in, NULL), 1); /* 400000-400099 */
	in.bin = "400100";
	CHECK_EQ_INT(fires("card.bin in bins", &in, NULL), 0);
	in.bin = "512345";
	CHECK_EQ_INT(fires("card.bin in bins", &in, NULL), 1); /* prefix "5" */
	in.bin = "40000025";                                   /* 8-digit BINs work too */
	CHECK_EQ_INT(fires("card.bin in [40000000-40000099]", &in, NULL), 1);
	in.bin = "4242x2";
	CHECK_EQ_INT(fires("card.bin is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.bin not in bins", &in, NULL), 0);
	/* card.country: longest prefix in the BIN table */
	base_input(&in);
	CHECK_EQ_INT(fires("card.country == \"US\"", &in, NULL), 1); /* 424242 over 4 */
	in.bin = "411111";
	CHECK_EQ_INT(fires("card.country == \"GB\"", &in, NULL), 1); /* only 4 */
	in.bin = "457199";
	CHECK_EQ_INT(fires("card.country == \"SE\"", &in, NULL), 1);
	in.bin = "457100";
	CHECK_EQ_INT(fires("card.country == \"DK\"", &in, NULL), 1);
	in.bin = "40000025";
	CHECK_EQ_INT(fires("card.country == \"FR\"", &in, NULL), 1);
	in.bin = "400000"; /* 6 digits cannot match the 8-digit prefix */
	CHECK_EQ_INT(fires("card.country == \"GB\"", &in, NULL), 1);
	in.bin = "555512";
	CHECK_EQ_INT(fires("card.country == \"US\"", &in, NULL), 1); /* "5555 , us" */
	in.bin = "612345";
	CHECK_EQ_INT(fires("card.country is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.country != customer.country", &in, NULL), 0);
	CHECK_EQ_INT(fires("not (card.country == customer.country)", &in, NULL), 0);
	in.bin = "411111";
	CHECK_EQ_INT(fires("card.country != customer.country", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.country in hr", &in, NULL), 0);
end:
	TT_END;
}

static int
test_attr_customer_email_processor(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in);
	CHECK_EQ_INT(fires("customer.country == \"us\"", &in, NULL), 1);
	in.customer_country = "IR";
	CHECK_EQ_INT(fires("customer.country in hr", &in, NULL),
	             1); /* "  ir  " in the file */
	in.customer_country = "MM";
	CHECK_EQ_INT(fires("customer.country in hr", &in, NULL), 1); /* "\"MM\"" */
	in.customer_country = "";
	CHECK_EQ_INT(fires("customer.country is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("customer.country not in hr", &in, NULL), 0);
	CHECK_EQ_INT(fires("customer.id is missing", &in, NULL), 1);
	in.customer_id = "cus_42";
	CHECK_EQ_INT(fires("customer.id == \"CUS_42\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("email == \"alice@example.com\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("email.domain == \"example.com\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("email matches \"*@EXAMPLE.*\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("email matches \"a?ice@*\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("email matches \"*@example\"", &in, NULL), 0);
	CHECK_EQ_INT(fires("email not matches \"*@mailinator.com\"", &in, NULL), 1);
	in.email = "bob+1@x.org";
	{
		/* a list of patterns */
		struct rules *r = NULL;
		struct fgw_why err;
		struct rules_decision d;
		CHECK_EQ_INT(load("list g = file \"glob.txt\"\n"
		                  "rule G: when email matches g then review\n",
		                  &r, &err),
		             0);
		CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
		rules_unref(r);
		CHECK_EQ_INT(d.action, RULES_REVIEW);
	}
	in.email = "no-at-sign";
	CHECK_EQ_INT(fires("email.domain is missing", &in, NULL), 1);
	in.email = "trailing@";
	CHECK_EQ_INT(fires("email.domain is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("processor == \"SANDBOX\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("processor in [\"stripe\", \"adyen\"]", &in, NULL), 0);
	CHECK_EQ_INT(fires("fingerprint == \"FP-AAAA\"", &in, NULL), 1);
	in.fingerprint = NULL;
	CHECK_EQ_INT(fires("fingerprint is missing", &in, NULL), 1);
end:
	TT_END;
}

static int
test_attr_time_threeds_mode_saved(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in); /* Monday 12:15 UTC */
	CHECK_EQ_INT(fires("hour == 12", &in, NULL), 1);
	CHECK_EQ_INT(fires("hour in [0-5, 22-23]", &in, NULL), 0);
	CHECK_EQ_INT(fires("weekday == mon", &in, NULL), 1);
	CHECK_EQ_INT(fires("weekday in [sat, sun]", &in, NULL), 0);
	in.now_ms = T0 + 5 * DAY + 11 * HOUR + 45 * MIN; /* Sunday 00:00:00 */
	CHECK_EQ_INT(fires("weekday == \"sun\" and hour == 0", &in, NULL), 1);
	in.now_ms -= 1; /* Saturday 23:59:59.999 */
	CHECK_EQ_INT(fires("weekday == sat and hour == 23", &in, NULL), 1);
	in.now_ms = -1; /* before 1970: Wednesday 23:59 */
	CHECK_EQ_INT(fires("weekday == wed and hour == 23", &in, NULL), 1);
	base_input(&in);
	CHECK_EQ_INT(fires("threeds == none", &in, NULL), 1);
	in.threeds = NULL;
	CHECK_EQ_INT(fires("threeds == none", &in, NULL), 1);
	in.threeds = "Authenticated";
	CHECK_EQ_INT(fires("threeds == authenticated", &in, NULL), 1);
	in.threeds = "failed";
	CHECK_EQ_INT(fires("threeds in [failed, required]", &in, NULL), 1);
	in.threeds = "required";
	CHECK_EQ_INT(fires("threeds != required", &in, NULL), 0);
	CHECK_EQ_INT(fires("mode == development", &in, NULL), 1);
	in.mode = "production";
	CHECK_EQ_INT(fires("mode == production", &in, NULL), 1);
	in.mode = NULL; /* anything but development is production */
	CHECK_EQ_INT(fires("mode == \"production\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.saved", &in, NULL), 0);
	CHECK_EQ_INT(fires("not card.saved", &in, NULL), 1);
	in.card_saved = 1;
	CHECK_EQ_INT(fires("card.saved", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.saved == true", &in, NULL), 1);
	CHECK_EQ_INT(fires("card.saved != true", &in, NULL), 0);
end:
	TT_END;
}

static int
test_attr_ip_cidr(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in);
	in.ip = "10.200.3.4";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip matches \"10.0.0.0/8\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip matches \"10.0.0.0/16\"", &in, NULL), 0);
	in.ip = "11.0.0.0";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 0);
	in.ip = "9.255.255.255";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 0);
	in.ip = "192.168.1.7"; /* a bare address is a /32 */
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 1);
	in.ip = "192.168.1.8";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 0);
	in.ip = "2001:db8:ffff::1";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 1);
	in.ip = "2001:db9::1";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 0);
	in.ip = "::1";
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip == \"0:0::1\"", &in, NULL), 1);
	in.ip = "::ffff:10.1.2.3"; /* IPv4-mapped IPv6 is the IPv4 address */
	CHECK_EQ_INT(fires("ip in nets", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip == \"10.1.2.3\"", &in, NULL), 1);
	in.ip = "10.1.2.3";
	CHECK_EQ_INT(fires("ip matches \"::ffff:10.0.0.0/104\"", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip in [\"0.0.0.0/0\"]", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip in [\"::/0\"]", &in, NULL), 1);
	in.ip = "2001:db8::1";
	CHECK_EQ_INT(fires("ip in [\"0.0.0.0/0\"]", &in, NULL), 0);
	CHECK_EQ_INT(fires("ip in [\"2001:db8::/128\", \"2001:db8::2/127\"]", &in, NULL), 0);
	CHECK_EQ_INT(fires("ip in [\"2001:db8::/127\"]", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip in [\"8000::/1\", \"::/1\"]", &in, NULL), 1);
	in.ip = "not-an-ip";
	CHECK_EQ_INT(fires("ip is missing", &in, NULL), 1);
	CHECK_EQ_INT(fires("ip not in nets", &in, NULL), 0);
end:
	TT_END;
}

/* ---- actions and semantics ----------------------------------------------------- */

static int
test_actions_first_match(void)
{
	struct rules *r = NULL;
	struct fgw_why err;
	struct rules_decision d;
	struct rules_input in;
	char buf[400];
	static const char text[] =
	    "rule A1 \"trusted\": when customer.id == \"vip\" then allow\n"
	    "rule D1 \"too big\": when amount > 100000 then decline AMOUNT_LIMIT\n"
	    "rule S1: when amount > 50000 then require_3ds\n"
	    "rule V1 \"odd currency\": when currency != \"USD\" then review\n"
	    "rule V2: when amount > 60000 then review\n";
	TT_BEGIN;
	CHECK_EQ_INT(load(text, &r, &err), 0);
	base_input(&in);
	/* nothing matches: allow, no rule */
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	CHECK_STR(d.rule_id, "");
	CHECK_STR(d.fired, "");
	CHECK_EQ_INT(d.nfired, 0);
	CHECK_STR(rules_describe_decision(r, &d, buf, sizeof(buf)),
	          "allow (no rule matched)");
	/* review */
	in.currency = "EUR";
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW);
	CHECK_STR(d.rule_id, "V1");
	CHECK_STR(d.code, "");
	/* require_3ds comes first in the file, both listed */
	in.amount = 70000;
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REQUIRE_3DS);
	CHECK_STR(d.rule_id, "S1");
	CHECK_STR(d.fired, "S1,V1,V2");
	CHECK_EQ_INT(d.nfired, 3);
	/* decline wins by position */
	in.amount = 200000;
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_DECLINE);
	CHECK_STR(d.code, "AMOUNT_LIMIT");
	CHECK_STR(d.rule_id, "D1");
	CHECK_STR(d.fired, "D1,S1,V1,V2");
	CHECK_STR(rules_describe_decision(r, &d, buf, sizeof(buf)),
	          "decline AMOUNT_LIMIT by rule D1 \"too big\"; fired: D1,S1,V1,V2");
	/* an explicit allow above stops the rest from deciding */
	in.customer_id = "vip";
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	CHECK_STR(d.rule_id, "A1");
	CHECK_STR(d.fired, "A1,D1,S1,V1,V2");
	CHECK_STR(rules_action_name(RULES_REQUIRE_3DS), "require_3ds");
	CHECK_EQ_INT(rules_eval(r, NULL, NULL, &d), FGW_ERR_INVALID);
end:
	rules_unref(r);
	TT_END;
}

static int
test_fired_overflow(void)
{
	char text[8192], buf[600];
	size_t n = 0;
	struct rules *r = NULL;
	struct fgw_why err;
	struct rules_decision d;
	struct rules_input in;
	TT_BEGIN;
	for (int i = 0; i < 40; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "rule RULE_NUMBER_%02d: when amount > 0 then review\n", i);
	CHECK_EQ_INT(load(text, &r, &err), 0);
	base_input(&in);
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_EQ_INT(d.nfired, 40);
	CHECK_STR(d.rule_id, "RULE_NUMBER_00");
	CHECK(strncmp(d.fired, "RULE_NUMBER_00,RULE_NUMBER_01,", 30) == 0);
	CHECK(strlen(d.fired) < sizeof(d.fired));
	CHECK(d.fired[strlen(d.fired) - 1] != ','); /* whole ids only */
	CHECK(strstr(rules_describe_decision(r, &d, buf, sizeof(buf)), "more)") != NULL);
end:
	rules_unref(r);
	TT_END;
}

static int
test_three_valued_logic(void)
{
	struct rules_input in;
	TT_BEGIN;
	base_input(&in);
	in.customer_country = NULL;
	/* unknown or true is true; unknown and false is false */
	CHECK_EQ_INT(fires("customer.country == \"US\" or amount > 1", &in, NULL), 1);
	CHECK_EQ_INT(fires("customer.country == \"US\" and amount > 1", &in, NULL), 0);
	CHECK_EQ_INT(fires("not (customer.country == \"US\" and amount > 1)", &in, NULL), 0);
	CHECK_EQ_INT(fires("not (customer.country == \"US\" and amount < 1)", &in, NULL), 1);
	CHECK_EQ_INT(fires("not (customer.country == \"US\" or amount > 1)", &in, NULL), 0);
	CHECK_EQ_INT(fires("customer.country is missing or customer.country != \"US\"", &in,
	                   NULL),
	             1);
	/* without a velocity store, velocity tests are unknown */
	CHECK_EQ_INT(fires("count(card, 1m) > 0", &in, NULL), 0);
	CHECK_EQ_INT(fires("not (count(card, 1m) > 0)", &in, NULL), 0);
	CHECK_EQ_INT(fires("count(card, 1m) is missing", &in, NULL), 1);
end:
	TT_END;
}

/* ---- velocity ----------------------------------------------------------------- */

static int
test_velocity_window_edges(void)
{
	struct velocity *v = NULL;
	struct velocity_stats st;
	struct rules_input in;
	TT_BEGIN;
	CHECK_EQ_INT(velocity_new(NULL, &v), 0);
	/* events at T0 - 10m (exactly on the edge), T0 - 10m + 1ms, T0 */
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "c1", T0 - 10 * MIN, 100, 0), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "c1", T0 - 10 * MIN + 1, 200, 1), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "c1", T0, 400, 0), 0);
	/* the window (now - W, now]: an event exactly W old is outside */
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c1", T0, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(st.sum, 600);
	CHECK_EQ_INT(st.declines, 1);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c1", T0 - 1, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 3); /* events after now are inside too */
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c1", T0 + 1, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 1);
	CHECK_EQ_INT(st.sum, 400);
	CHECK_EQ_INT(st.declines, 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c1", T0 + 10 * MIN - 1, 10 * MIN, &st),
	             0);
	CHECK_EQ_INT(st.count, 1);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c1", T0 + 10 * MIN, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 0);
	/* other dimensions and keys are separate */
	CHECK_EQ_INT(velocity_query(v, VELOCITY_IP, "c1", T0, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "c2", T0, 10 * MIN, &st), 0);
	CHECK_EQ_INT(st.count, 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "", T0, 1, 0), FGW_ERR_INVALID);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "c1", T0, -1, 0), FGW_ERR_INVALID);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_NDIMS, "c1", T0, 1, 0), FGW_ERR_INVALID);

	/* the same edges through the language; count and sum include the
	 * payment being decided, declines are the earlier ones */
	base_input(&in);
	in.fingerprint = "c1";
	in.amount = 1000;
	CHECK_EQ_INT(fires("count(card, 10m) == 3", &in, v), 1);
	CHECK_EQ_INT(fires("sum(card, 10m) == 1600", &in, v), 1);
	CHECK_EQ_INT(fires("declines(card, 10m) == 1", &in, v), 1);
	CHECK_EQ_INT(fires("declines == 1", &in, v), 1);
	in.now_ms = T0 + 1;
	CHECK_EQ_INT(fires("count(card, 10m) == 2 and declines(card, 10m) == 0", &in, v), 1);
	CHECK_EQ_INT(fires("declines == 1", &in, v), 1); /* 24 h */
	in.now_ms = T0 + 10 * MIN;
	CHECK_EQ_INT(fires("count(card, 10m) == 1 and sum(card, 10m) == 1000", &in, v), 1);
	CHECK_EQ_INT(fires("count(card, 600s) == 1", &in, v), 1);
	CHECK_EQ_INT(fires("count(card, 601s) == 2", &in, v), 1);
	in.fingerprint = NULL;
	CHECK_EQ_INT(fires("count(card, 10m) >= 0", &in, v), 0);
	CHECK_EQ_INT(fires("count(card, 10m) is missing", &in, v), 1);
end:
	velocity_free(v);
	TT_END;
}

static int
test_velocity_out_of_order(void)
{
	struct velocity *a = NULL, *b = NULL;
	struct velocity_stats sa, sb;
	int64_t ts[64];
	TT_BEGIN;
	CHECK_EQ_INT(velocity_new(NULL, &a), 0);
	CHECK_EQ_INT(velocity_new(NULL, &b), 0);
	for (int i = 0; i < 64; i++)
		ts[i] = T0 - (int64_t)i * 37 * 1000; /* newest first */
	/* a: oldest to newest; b: a shuffled order (a replay from the DB) */
	for (int i = 63; i >= 0; i--)
		CHECK_EQ_INT(velocity_record(a, VELOCITY_IP, "1.2.3.4", ts[i], i, i % 3 == 0), 0);
	for (int k = 0; k < 64; k++) {
		int i = (k * 29) % 64; /* 29 is coprime with 64: a permutation */
		CHECK_EQ_INT(velocity_record(b, VELOCITY_IP, "1.2.3.4", ts[i], i, i % 3 == 0), 0);
	}
	for (int64_t w = 1000; w <= 64 * 37 * 1000; w += 3700) {
		CHECK_EQ_INT(velocity_query(a, VELOCITY_IP, "1.2.3.4", T0, w, &sa), 0);
		CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "1.2.3.4", T0, w, &sb), 0);
		CHECK_EQ_INT(sa.count, sb.count);
		CHECK_EQ_INT(sa.sum, sb.sum);
		CHECK_EQ_INT(sa.declines, sb.declines);
	}
	/* several windows in one pass give what one query each gives */
	{
		int64_t ws[5] = { 0, 37000, 37001, 10 * MIN, 90 * DAY };
		struct velocity_stats multi[5];
		CHECK_EQ_INT(velocity_query_windows(b, VELOCITY_IP, "1.2.3.4", T0, ws, 5, multi),
		             0);
		for (int i = 0; i < 5; i++) {
			CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "1.2.3.4", T0, ws[i], &sb), 0);
			CHECK_EQ_INT(multi[i].count, sb.count);
			CHECK_EQ_INT(multi[i].sum, sb.sum);
			CHECK_EQ_INT(multi[i].declines, sb.declines);
		}
		CHECK_EQ_INT(multi[0].count, 0);
		CHECK_EQ_INT(multi[1].count, 1); /* only ts == T0 */
		CHECK_EQ_INT(multi[2].count, 2);
		CHECK_EQ_INT(multi[4].count, 64);
		ws[0] = 40000;
		CHECK_EQ_INT(velocity_query_windows(b, VELOCITY_IP, "1.2.3.4", T0, ws, 2, multi),
		             FGW_ERR_INVALID); /* not ascending */
	}
	CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "1.2.3.4", T0, 10 * MIN, &sb), 0);
	/* ts within 10 min: i*37s < 600s -> i <= 16: 17 events */
	CHECK_EQ_INT(sb.count, 17);
	CHECK_EQ_INT(sb.sum, 16 * 17 / 2);
	CHECK_EQ_INT(sb.declines, 6); /* i = 0,3,6,9,12,15 */
	/* a decline learned later marks the attempt; no extra attempt */
	CHECK_EQ_INT(velocity_mark_declined(b, VELOCITY_IP, "1.2.3.4", ts[1]), 0);
	CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "1.2.3.4", T0, 10 * MIN, &sb), 0);
	CHECK_EQ_INT(sb.count, 17);
	CHECK_EQ_INT(sb.declines, 7);
	/* marking an attempt that was never recorded records the decline alone */
	CHECK_EQ_INT(velocity_mark_declined(b, VELOCITY_IP, "1.2.3.4", T0 - 5), 0);
	CHECK_EQ_INT(velocity_mark_declined(b, VELOCITY_IP, "9.9.9.9", T0), 0);
	CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "1.2.3.4", T0, 10 * MIN, &sb), 0);
	CHECK_EQ_INT(sb.count, 17);
	CHECK_EQ_INT(sb.declines, 8);
	CHECK_EQ_INT(velocity_query(b, VELOCITY_IP, "9.9.9.9", T0, 10 * MIN, &sb), 0);
	CHECK_EQ_INT(sb.count, 0);
	CHECK_EQ_INT(sb.declines, 1);
end:
	velocity_free(a);
	velocity_free(b);
	TT_END;
}

static int
test_velocity_bounds(void)
{
	struct velocity *v = NULL;
	struct velocity_opts o = {
		.retention_ms = HOUR, .max_events_per_key = 8, .max_keys = 64, .max_events = 10000
	};
	struct velocity_stats st;
	size_t keys, events;
	char key[32];
	TT_BEGIN;
	CHECK_EQ_INT(velocity_new(&o, &v), 0);
	CHECK_EQ_INT(velocity_retention_ms(v), HOUR);
	/* retention: an event older than an hour behind the key's newest is
	 * pruned, and a late one that old is ignored */
	CHECK_EQ_INT(velocity_record(v, VELOCITY_EMAIL, "a@x", T0 - 2 * HOUR, 1, 0), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_EMAIL, "a@x", T0, 2, 0), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_EMAIL, "a@x", T0 - HOUR, 4, 0), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_EMAIL, "a@x", T0 - HOUR + 1, 8, 0), 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_EMAIL, "a@x", T0, 90 * DAY, &st), 0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(st.sum, 10);
	/* per-key cap: the oldest go first; an older event than all kept is
	 * dropped */
	for (int i = 0; i < 20; i++)
		CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "hot", T0 + i, i, 0), 0);
	CHECK_EQ_INT(velocity_record(v, VELOCITY_CARD, "hot", T0 - 1, 1000, 0), 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "hot", T0 + 19, HOUR, &st), 0);
	CHECK_EQ_INT(st.count, 8);
	CHECK_EQ_INT(st.sum, 12 + 13 + 14 + 15 + 16 + 17 + 18 + 19);
	/* retention grows, never shrinks */
	velocity_ensure_retention(v, 2 * HOUR);
	velocity_ensure_retention(v, HOUR);
	CHECK_EQ_INT(velocity_retention_ms(v), 2 * HOUR);
	/* total keys stay bounded (64 over 16 shards: at most 4 each) */
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CHECK_EQ_INT(velocity_record(v, VELOCITY_IP, key, T0, 1, 0), 0);
	}
	velocity_usage(v, &keys, &events);
	CHECK(keys <= 64);
	CHECK(events <= 64 * 8);
	/* the most recently recorded key survives */
	CHECK_EQ_INT(velocity_query(v, VELOCITY_IP, "k999", T0, HOUR, &st), 0);
	CHECK_EQ_INT(st.count, 1);
	/* idle keys whose events are all out of retention are dropped */
	velocity_free(v);
	v = NULL;
	o.max_keys = 16000;
	CHECK_EQ_INT(velocity_new(&o, &v), 0);
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "old%d", i);
		CHECK_EQ_INT(velocity_record(v, VELOCITY_IP, key, T0, 1, 0), 0);
	}
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "new%d", i);
		CHECK_EQ_INT(velocity_record(v, VELOCITY_IP, key, T0 + 2 * HOUR, 1, 0), 0);
	}
	velocity_usage(v, &keys, &events);
	CHECK(keys < 400);
	/* long keys are cut consistently */
	{
		char longkey[600];
		memset(longkey, 'e', sizeof(longkey) - 1);
		longkey[sizeof(longkey) - 1] = '\0';
		CHECK_EQ_INT(velocity_record(v, VELOCITY_EMAIL, longkey, T0, 5, 0), 0);
		longkey[400] = 'x'; /* differs only after the cut */
		CHECK_EQ_INT(velocity_query(v, VELOCITY_EMAIL, longkey, T0, HOUR, &st), 0);
		CHECK_EQ_INT(st.count, 1);
	}
	CHECK_STR(velocity_dim_name(VELOCITY_CUSTOMER), "customer");
end:
	velocity_free(v);
	TT_END;
}

static int
test_record_keys(void)
{
	struct velocity *v = NULL;
	struct velocity_stats st;
	struct rules_input in;
	TT_BEGIN;
	CHECK_EQ_INT(velocity_new(NULL, &v), 0);
	base_input(&in);
	in.ip = "2001:db8:1:2:aaaa::1";
	CHECK_EQ_INT(rules_record(&in, v, 0), 0);
	/* IPv6 counts per /64, e-mail is lower-cased, customer falls back to
	 * the e-mail */
	in.ip = "2001:db8:1:2:bbbb::9";
	in.email = "ALICE@example.COM";
	in.now_ms = T0 + 1000;
	CHECK_EQ_INT(rules_record(&in, v, 1), 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_IP, "2001:db8:1:2::/64", T0 + 1000, MIN, &st),
	             0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_EMAIL, "alice@example.com", T0 + 1000, MIN,
	                            &st),
	             0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(st.sum, 30000);
	CHECK_EQ_INT(st.declines, 1);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CUSTOMER, "email:alice@example.com",
	                            T0 + 1000, MIN, &st),
	             0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CARD, "fp-aaaa", T0 + 1000, MIN, &st), 0);
	CHECK_EQ_INT(st.count, 2);
	CHECK_EQ_INT(st.declines, 1);
	/* IPv4 as written; a customer id wins over the e-mail */
	in.ip = "::ffff:198.51.100.1";
	in.customer_id = "cus_1";
	CHECK_EQ_INT(rules_record(&in, v, 0), 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_IP, "198.51.100.1", T0 + 1000, MIN, &st), 0);
	CHECK_EQ_INT(st.count, 1);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CUSTOMER, "id:cus_1", T0 + 1000, MIN, &st),
	             0);
	CHECK_EQ_INT(st.count, 1);
	/* a decline learned after the attempt was recorded */
	CHECK_EQ_INT(rules_record_decline(&in, v), 0);
	CHECK_EQ_INT(velocity_query(v, VELOCITY_CUSTOMER, "id:cus_1", T0 + 1000, MIN, &st),
	             0);
	CHECK_EQ_INT(st.count, 1);
	CHECK_EQ_INT(st.declines, 1);
	/* nothing to key on: nothing recorded, no error */
	memset(&in, 0, sizeof(in));
	in.now_ms = T0;
	CHECK_EQ_INT(rules_record(&in, v, 0), 0);
	in.amount = -5;
	CHECK_EQ_INT(rules_record(&in, v, 0), FGW_ERR_INVALID);
end:
	velocity_free(v);
	TT_END;
}

struct worker {
	struct velocity *v;
	struct rules *r;
	int id, fails;
};

#define PER_THREAD 2000

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct rules_input in;
	struct rules_decision d;
	struct velocity_stats st;
	char ip[32];
	base_input(&in);
	snprintf(ip, sizeof(ip), "10.0.0.%d", w->id);
	for (int i = 0; i < PER_THREAD; i++) {
		in.fingerprint = "shared-card";
		in.ip = ip;
		in.amount = 1;
		in.now_ms = T0 + i;
		if (rules_eval(w->r, &in, w->v, &d) != 0)
			w->fails++;
		if (d.action != RULES_REVIEW || strcmp(d.fired, "PERIP") != 0)
			w->fails++;
		/* only this thread writes its IP: exactly i earlier attempts */
		if (velocity_query(w->v, VELOCITY_IP, ip, in.now_ms, HOUR, &st) != 0 ||
		    st.count != i)
			w->fails++;
		if (rules_record(&in, w->v, i % 2) != 0)
			w->fails++;
	}
	return NULL;
}

static int
test_concurrency(void)
{
	struct velocity *v = NULL;
	struct velocity_opts o = { .max_events_per_key = 16384 };
	struct rules *r = NULL;
	struct fgw_why err;
	struct rules_slot *slot = NULL;
	struct velocity_stats st;
	struct worker w[4];
	pthread_t th[4];
	int started = 0;
	char rules_text[256];
	TT_BEGIN;
	CHECK_EQ_INT(velocity_new(&o, &v), 0);
	/* every evaluation reads the store while the other threads write it */
	snprintf(rules_text, sizeof(rules_text),
	         "rule PERIP: when count(ip, 1h) >= 1 and count(ip, 1h) <= %d then review\n"
	         "rule CARD: when count(card, 1h) > %d then decline X\n",
	         PER_THREAD, 4 * PER_THREAD);
	CHECK_EQ_INT(load(rules_text, &r, &err), 0);
	CHECK_EQ_INT(rules_slot_new(r, &slot), 0);
	r = NULL; /* owned by the slot */
	for (int i = 0; i < 4; i++) {
		w[i].v = v;
		w[i].r = rules_slot_get(slot);
		w[i].id = i + 1;
		w[i].fails = 0;
	}
	/* a reload while the threads hold the old set */
	CHECK_EQ_INT(load(rules_text, &r, &err), 0);
	rules_slot_set(slot, r);
	r = NULL;
	for (int i = 0; i < 4; i++, started++)
		CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
end:
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < started; i++) {
		if (w[i].fails)
			fprintf(stderr, "  thread %d: %d failures\n", i, w[i].fails);
		tt_fail |= w[i].fails != 0;
		rules_unref(w[i].r);
	}
	if (started == 4) {
		velocity_query(v, VELOCITY_CARD, "shared-card", T0 + PER_THREAD, HOUR, &st);
		if (st.count != 4 * PER_THREAD || st.declines != 4 * PER_THREAD / 2) {
			fprintf(stderr, "  shared card: %lld attempts, %lld declines\n",
			        (long long)st.count, (long long)st.declines);
			tt_fail = 1;
		}
		for (int i = 1; i <= 4; i++) {
			char ip[32];
			snprintf(ip, sizeof(ip), "10.0.0.%d", i);
			velocity_query(v, VELOCITY_IP, ip, T0 + PER_THREAD, HOUR, &st);
			tt_fail |= st.count != PER_THREAD;
		}
	}
	rules_slot_free(slot);
	rules_unref(r);
	velocity_free(v);
	TT_END;
}

/* ---- shipped defaults ----------------------------------------------------------- */

static int
load_default(struct rules **r)
{
	struct fgw_why err;
	char buf[600];
	const char *path = "etc/rules.conf";
	char alt[512];
	int rc;
	if (access(path, R_OK) != 0) {
		/* run from elsewhere: find etc/ next to this source file */
		const char *src = __FILE__, *cut = strstr(src, "tests/unit/");
		snprintf(alt, sizeof(alt), "%.*setc/rules.conf", cut ? (int)(cut - src) : 0, src);
		path = alt;
	}
	rc = rules_load_file(path, NULL, r, &err);
	if (rc != 0)
		fprintf(stderr, "  %s\n", fgw_why_format(&err, buf, sizeof(buf)));
	return rc;
}

static int
test_default_rules(void)
{
	static const char *const sandbox_cards[] = { "4242424242424242", "4000000000000002",
		                                         "4000000000009995", "4000002500003155" };
	struct rules *r = NULL;
	struct velocity *v = NULL;
	struct rules_input in;
	struct rules_decision d;
	char bin[7];
	TT_BEGIN;
	CHECK_EQ_INT(load_default(&r), 0);
	CHECK(rules_count(r) >= 10);
	CHECK_EQ_INT(rules_max_window_ms(r), DAY);
	CHECK_EQ_INT(velocity_new(NULL, &v), 0);
	/* development: the four sandbox cards go through */
	for (int i = 0; i < 4; i++) {
		base_input(&in);
		memcpy(bin, sandbox_cards[i], 6);
		bin[6] = '\0';
		in.bin = bin;
		in.ip = "127.0.0.1";
		in.fingerprint = sandbox_cards[i] + 10; /* distinct per card */
		CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
		if (d.action != RULES_ALLOW)
			fprintf(stderr, "  card %d: %s %s\n", i, rules_action_name(d.action),
			        d.rule_id);
		CHECK_EQ_INT(d.action, RULES_ALLOW);
		CHECK_STR(d.fired, "");
		CHECK_EQ_INT(rules_record(&in, v, 0), 0);
	}
	/* production: test cards are refused */
	base_input(&in);
	in.mode = "production";
	in.fingerprint = "prod-card";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_DECLINE);
	CHECK_STR(d.code, "TEST_CARD");
	CHECK_STR(d.rule_id, "R130");
	in.bin = "400000";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.code, "TEST_CARD");
	in.bin = "411111"; /* not a test BIN, not in the table: allowed */
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	/* amount limit */
	base_input(&in);
	in.amount = 500001;
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.code, "AMOUNT_LIMIT");
	in.amount = 500000;
	in.threeds = "authenticated";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW); /* over 2,000.00 per e-mail: R310 */
	CHECK_STR(d.rule_id, "R310");
	/* over 1,000.00 on a new card without 3-D Secure */
	in.amount = 100001;
	in.threeds = "none";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REQUIRE_3DS);
	CHECK_STR(d.rule_id, "R210");
	in.card_saved = 1;
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	/* country mismatch -> review; high-risk country -> 3-D Secure */
	base_input(&in);
	in.customer_country = "GB";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW);
	CHECK_STR(d.rule_id, "R300");
	in.customer_country = "IR";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REQUIRE_3DS);
	CHECK_STR(d.rule_id, "R200");
	CHECK_STR(d.fired, "R200,R300");
	in.threeds = "authenticated";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.rule_id, "R300");
	in.threeds = "failed";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.code, "THREEDS_FAILED");
	/* blocked IP ranges, disposable e-mail */
	base_input(&in);
	in.ip = "2001:db8:bad:1::5";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.code, "IP_BLOCKED");
	base_input(&in);
	in.email = "x@Mailinator.com";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.rule_id, "R320");
end:
	velocity_free(v);
	rules_unref(r);
	TT_END;
}

static int
test_default_rules_velocity(void)
{
	struct rules *r = NULL;
	struct velocity *v = NULL;
	struct rules_input in;
	struct rules_decision d;
	char fp[32];
	TT_BEGIN;
	CHECK_EQ_INT(load_default(&r), 0);
	CHECK_EQ_INT(velocity_new(NULL, &v), 0);
	/* 5 attempts per IP per minute pass, the 6th within the minute is
	 * refused; once the first leaves the window, one more passes */
	base_input(&in);
	for (int i = 0; i < 5; i++) {
		snprintf(fp, sizeof(fp), "card-%d", i);
		in.fingerprint = fp;
		in.now_ms = T0 + i * 1000;
		CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
		CHECK_EQ_INT(d.action, RULES_ALLOW);
		CHECK_EQ_INT(rules_record(&in, v, 0), 0);
	}
	in.fingerprint = "card-5";
	in.now_ms = T0 + MIN - 1;
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_DECLINE);
	CHECK_STR(d.code, "VELOCITY_LIMIT");
	CHECK_STR(d.rule_id, "R110");
	in.now_ms = T0 + MIN; /* the attempt at T0 is exactly a minute old */
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);

	/* 5 declines of one card in 24 h: the next attempt is refused (a
	 * card that is not a test card: development exempts those, below) */
	base_input(&in);
	in.bin = "411111";
	in.fingerprint = "declined-card";
	for (int i = 0; i < 5; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "203.0.113.%d", 10 + i);
		in.ip = ip; /* different IPs: only the decline rule applies */
		in.now_ms = T0 + i * HOUR;
		CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
		CHECK_EQ_INT(d.action, RULES_ALLOW);
		CHECK_EQ_INT(rules_record(&in, v, 0), 0);
		CHECK_EQ_INT(rules_record_decline(&in, v), 0); /* the processor said no */
	}
	in.ip = "203.0.113.99";
	in.now_ms = T0 + 5 * HOUR;
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.code, "TOO_MANY_DECLINES");
	CHECK_STR(d.rule_id, "R120");
	/* the same declines on a test card: refused in production, never
	 * locked out in development */
	in.bin = "424242";
	in.mode = "production";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_STR(d.rule_id, "R120");
	in.mode = "development";
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	in.bin = "411111";
	/* 24 h after the first decline only 4 remain */
	in.now_ms = T0 + DAY;
	CHECK_EQ_INT(rules_eval(r, &in, v, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
end:
	velocity_free(v);
	rules_unref(r);
	TT_END;
}

static int
test_refcount_slot(void)
{
	struct rules *a = NULL, *b = NULL, *held = NULL;
	struct rules_slot *s = NULL;
	struct fgw_why err;
	struct rules_input in;
	struct rules_decision d;
	TT_BEGIN;
	CHECK_EQ_INT(load("rule OLD: when amount > 0 then review\n", &a, &err), 0);
	CHECK_EQ_INT(load("rule NEW: when amount > 0 then decline NEW_RULES\n", &b, &err), 0);
	CHECK_EQ_INT(rules_slot_new(a, &s), 0);
	held = rules_slot_get(s);
	rules_slot_set(s, b); /* the old set lives on while held */
	base_input(&in);
	CHECK_EQ_INT(rules_eval(held, &in, NULL, &d), 0);
	CHECK_STR(d.rule_id, "OLD");
	rules_unref(held);
	held = rules_slot_get(s);
	CHECK_EQ_INT(rules_eval(held, &in, NULL, &d), 0);
	CHECK_STR(d.rule_id, "NEW");
	CHECK(rules_ref(NULL) == NULL);
	rules_unref(NULL);
end:
	rules_unref(held);
	rules_slot_free(s);
	TT_END;
}

/* Big files stay fast and bounded. */
static int
test_limits(void)
{
	size_t cap = 4 << 20, n = 0;
	char *text = malloc(cap), prefix[64];
	struct rules *r = NULL;
	struct fgw_why err;
	struct rules_input in;
	struct rules_decision d;
	TT_BEGIN;
	CHECK(text != NULL);
	/* 20,000 lists, each used by a rule: names are found by hash */
	for (int i = 0; i < 20000; i++)
		n += (size_t)
		    snprintf(text + n, cap - n,
		             "list l%d = [\"c%d\"]\nrule R%d: when email in l%d then review\n", i,
		             i, i, i);
	CHECK_EQ_INT(load(text, &r, &err), 0);
	CHECK_EQ_INT(rules_count(r), 20000);
	base_input(&in);
	in.email = "C19999";
	CHECK_EQ_INT(rules_eval(r, &in, NULL, &d), 0);
	CHECK_STR(d.rule_id, "R19999");
	rules_unref(r);
	r = NULL;
	/* at most 256 different velocity windows */
	n = 0;
	for (int i = 0; i < 257; i++)
		n += (size_t)snprintf(text + n, cap - n,
		                      "rule R%d: when count(card, %ds) > 0 then review\n", i,
		                      i + 1);
	snprintf(prefix, sizeof(prefix), "rule R256: when count(card, ");
	CHECK(bad(text, "t.rules", 257, (int)strlen(prefix) + 1,
	          "more than 256 different velocity windows"));
	/* 100 windows load and evaluate (only 64 are cached) */
	n = 0;
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(text + n, cap - n,
		                      "rule R%d: when count(card, %ds) > 1 then review\n", i,
		                      i + 1);
	CHECK_EQ_INT(load(text, &r, &err), 0);
	{
		struct velocity *v = NULL;
		CHECK_EQ_INT(velocity_new(NULL, &v), 0);
		in.fingerprint = "fp";
		velocity_record(v, VELOCITY_CARD, "fp", T0 - 50 * 1000, 1, 0);
		rules_eval(r, &in, v, &d);
		velocity_free(v);
		/* windows of 51s and more hold the earlier attempt */
		CHECK_EQ_INT(d.nfired, 50);
		CHECK_STR(d.rule_id, "R50");
	}
end:
	rules_unref(r);
	free(text);
	TT_END;
}

/* Odd inputs must be refused cleanly (ASan watches). */
static int
test_garbage(void)
{
	static const char *const texts[] = {
		"",
		"rule",
		"rule R1",
		"rule R1:",
		"rule R1: when",
		"rule R1: when (",
		"rule R1: when count(",
		"rule R1: when count(card",
		"rule R1: when count(card,",
		"rule R1: when count(card, 1m",
		"list",
		"list x",
		"list x =",
		"list x = [",
		"list x = [\"a\",",
		"bin_table",
		"\"",
		"rule R1: when email matches",
		"rule R1: when email in [",
		"rule R1: when not",
		"rule R1: when amount >",
		"rule R1: when card.bin matches 99999999999999999999",
		"rule R1: when ip in [\"::/129\"] then allow",
		"rule R1: when card.bin in [\"\"] then allow",
		"rule R1: when card.bin in [1-] then allow",
		"rule R1: when amount in [9999999999999999999] then allow",
		"rule R1: when amount in [5-] then allow",
		"\xff\xfe",
		NULL
	};
	struct rules *r = NULL;
	struct fgw_why err;
	TT_BEGIN;
	for (int i = 0; texts[i]; i++) {
		int rc = rules_load_string(texts[i], "g", NULL, &r, &err);
		if (i == 0) {
			CHECK_EQ_INT(rc, 0);
			rules_unref(r);
			r = NULL;
			continue;
		}
		if (rc == 0)
			fprintf(stderr, "  loaded: %s\n", texts[i]);
		CHECK(rc != 0);
		CHECK(r == NULL);
		CHECK(err.line >= 1 && err.col >= 1 && err.msg[0] != '\0');
	}
end:
	rules_unref(r);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "parse_good", test_parse_good },
	{ "parse_errors", test_parse_errors },
	{ "load_file", test_load_file },
	{ "attr_amount_currency_brand", test_attr_amount_currency_brand },
	{ "attr_bin_country", test_attr_bin_country },
	{ "attr_customer_email_processor", test_attr_customer_email_processor },
	{ "attr_time_threeds_mode_saved", test_attr_time_threeds_mode_saved },
	{ "attr_ip_cidr", test_attr_ip_cidr },
	{ "actions_first_match", test_actions_first_match },
	{ "fired_overflow", test_fired_overflow },
	{ "three_valued_logic", test_three_valued_logic },
	{ "velocity_window_edges", test_velocity_window_edges },
	{ "velocity_out_of_order", test_velocity_out_of_order },
	{ "velocity_bounds", test_velocity_bounds },
	{ "record_keys", test_record_keys },
	{ "concurrency", test_concurrency },
	{ "default_rules", test_default_rules },
	{ "default_rules_velocity", test_default_rules_velocity },
	{ "refcount_slot", test_refcount_slot },
	{ "limits", test_limits },
	{ "garbage", test_garbage },
	{ NULL, NULL },
};
TT_MAIN(cases)
