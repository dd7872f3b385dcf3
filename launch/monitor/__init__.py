"""The monitoring and query service: health, Prometheus metrics, the Kafka view, the query API over the Redis read
model, and the live web page (`python -m launch.monitor`)."""
