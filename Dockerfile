# payout-manager: `docker build -t payout-manager .`, then see docker-compose.yml for the whole stack.

# Build: the project's wheel (migrations included), installed with its pinned dependencies (no dev
# extras, no embedded PostgreSQL) in a venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY payout_manager ./payout_manager
COPY clients ./clients
# payout_manager/migrations links to this folder; the wheel takes a copy.
COPY migrations ./migrations
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels .
RUN /opt/venv/bin/pip install /wheels/payout_manager-*.whl

# Run: the venv alone, as a user without privileges.
FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py docker/seed.py /opt/payout-manager/
RUN useradd --system --uid 10001 --no-create-home payout
USER payout
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PM_GRPC_ADDRESS=0.0.0.0:8022
EXPOSE 8022
# gRPC health (grpc.health.v1) of `serve` on this container's PM_GRPC_ADDRESS port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/payout-manager/healthcheck.py"]
ENTRYPOINT ["payout-manager"]
CMD ["serve"]
