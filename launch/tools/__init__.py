"""Operator command-line tools: listing and redelivering dead letters, inspecting and creating the BigQuery
tables. They work against the local stack by default and against real services with flags."""
