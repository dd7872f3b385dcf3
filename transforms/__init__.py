"""Pure Beam transforms of the engagement pipeline: parse/validate, enrich, window and count. No I/O here except
the content catalogue loader that enrichment calls. Every transform has a tagged `dead_letter` output."""
from transforms.enrich import EnrichWithContent, PostgresContentLoader, engagement_metrics
from transforms.parse import ParseEvents
from transforms.tags import DEAD_LETTER
from transforms.windows import ContentMinuteStats

__all__ = ['DEAD_LETTER', 'ContentMinuteStats', 'EnrichWithContent', 'ParseEvents', 'PostgresContentLoader',
           'engagement_metrics']
