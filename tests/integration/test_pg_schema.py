"""The two backends' schemas cannot drift apart: a SQLite database migrated
by store/schema.c and a PostgreSQL database migrated by store/pg.c
(store/schema_pg.c) are read back through each one's catalog, and their
tables, columns (type class, NOT NULL, default), primary keys, uniques,
indexes (by name: table, columns, unique, partial and the predicate's
literals), foreign keys, CHECK counts, views (columns) and triggers must be
the same, name by name, and the auditors' views give the same rows for the
same data. The comparison itself is shown to fail when a column is dropped
on either side."""

import os
import re
import sqlite3
import subprocess
import tempfile

import harness
import pg

SERVER = pg.Postgres()

# PostgreSQL's own: the applied versions (SQLite's is PRAGMA user_version),
# and TRUNCATE guards (SQLite has no TRUNCATE).
PG_ONLY_TABLES = {"schema_version"}
PG_ONLY_TRIGGERS = {("audit_events_no_truncate", "audit_events"),
                    ("audit_checkpoints_no_truncate", "audit_checkpoints")}
INT_TYPES = {"bigint", "integer", "smallint"}


def _binary():
    return os.path.join(harness.BUILD, "pg-tests", "test_pg")


def _env(dsn):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(harness.SANITIZER_ENV)
    env["FGW_TEST_PG_DSN"] = dsn
    return env


def sqlite_db(directory):
    path = os.path.join(directory, "flairgw.db")
    p = subprocess.run([_binary(), "--migrate-sqlite", path], capture_output=True, text=True,
                       timeout=50, env=_env(""))
    assert p.returncode == 0, p.stderr
    return path


def pg_db(name):
    """A new database migrated by store/pg.c; returns its name."""
    server = SERVER.ensure()
    server.admin_sql(f"DROP DATABASE IF EXISTS {name}")
    server.admin_sql(f"CREATE DATABASE {name} OWNER {server.ROLE}")
    p = subprocess.run([_binary(), "--migrate-pg"], capture_output=True, text=True, timeout=50,
                       env=_env(server.dsn(dbname=name)))
    assert p.returncode == 0, p.stderr
    return name


def _literals(predicate):
    return tuple(sorted(set(re.findall(r"'([^']*)'", predicate or ""))))


def _norm_default(value):
    if value is None or value == "":
        return None
    return re.sub(r"::[a-z ]+$", "", value.strip())


def sqlite_catalog(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cat = {"tables": {}, "views": {}, "indexes": {}, "uniques": set(), "fks": set(),
               "checks": {}, "triggers": set()}
        objects = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                             "WHERE name NOT LIKE 'sqlite_%'").fetchall()
        for kind, name, table, sql in objects:
            if kind == "trigger":
                cat["triggers"].add((name, table))
            elif kind == "view":
                cat["views"][name] = [r[1] for r in db.execute(f"PRAGMA table_info({name})")]
        for kind, name, _, sql in objects:
            if kind != "table":
                continue
            cols = db.execute(f"PRAGMA table_info({name})").fetchall()
            pk = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0]
            rowid_alias = len(pk) == 1 and any(c[1] == pk[0] and c[2].upper() == "INTEGER"
                                               for c in cols)
            columns = {}
            for _, cname, ctype, notnull, default, cpk in cols:
                columns[cname] = {
                    "type": "int" if ctype.upper() == "INTEGER" else ctype.lower(),
                    # INTEGER PRIMARY KEY is the rowid: never NULL.
                    "notnull": bool(notnull) or (rowid_alias and cpk > 0),
                    "default": _norm_default(default),
                }
            cat["tables"][name] = {"columns": columns, "pk": pk}
            cat["checks"][name] = len(re.findall(r"\bCHECK\s*\(", sql, re.IGNORECASE))
            for _, iname, unique, origin, partial in db.execute(f"PRAGMA index_list({name})"):
                icols = [r[2] for r in sorted(db.execute(f"PRAGMA index_info({iname})"))]
                isql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                  (iname,)).fetchone()
                where = ""
                if isql and isql[0] and " WHERE " in isql[0].upper():
                    where = isql[0][isql[0].upper().index(" WHERE ") + 7:]
                if unique and origin != "pk":
                    cat["uniques"].add((name, tuple(icols), bool(partial), _literals(where)))
                if origin == "c":
                    cat["indexes"][iname] = (name, tuple(icols), bool(unique), bool(partial),
                                             _literals(where))
            fks = {}
            for fid, _, ref, src, dst, *_ in db.execute(f"PRAGMA foreign_key_list({name})"):
                fks.setdefault(fid, [ref, [], []])
                fks[fid][1].append(src)
                fks[fid][2].append(dst)
            for ref, src, dst in fks.values():
                cat["fks"].add((name, tuple(src), ref, tuple(dst)))
        return cat
    finally:
        db.close()


PG_COLUMNS = """
SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       COALESCE(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum"""

PG_INDEXES = """
SELECT t.relname, i.relname, ix.indisunique, ix.indisprimary,
       COALESCE(pg_get_expr(ix.indpred, ix.indrelid), ''),
       (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
          FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum),
       EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = ix.indexrelid
               AND co.conrelid = ix.indrelid AND co.contype IN ('p', 'u'))
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public'"""

PG_FKS = """
SELECT co.conrelid::regclass::text, co.confrelid::regclass::text,
       (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
          FROM unnest(co.conkey) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum),
       (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
          FROM unnest(co.confkey) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.attnum)
FROM pg_constraint co WHERE co.contype = 'f' AND co.connamespace = 'public'::regnamespace"""

PG_CHECKS = """
SELECT co.conrelid::regclass::text, count(*) FROM pg_constraint co
WHERE co.contype = 'c' AND co.connamespace = 'public'::regnamespace GROUP BY 1"""

PG_TRIGGERS = """
SELECT tg.tgname, tg.tgrelid::regclass::text FROM pg_trigger tg
JOIN pg_class c ON c.oid = tg.tgrelid
WHERE NOT tg.tgisinternal AND c.relnamespace = 'public'::regnamespace"""


def pg_catalog(dbname):
    server = SERVER.ensure()

    def q(sql):
        return server._psql(sql, server.ROLE, server.password, dbname)

    cat = {"tables": {}, "views": {}, "indexes": {}, "uniques": set(), "fks": set(),
           "checks": {}, "triggers": set()}
    for rel, kind, col, ctype, notnull, default, identity in q(PG_COLUMNS):
        if kind == "v":
            cat["views"].setdefault(rel, []).append(col)
            continue
        t = cat["tables"].setdefault(rel, {"columns": {}, "pk": []})
        t["columns"][col] = {"type": "int" if ctype in INT_TYPES else ctype,
                             "notnull": notnull == "t", "default": _norm_default(default)}
        cat["checks"].setdefault(rel, 0)
    for table, iname, unique, primary, pred, cols, constraint in q(PG_INDEXES):
        cols = tuple(cols.split(","))
        if primary == "t":
            cat["tables"][table]["pk"] = list(cols)
            continue
        if unique == "t":
            cat["uniques"].add((table, cols, pred != "", _literals(pred)))
        if constraint != "t":
            cat["indexes"][iname] = (table, cols, unique == "t", pred != "", _literals(pred))
    for table, ref, src, dst in q(PG_FKS):
        cat["fks"].add((table, tuple(src.split(",")), ref, tuple(dst.split(","))))
    for table, n in q(PG_CHECKS):
        cat["checks"][table] = int(n)
    for name, table in q(PG_TRIGGERS):
        cat["triggers"].add((name, table))
    for name in PG_ONLY_TABLES:
        cat["tables"].pop(name, None)
        cat["checks"].pop(name, None)
    cat["triggers"] -= PG_ONLY_TRIGGERS
    return cat


def differences(lite, post):
    """Human-readable differences, [] when the schemas match."""
    out = []
    for name in sorted(set(lite["tables"]) | set(post["tables"])):
        a, b = lite["tables"].get(name), post["tables"].get(name)
        if a is None or b is None:
            out.append(f"table {name}: only in {'PostgreSQL' if a is None else 'SQLite'}")
            continue
        if a["pk"] != b["pk"]:
            out.append(f"table {name}: primary key {a['pk']} (SQLite) vs {b['pk']}")
        for col in sorted(set(a["columns"]) | set(b["columns"])):
            ca, cb = a["columns"].get(col), b["columns"].get(col)
            if ca is None or cb is None:
                out.append(f"column {name}.{col}: only in "
                           f"{'PostgreSQL' if ca is None else 'SQLite'}")
            elif ca != cb:
                out.append(f"column {name}.{col}: {ca} (SQLite) vs {cb} (PostgreSQL)")
    for what in ("uniques", "fks", "triggers"):
        for item in sorted(lite[what] ^ post[what], key=repr):
            side = "SQLite" if item in lite[what] else "PostgreSQL"
            out.append(f"{what[:-1]} {item}: only in {side}")
    for name in sorted(set(lite["indexes"]) | set(post["indexes"])):
        a, b = lite["indexes"].get(name), post["indexes"].get(name)
        if a != b:
            out.append(f"index {name}: {a} (SQLite) vs {b} (PostgreSQL)")
    for name in sorted(set(lite["views"]) | set(post["views"])):
        a, b = lite["views"].get(name), post["views"].get(name)
        if a != b:
            out.append(f"view {name}: {a} (SQLite) vs {b} (PostgreSQL)")
    for name in sorted(set(lite["checks"]) | set(post["checks"])):
        a, b = lite["checks"].get(name, 0), post["checks"].get(name, 0)
        if a != b:
            out.append(f"table {name}: {a} CHECK constraints (SQLite) vs {b} (PostgreSQL)")
    return out


def test_schemas_match_name_by_name():
    with tempfile.TemporaryDirectory(prefix="flairgw-pgschema-") as d:
        lite = sqlite_catalog(sqlite_db(d))
    post = pg_catalog(pg_db("schema_cmp"))
    diff = differences(lite, post)
    assert not diff, "SQLite and PostgreSQL schemas differ:\n" + "\n".join(diff)
    # The comparison saw the whole schema, not an empty catalog.
    assert len(lite["tables"]) >= 20 and len(post["tables"]) == len(lite["tables"])
    assert len(post["indexes"]) >= 25 and len(post["views"]) == 7
    assert len(post["triggers"]) == 8 and len(post["fks"]) == 7
    v = SERVER._psql("SELECT max(version) FROM schema_version", SERVER.ROLE, SERVER.password,
                     "schema_cmp")
    with tempfile.TemporaryDirectory(prefix="flairgw-pgschema-") as d:
        db = sqlite3.connect(sqlite_db(d))
        user_version = db.execute("PRAGMA user_version").fetchone()[0]
        db.close()
    assert int(v[0][0]) == user_version, (v, user_version)


def test_comparison_catches_a_dropped_column():
    """Drift on either side is reported by name."""
    post_db = pg_db("schema_drift")
    SERVER._psql("ALTER TABLE transactions DROP COLUMN metadata_json", SERVER.ROLE,
                 SERVER.password, post_db)
    with tempfile.TemporaryDirectory(prefix="flairgw-pgschema-") as d:
        path = sqlite_db(d)
        lite = sqlite_catalog(path)
        diff = differences(lite, pg_catalog(post_db))
        assert diff == ["column transactions.metadata_json: only in SQLite"], diff
        db = sqlite3.connect(path)
        db.execute("ALTER TABLE mail_outbox DROP COLUMN last_error")
        db.execute("DROP INDEX idempotency_expires")
        db.commit()
        db.close()
        drifted = sqlite_catalog(path)
    diff = differences(drifted, pg_catalog(pg_db("schema_cmp")))
    assert any("mail_outbox.last_error: only in PostgreSQL" in x for x in diff), diff
    assert any(x.startswith("index idempotency_expires: None (SQLite)") for x in diff), diff
    assert len(diff) == 2, diff


# The same rows in both databases (statements valid in both dialects).
FIXTURE = [
    "INSERT INTO audit_events (seq, ts, actor, source, event_type, resource, outcome,"
    " details_json, prev_hash, hash) VALUES (1, 1733356800123, 'op', 'cli', 'backup.created',"
    " 'flairgw-1.fgwbk', 'ok',"
    " '{\"bytes\":4096,\"blake2b\":\"ab12\",\"auditSeq\":1,\"transactions\":2}', 'p0', 'h1')",
    "INSERT INTO audit_events (seq, ts, actor, source, event_type, resource, outcome,"
    " details_json, prev_hash, hash) VALUES (2, 1, 'website', 'api', 'txn.created', 'txn_1',"
    " 'allow', NULL, 'h1', 'h2')",
    "INSERT INTO audit_checkpoints VALUES (2, 1733356800999, 'h2', 'pk', 'sig')",
    "INSERT INTO transactions (id, client_id, amount, currency, status, brand, bin, last4,"
    " customer_email, created_at, updated_at) VALUES ('txn_1', 'website', 15000, 'EUR',"
    " 'succeeded', 'Visa', '424242', '4242', 'a@example.com', 1733356799999, 1733356800000)",
    "INSERT INTO transactions (id, client_id, amount, currency, status, created_at,"
    " updated_at) VALUES ('txn_2', 'website', 250, 'EUR', 'succeeded', 1733356700000,"
    " 1733356700000)",
    "INSERT INTO transactions (id, client_id, amount, currency, status, created_at,"
    " updated_at) VALUES ('txn_3', 'partner', 99, 'USD', 'declined', 86399999, 86400000)",
    "INSERT INTO experiences (id, name, price, currency) VALUES ('exp_1', 'Tour', 5000, 'EUR')",
    "INSERT INTO time_slots (id, experience_id, starts_at, capacity) VALUES"
    " ('slot_1', 'exp_1', 1733400000000, 12)",
    "INSERT INTO reservations (id, client_id, customer_id, experience_id, time_slot_id,"
    " guests, status, payment_status, total_price, original_price, currency,"
    " hold_expires_at, reference, created_at, updated_at) VALUES ('res_1', 'website',"
    " 'key:website/c1', 'exp_1', 'slot_1', 2, 'held', 'unpaid', 10000, 10000, 'EUR',"
    " 1733356860000, 'FLR-1', 1733356800000, 1733356800000)",
    "INSERT INTO webhook_outbox (id, endpoint_url, event_id, event_type, txn_id, payload,"
    " status, next_attempt_at, created_at, updated_at) VALUES ('whd_1', 'https://x/hook',"
    " 'evt_1', 'payment.succeeded', 'txn_1', '{}', 'delivered', 0, 1, 2)",
    "INSERT INTO webhook_attempts (outbox_id, attempt, at, http_status, error, elapsed_ms,"
    " outcome) VALUES ('whd_1', 1, 1733356800500, 200, NULL, 12, 'delivered')",
]


def _rows_sqlite(path, view):
    db = sqlite3.connect(path)
    try:
        rows = db.execute(f"SELECT * FROM {view}").fetchall()
    finally:
        db.close()
    return sorted(tuple("" if v is None else str(v) for v in r) for r in rows)


def test_views_give_the_same_rows():
    """An auditor's query gives the same answer on either backend."""
    post_db = pg_db("schema_views")
    SERVER._psql(";".join(FIXTURE), SERVER.ROLE, SERVER.password, post_db)
    with tempfile.TemporaryDirectory(prefix="flairgw-pgschema-") as d:
        path = sqlite_db(d)
        db = sqlite3.connect(path)
        for sql in FIXTURE:
            db.execute(sql)
        db.commit()
        db.close()
        views = sorted(sqlite_catalog(path)["views"])
        assert len(views) == 7, views
        for view in views:
            lite = _rows_sqlite(path, view)
            post = sorted(tuple(r) for r in SERVER._psql(f"SELECT * FROM {view}", SERVER.ROLE,
                                                          SERVER.password, post_db))
            assert lite, view
            assert lite == post, f"{view}:\n  SQLite     {lite}\n  PostgreSQL {post}"
