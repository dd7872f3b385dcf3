"""Privacy: pseudonymous user ids in what leaves for BigQuery and the REST API (transforms/privacy.py)."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options.common import bad


class PrivacyOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        privacy = parser.add_argument_group('privacy')
        privacy.add_argument('--pseudonymize_user_ids', action='store_true', default=False,
                             help='Replace user_id by a keyed hash (HMAC-SHA256, as a UUID) before BigQuery and the '
                                  'REST API. The key comes from ENGAGEMENT_PSEUDONYM_KEY or the file named by '
                                  'ENGAGEMENT_PSEUDONYM_KEY_FILE (at least 16 bytes), in the environment of the '
                                  'pipeline and its workers; never a flag. Default off.')

    def check(self) -> None:
        if self.pseudonymize_user_ids:
            from transforms.privacy import MissingPseudonymKey, pseudonym_key
            try:
                pseudonym_key()
            except MissingPseudonymKey as exc:
                bad('pseudonymize_user_ids', True, str(exc))
