"""Google Dataflow: the Flex Template (Dockerfile, metadata.json generated from the options class, entry point)."""
