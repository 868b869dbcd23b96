# The fieldstream image used by docker-compose.kafka.yml (workers, gateway, one-off commands).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events events
COPY aggregates aggregates
COPY projections projections
COPY streams streams
COPY eta_engine eta_engine
COPY gateway gateway
COPY simulator simulator
RUN pip install --no-cache-dir .
ENTRYPOINT ["fieldstream"]
