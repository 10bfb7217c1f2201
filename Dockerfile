# hpo-queue images, built by `docker compose build` (see docs/deploy.md):
#   --target worker       ENTRYPOINT hpo-worker  (the default, last stage)
#   --target coordinator  ENTRYPOINT hpo-coord
# Both share every layer but the last.  The objectives are installed here, from this
# repository; the database only ever names them.  No credentials are baked in: the
# MongoDB URL comes from HPO_MONGO_URL at run time.
#
# BASE_IMAGE: any image with Python 3.11+, pip and torch (torchvision optional) on PATH
# as `python`/`pip`, with groupadd/useradd.  The default is the official CUDA runtime
# image; the Docker test (tests/deploy/test_compose_stack.py) builds this same file from
# a local Debian base with a CPU torch (deploy/test-docker/).  No `# syntax=` line: the
# file builds with the classic builder and with BuildKit, without pulling a frontend.
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

FROM ${BASE_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HPO_DATA_DIR=/data

# An unprivileged user, named by number in USER below so that Kubernetes can verify
# runAsNonRoot.  /data is where the shared dataset volume is mounted (a new named
# volume takes this directory's owner).
RUN groupadd --gid 10001 hpo \
    && useradd --create-home --uid 10001 --gid hpo --shell /usr/sbin/nologin hpo \
    && mkdir -p /data \
    && chown hpo:hpo /data

WORKDIR /opt/hpo-queue

# Dependencies first, from pyproject.toml alone, so that editing code does not reinstall
# them.  The base image's own build of torch is pinned so pip never swaps it out: by
# its distribution version, as pip knows it (torch.__version__ may carry a local suffix,
# "2.8.0+cu128", that the installed metadata does not).
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
    && python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > /tmp/constraints.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt \
    && rm /tmp/requirements.txt /tmp/constraints.txt

# Then the code (.dockerignore admits only the packages below and pyproject.toml).
COPY user_errors ./user_errors
COPY jobstore ./jobstore
COPY cli_support ./cli_support
COPY coordinator ./coordinator
COPY worker ./worker
COPY objectives ./objectives
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

USER 10001:10001
WORKDIR /home/hpo

FROM base AS coordinator
ENTRYPOINT ["hpo-coord"]

FROM base AS worker
ENTRYPOINT ["hpo-worker"]
