# Test-host stand-in for pytorch/pytorch:*-runtime: the python base plus torch and
# torchvision from this host's local wheels (TORCH_REQUIREMENTS, chosen by
# setup-host.sh: the releases installed where it runs, e.g. "torch==2.14.1
# torchvision==0.29.1", a CUDA build whose torch.__version__ has a local suffix, like
# the official image's).
ARG PYTHON_IMAGE=local/hpo-python:test
FROM ${PYTHON_IMAGE}
ARG TORCH_REQUIREMENTS="torch torchvision"
# Several requirements in one argument: split on purpose.
# hadolint ignore=DL3013,SC2086
RUN pip install --no-cache-dir ${TORCH_REQUIREMENTS}
