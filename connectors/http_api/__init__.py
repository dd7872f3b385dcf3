"""The REST API sink: `sink.DeliverToApi` (the Beam transform), `client.ApiClient` (HTTP, OAuth2, batches),
`policy` (backoff, Retry-After, circuit breaker)."""
