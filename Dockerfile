# One image for every role: the command picks it.
#
#   docker build -t voicewire .
#   docker run --rm voicewire relay --help
#   docker run --rm voicewire transceiver|gateway|agent-server|serve --help
#
# Debian (bookworm) based: libopus0 is the only native library the package needs from the
# system; cryptography, pyOpenSSL, pylibsrtp and uvloop bring their own in their wheels.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: build the voicewire wheel (no editable install, no test extras in the image).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the runtime image.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /tmp/wheels
RUN pip install /tmp/wheels/voicewire-*.whl \
    && rm -rf /tmp/wheels \
    && voicewire --version
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it (deploy/kubernetes uses 10001).
RUN groupadd --system --gid 10001 voicewire \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin voicewire
USER 10001:10001
WORKDIR /tmp
# relay: 3478/udp public, 3479+/udp internal (one per worker), 9478 ops HTTP;
# transceiver: 7000/udp, 8081 HTTP; gateway and serve: 8080 HTTP; agent-server: 8090.
EXPOSE 3478/udp 3479/udp 7000/udp 8080 8081 8090 9478
ENTRYPOINT ["voicewire"]
CMD ["--help"]
