"""Local stand-ins for external services: the REST API the pipeline's API sink delivers to, and the BigQuery
emulator's launcher (with its pinned requirements); the stack starts both."""
