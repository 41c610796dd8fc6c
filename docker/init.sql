-- The demo's source and views (run by the compose "setup" service).
CREATE SOURCE IF NOT EXISTS clicks (
    user_id BIGINT, page VARCHAR, duration_ms BIGINT, ts TIMESTAMPTZ,
    WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (
    connector = 'kafka',
    topic = 'clicks',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Page views per page and 10-second window, final once the window closes.
CREATE MATERIALIZED VIEW IF NOT EXISTS views_per_page WITH (retention = '1 day') AS
  SELECT window_start, window_end, page, count(*) AS views, avg(duration_ms) AS avg_duration_ms
  FROM TUMBLE(clicks, ts, INTERVAL '10 seconds')
  GROUP BY window_start, window_end, page
  EMIT ON WINDOW CLOSE;

-- Visits: sessions of each user, closed after 30 s without a click.
CREATE MATERIALIZED VIEW IF NOT EXISTS visits WITH (retention = '1 day') AS
  SELECT user_id, window_start, window_end, count(*) AS clicks
  FROM SESSION(clicks, ts, INTERVAL '30 seconds', user_id)
  GROUP BY user_id, window_start, window_end
  EMIT ON WINDOW CLOSE;
