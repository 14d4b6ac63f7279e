# The registry worker image; docker-compose.yml and k8s/ run it.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY registry_app ./registry_app
COPY tables ./tables
RUN pip install --no-cache-dir .

# RocksDB tables live here; mount a volume so a restart recovers from disk, not Kafka.
ENV DATA_DIR=/var/lib/registry \
    WEB_HOST=0.0.0.0
VOLUME /var/lib/registry
EXPOSE 6066

ENTRYPOINT ["registry-app"]
CMD ["worker", "-l", "info"]
