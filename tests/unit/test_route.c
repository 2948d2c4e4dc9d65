/*
 * tests/unit/test_route.c — the routing table: parsing route lines
 * (normalisation and refusals) and picking (first match, weights, bounds,
 * unknown brand or country), and processor instance lines.
 */
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "processors/instance.h"
#include "processors/route.h"
#include "tests/unit/tt.h"

static int
test_parse(void)
{
	struct proc_route r;
	struct fgw_why why;
	static const char *const bad[] = { "",
		                               "currency=EUR",
		                               "p currency=EURO",
		                               "p currency=EUR,",
		                               "p currency=E1R",
		                               "p country=DEU",
		                               "p brand=v",
		                               "p brand=vi sa=1",
		                               "p amount_min=0",
		                               "p amount_min=-5",
		                               "p amount_min=9 amount_max=3",
		                               "p weight=0",
		                               "p weight=1000001",
		                               "p colour=red",
		                               "p currency",
		                               "p currency=",
		                               "p currency=EUR currency=GBP",
		                               "p weight=1 weight=2",
		                               NULL };
	TT_BEGIN;

	CHECK_EQ_INT(proc_route_parse("backup  currency=eur,Gbp brand=AMEX,visa country=de "
	                              "amount_min=100 amount_max=900 weight=3",
	                              &r, &why),
	             0);
	CHECK_STR(r.processor, "backup");
	CHECK_STR(r.currencies, "EUR,GBP");
	CHECK_STR(r.brands, "amex,visa");
	CHECK_STR(r.countries, "DE");
	CHECK_EQ_INT(r.amount_min, 100);
	CHECK_EQ_INT(r.amount_max, 900);
	CHECK_EQ_INT(r.weight, 3);
	CHECK_EQ_INT(proc_route_parse("sandbox", &r, &why), 0);
	CHECK(r.currencies[0] == '\0' && r.weight == 0 && r.amount_max == 0);
	for (size_t i = 0; bad[i] != NULL; i++) {
		memset(&why, 0, sizeof(why));
		if (proc_route_parse(bad[i], &r, &why) != FGW_ERR_INVALID) {
			fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
			CHECK(0);
		}
		CHECK_STR(why.where, "route");
		CHECK(why.msg[0] != '\0');
	}
end:
	TT_END;
}

static int
add(struct proc_routes *rs, const char *line)
{
	struct fgw_why why;
	return proc_route_parse(line, &rs->r[rs->n++], &why);
}

static int
test_pick(void)
{
	struct proc_routes rs;
	const struct proc_route *p;
	int a = 0, b = 0;
	TT_BEGIN;

	memset(&rs, 0, sizeof(rs));
	CHECK_EQ_INT(add(&rs, "backup currency=EUR"), 0);
	CHECK_EQ_INT(add(&rs, "backup brand=amex amount_min=10000"), 0);
	CHECK_EQ_INT(add(&rs, "other country=DE"), 0);
	CHECK_EQ_INT(add(&rs, "sandbox amount_max=500"), 0);
	CHECK(proc_routes_pick(&rs, "USD", "Visa", "US", 1000, 0) == NULL);
	CHECK_STR(proc_routes_pick(&rs, "EUR", "Visa", "DE", 1, 0)->processor, "backup");
	CHECK_STR(proc_routes_pick(&rs, "USD", "Amex", "US", 10000, 0)->processor, "backup");
	CHECK(proc_routes_pick(&rs, "USD", "Amex", "US", 9999, 0) == NULL);
	CHECK_STR(proc_routes_pick(&rs, "USD", "Visa", "DE", 9999, 0)->processor, "other");
	/* Unknown brand or country never matches a route that names them. */
	CHECK_STR(proc_routes_pick(&rs, "USD", "", "", 400, 0)->processor, "sandbox");
	CHECK(proc_routes_pick(&rs, "USD", NULL, NULL, 20000, 0) == NULL);
	CHECK(proc_routes_pick(NULL, "USD", "Visa", "US", 1, 0) == NULL);

	/* Weights: 1:3 over the whole draw range, in table order. */
	memset(&rs, 0, sizeof(rs));
	CHECK_EQ_INT(add(&rs, "sandbox currency=JPY"), 0);
	CHECK_EQ_INT(add(&rs, "a weight=1"), 0);
	CHECK_EQ_INT(add(&rs, "b weight=3"), 0);
	CHECK_STR(proc_routes_pick(&rs, "JPY", "Visa", "US", 1, 999999)->processor,
	          "sandbox");
	CHECK_STR(proc_routes_pick(&rs, "USD", "Visa", "US", 1, 0)->processor, "a");
	CHECK_STR(proc_routes_pick(&rs, "USD", "Visa", "US", 1, 249999)->processor, "a");
	CHECK_STR(proc_routes_pick(&rs, "USD", "Visa", "US", 1, 250000)->processor, "b");
	CHECK_STR(proc_routes_pick(&rs, "USD", "Visa", "US", 1, 999999)->processor, "b");
	for (uint32_t x = 0; x < 1000000; x += 1000) {
		p = proc_routes_pick(&rs, "USD", "Visa", "US", 1, x);
		CHECK(p != NULL);
		if (strcmp(p->processor, "a") == 0)
			a++;
		else
			b++;
	}
	CHECK_EQ_INT(a, 250);
	CHECK_EQ_INT(b, 750);
end:
	TT_END;
}

/* `processor NAME key=value...`: a new name appends, a known one takes
 * more keys, a bad line changes nothing. */
static int
test_processor_lines(void)
{
	struct proc_settings list[3];
	struct fgw_why why;
	char where[96];
	int n = 0;
	static const char *const bad[] = { "",
		                               "url=http://x",
		                               "eu colour=red",
		                               "eu url",
		                               "eu =x",
		                               "eu name=other",
		                               "eu timeout_ms=soon",
		                               "eu timeout_ms=999999",
		                               "eu verify_tls=maybe",
		                               "e/u url=http://x",
		                               "eu url=http://127.0.0.1:1 secret_env=",
		                               NULL };
	TT_BEGIN;
	memset(list, 0, sizeof(list));
	CHECK_EQ_INT(proc_settings_line(list, &n, 3,
	                                "eu type=stripe url=https://a.example "
	                                "timeout_ms=900 verify_tls=no",
	                                &why),
	             0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(list[0].name, "eu");
	CHECK_STR(list[0].type, "stripe");
	CHECK_EQ_INT(list[0].timeout_ms, 900);
	CHECK_EQ_INT(list[0].verify_tls, 0);
	CHECK_EQ_INT(proc_settings_line(list, &n, 3, "gb url=http://127.0.0.1:2", &why), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_STR(list[1].type, "sandbox");
	CHECK_EQ_INT(list[1].verify_tls, 1);
	/* More keys for eu: appended nowhere, the rest kept. */
	CHECK_EQ_INT(proc_settings_line(list, &n, 3, "eu api_version=2024-06-20", &why), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_STR(list[0].api_version, "2024-06-20");
	CHECK_STR(list[0].url, "https://a.example");
	for (int i = 0; bad[i] != NULL; i++) {
		if (proc_settings_line(list, &n, 3, bad[i], &why) != FGW_ERR_INVALID) {
			fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
			CHECK(0);
		}
	}
	/* "eu url=... secret_env=" failed on its second key: url untouched. */
	CHECK_STR(list[0].url, "https://a.example");
	CHECK_EQ_INT(n, 2);
	/* A stray word may be a credential: the error does not repeat it. */
	CHECK_EQ_INT(proc_settings_line(list, &n, 3, "eu sk_live_SECRETVALUE", &why),
	             FGW_ERR_INVALID);
	CHECK(strstr(why.msg, "SECRETVALUE") == NULL &&
	      strstr(why.where, "SECRETVALUE") == NULL);
	CHECK(strstr(why.msg, "word 2") != NULL);
	CHECK_STR(why.where, "processor eu");
	CHECK_EQ_INT(proc_settings_line(list, &n, 3, "third url=http://127.0.0.1:3", &why),
	             0);
	CHECK_EQ_INT(proc_settings_line(list, &n, 3, "fourth url=http://127.0.0.1:4", &why),
	             FGW_ERR_INVALID);
	CHECK(strstr(why.msg, "at most 3") != NULL);
	proc_settings_where(&list[0], "url", where, sizeof(where));
	CHECK_STR(where, "processor eu url");
	fgw_strlcpy(list[1].old_prefix, "processor2_", sizeof(list[1].old_prefix));
	proc_settings_where(&list[1], "url", where, sizeof(where));
	CHECK_STR(where, "processor2_url");
end:
	TT_END;
}

static const struct tt_case cases[] = {
	{ "parse", test_parse },
	{ "processor_lines", test_processor_lines },
	{ "pick", test_pick },
	{ NULL, NULL },
};
TT_MAIN(cases)
