"""Pure Beam transforms of the engagement pipeline: parse/validate, enrich, window and count. No I/O here except
the content catalogue loader that enrichment calls. Every composite returns a NamedTuple of its output and
`dead_letters` (schemas.DeadLetter)."""
from transforms.enrich import EnrichWithContent, PostgresContentLoader, engagement_metrics
from transforms.parse import ParseEvents
from transforms.windows import ContentStatsPerWindow

__all__ = ['ContentStatsPerWindow', 'EnrichWithContent', 'ParseEvents', 'PostgresContentLoader',
           'engagement_metrics']
