// pgJDBC (Debian's libpostgresql-jdbc-java) against millrace, as a new
// user would try it: a parameterized query, DatabaseMetaData (getTables,
// getColumns, getSchemas, getTypeInfo), a statement reused past
// prepareThreshold (it becomes a named server-side statement), and
// setFetchSize, which reads a result through a portal in pieces.
// Run: java -cp /usr/share/java/postgresql.jar MillraceJdbc.java PORT
// Exits non-zero (an exception) on any mismatch.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class MillraceJdbc {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/millrace?user=tester";
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE orders (id BIGINT, customer TEXT, amount DOUBLE PRECISION, ts TIMESTAMP,"
                        + " WATERMARK FOR ts AS ts - INTERVAL '1 second')");
                s.execute("CREATE MATERIALIZED VIEW per_customer AS SELECT window_start, customer, count(*) AS n,"
                        + " sum(amount) AS total FROM TUMBLE(orders, ts, INTERVAL '1 hour') GROUP BY window_start, customer");
            }
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO orders VALUES (?, ?, ?, ?::timestamp)")) {
                for (int i = 1; i <= 10; i++) {
                    ins.setLong(1, i);
                    ins.setString(2, i % 2 == 0 ? "alice" : "bob");
                    ins.setDouble(3, i * 1.5);
                    ins.setString(4, String.format("2026-01-01 00:%02d:00", i));
                    check(ins.executeUpdate() == 1, "insert count");
                }
            }

            // a parameterized query, reused past prepareThreshold (5)
            try (PreparedStatement q = c.prepareStatement("SELECT count(*), sum(amount) FROM orders WHERE customer = ?")) {
                for (int round = 0; round < 8; round++) {
                    q.setString(1, "alice");
                    try (ResultSet rs = q.executeQuery()) {
                        check(rs.next(), "a row");
                        check(rs.getLong(1) == 5, "alice's count " + rs.getLong(1));
                        check(rs.getDouble(2) == 45.0, "alice's sum " + rs.getDouble(2));
                    }
                }
            }

            // the windowed view
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT customer, n, total FROM per_customer ORDER BY customer")) {
                check(rs.next() && rs.getString(1).equals("alice") && rs.getLong(2) == 5, "alice's window");
                check(rs.next() && rs.getString(1).equals("bob") && rs.getDouble(3) == 37.5, "bob's window");
                check(!rs.next(), "two windows");
            }

            // setFetchSize: a portal read 3 rows at a time (needs a transaction)
            c.setAutoCommit(false);
            try (PreparedStatement s = c.prepareStatement("SELECT id FROM orders ORDER BY id")) {
                s.setFetchSize(3);
                List<Long> ids = new ArrayList<>();
                try (ResultSet rs = s.executeQuery()) {
                    while (rs.next()) {
                        ids.add(rs.getLong(1));
                    }
                }
                check(ids.size() == 10 && ids.get(0) == 1 && ids.get(9) == 10, "fetched " + ids);
            }
            c.commit();
            c.setAutoCommit(true);

            // DatabaseMetaData, as DBeaver and other JDBC tools read it
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), "product " + md.getDatabaseProductName());
            check(md.getDatabaseMajorVersion() >= 15, "major version " + md.getDatabaseMajorVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", null)) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
                }
            }
            check(tables.contains("orders:TABLE"), "getTables " + tables);
            check(tables.contains("per_customer:MATERIALIZED VIEW"), "getTables " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                }
            }
            check(columns.equals(List.of("id:int8", "customer:text", "amount:float8", "ts:timestamp")),
                    "getColumns " + columns);
            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            check(schemas.contains("public"), "getSchemas " + schemas);
            int types = 0;
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) {
                    types++;
                }
            }
            check(types > 10, "getTypeInfo returned " + types + " types");

            // an error carries its SQLSTATE and the connection stays usable
            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("SELECT * FROM no_such_table");
                    throw new AssertionError("expected an error");
                } catch (java.sql.SQLException e) {
                    check("42P01".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
                }
                try (ResultSet rs = s.executeQuery("SELECT 1")) {
                    check(rs.next() && rs.getInt(1) == 1, "usable after an error");
                }
            }
        }
        System.out.println("pgJDBC client ok");
    }
}
