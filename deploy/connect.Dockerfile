# syntax=docker/dockerfile:1
# Kafka Connect 4.1.1 with Debezium's Postgres connector 3.6.1.Final from Maven Central: the versions `make install`
# resolves (launch/stack/maven/). docker-compose.yml mounts deploy/compose/connect/*.properties.
FROM apache/kafka:4.1.1
USER root
ADD --checksum=sha256:408b00c073b27ddaa7af34684f60fcf5bbf6605de68a8662ec9462f2a88880d2 \
    https://repo1.maven.org/maven2/io/debezium/debezium-connector-postgres/3.6.1.Final/debezium-connector-postgres-3.6.1.Final-plugin.tar.gz \
    /tmp/debezium.tar.gz
RUN mkdir -p /opt/connect-plugins && tar -xzf /tmp/debezium.tar.gz -C /opt/connect-plugins && rm /tmp/debezium.tar.gz \
    && mkdir -p /var/lib/connect && chown appuser /var/lib/connect
USER appuser
CMD ["/opt/kafka/bin/connect-standalone.sh", "/etc/engagement/worker.properties", "/etc/engagement/connector.properties"]
