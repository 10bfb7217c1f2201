# Test-host base: Debian + Python 3.11 in a venv on PATH (as `python`/`pip`, like the
# official PyTorch image's conda), this host's CA certificates, and a pip configuration
# that reaches the host's local wheel directories through the wheel server on
# 127.0.0.1 (build with --network host).  Made by deploy/test-docker/setup-host.sh; never
# used in production.
ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE}

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates \
    && python3 -m venv /opt/venv

COPY pip.conf /opt/venv/pip.conf
ENV PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1
