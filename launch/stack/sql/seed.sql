-- Seed schema of the engagement stack (source of truth for the data model; see ARCHITECTURE.md).
-- Idempotent: `launch.stack up` applies it at every start.
CREATE TABLE IF NOT EXISTS content (
  id UUID PRIMARY KEY,
  slug TEXT UNIQUE NOT NULL,
  title TEXT NOT NULL,
  content_type TEXT CHECK (content_type IN ('podcast', 'newsletter', 'video')),
  length_seconds INTEGER,
  publish_ts TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS engagement_events (
  id BIGSERIAL PRIMARY KEY,
  content_id UUID REFERENCES content(id),
  user_id UUID NOT NULL,
  event_type TEXT CHECK (event_type IN ('play', 'pause', 'finish', 'click')),
  event_ts TIMESTAMPTZ NOT NULL,
  duration_ms INTEGER,
  device TEXT,
  raw_payload JSONB
);

-- Ground-truth queries group by content and event-time window; this keeps them fast on large runs.
CREATE INDEX IF NOT EXISTS engagement_events_content_ts ON engagement_events (content_id, event_ts);

-- A sample catalogue: 600 contents, 200 of each type, deterministic ids (md5 of the slug) so every stack and
-- every test sees the same catalogue. Every 25th has NULL length_seconds, every 40th (offset 1) length 0.
INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
SELECT md5('content-' || i)::uuid,
       'content-' || i,
       initcap((ARRAY['the quiet', 'inside', 'a short history of', 'deep dive:', 'notes on', 'weekly',
                      'the future of', 'behind', 'ten minutes of', 'letters from'])[1 + i % 10] || ' ' ||
               (ARRAY['jazz', 'climate', 'startups', 'football', 'cooking', 'space', 'privacy', 'cities',
                      'chess', 'rivers', 'poetry', 'markets', 'sleep'])[1 + (i * 7) % 13]) || ' #' || i,
       (ARRAY['podcast', 'newsletter', 'video'])[1 + i % 3],
       CASE WHEN i % 25 = 0 THEN NULL
            WHEN i % 40 = 1 THEN 0
            WHEN i % 3 = 1 THEN 120 + (i * 37) % 1200     -- newsletters: reading time
            ELSE 300 + (i * 97) % 5400 END,
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '7 hours'
FROM generate_series(1, 600) AS i
ON CONFLICT (id) DO NOTHING;
