//! The Nexmark queries, as Millrace materialized views over `bid`.
//!
//! q5 and q7 are joins in Nexmark: an auction (a bid) is reported when its
//! count (price) equals the window's maximum. Materialized views cannot
//! join yet, so their views compute the per-window aggregates that carry
//! all of the incremental work, and the final comparison is an ad-hoc join
//! over the views, run once at the end ([`Query::summary`]).

/// One benchmark query.
pub struct Query {
    /// Short name (`q0`, …, `tumble`) used on the command line.
    pub name: &'static str,
    /// What it computes, for the printed report.
    pub what: &'static str,
    /// The views that make up the query, created in order.
    pub views: &'static [&'static str],
    /// A query answering one number from the views when they are complete,
    /// printed at the end so a run shows it computed something real.
    pub summary: &'static str,
    /// A query answering how many bids the views reflect, for freshness
    /// (only where that is a cheap read of the view).
    pub progress: Option<&'static str>,
    /// Whether [`Query::summary`] must equal the number of bids (a check
    /// that every bid was counted once).
    pub counts_every_bid: bool,
}

impl Query {
    /// Fails unless the summary is what the query must give for `events`.
    pub fn check(&self, summary: &str, events: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.counts_every_bid || summary == events.to_string(),
            "{} counted {summary} bids, not {events}",
            self.name
        );
        Ok(())
    }
}

pub const ALL: &[Query] = &[
    Query {
        name: "q0",
        what: "pass-through, as a running count",
        views: &["CREATE MATERIALIZED VIEW q0 AS SELECT count(*) AS n FROM bid"],
        summary: "SELECT n FROM q0",
        progress: Some("SELECT n FROM q0"),
        counts_every_bid: true,
    },
    Query {
        name: "q1",
        what: "currency conversion of every bid (every row stored in the view)",
        views: &["CREATE MATERIALIZED VIEW q1 AS \
                  SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid"],
        summary: "SELECT count(*) FROM q1",
        progress: None,
        counts_every_bid: true,
    },
    Query {
        name: "q2",
        what: "selection: bids of auctions whose id is a multiple of 123",
        views: &["CREATE MATERIALIZED VIEW q2 AS \
                  SELECT auction, price FROM bid WHERE auction % 123 = 0"],
        summary: "SELECT count(*) FROM q2",
        progress: None,
        counts_every_bid: false,
    },
    Query {
        name: "q5",
        what: "hot items: bids per auction in HOP(2 s, 10 s) windows (EOWC), \
               then the most per window; hot auctions by an ad-hoc join",
        views: &[
            "CREATE MATERIALIZED VIEW q5_bids AS \
             SELECT auction, window_start, window_end, count(*) AS num \
             FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds') \
             GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE",
            "CREATE MATERIALIZED VIEW q5 AS \
             SELECT window_start, window_end, max(num) AS maxn \
             FROM q5_bids GROUP BY window_start, window_end",
        ],
        summary: "SELECT count(*) FROM q5_bids b JOIN q5 m \
                  ON b.window_start = m.window_start AND b.window_end = m.window_end \
                  AND b.num = m.maxn",
        progress: None,
        counts_every_bid: false,
    },
    Query {
        name: "q7",
        what: "highest bid per TUMBLE(10 s) window (EOWC); the winning bids by an ad-hoc join",
        views: &["CREATE MATERIALIZED VIEW q7 AS \
                  SELECT window_start, window_end, max(price) AS maxprice \
                  FROM TUMBLE(bid, date_time, INTERVAL '10 seconds') \
                  GROUP BY window_start, window_end EMIT ON WINDOW CLOSE"],
        summary: "SELECT count(*) FROM bid b JOIN q7 m ON b.price = m.maxprice \
                  AND b.date_time >= m.window_start AND b.date_time < m.window_end",
        progress: None,
        counts_every_bid: false,
    },
    Query {
        name: "tumble",
        what: "count, sum and max of price by auction per TUMBLE(10 s) window (continuous)",
        views: &["CREATE MATERIALIZED VIEW tumble AS \
                  SELECT window_start, auction, count(*) AS n, sum(price) AS total, max(price) AS high \
                  FROM TUMBLE(bid, date_time, INTERVAL '10 seconds') \
                  GROUP BY window_start, auction"],
        summary: "SELECT sum(n)::BIGINT FROM tumble",
        progress: Some("SELECT sum(n)::BIGINT FROM tumble"),
        counts_every_bid: true,
    },
];

/// The queries named in `list` (comma-separated; `all` for every one).
pub fn select(list: &str) -> anyhow::Result<Vec<&'static Query>> {
    if list == "all" {
        return Ok(ALL.iter().collect());
    }
    list.split(',')
        .map(|name| {
            let name = name.trim();
            ALL.iter().find(|q| q.name == name).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown query {name:?}; the queries are {}",
                    ALL.iter().map(|q| q.name).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}
