"""Scenarios and checks run against the local stack: the load generator, the hostile-record corpus, the golden
scenario, the comparison of the sinks with SQL, the demo and its live dashboard."""
