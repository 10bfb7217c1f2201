# Test-host stand-in for pytorch/pytorch:*-runtime: the python base plus torch and
# torchvision from this host's local wheels (TORCH_REQUIREMENT, chosen by
# setup-host.sh; a CPU build where one is on disk).
ARG PYTHON_IMAGE=local/hpo-python:test
FROM ${PYTHON_IMAGE}
ARG TORCH_REQUIREMENT=torch
# torchvision: whichever release matches that torch (pip resolves it).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${TORCH_REQUIREMENT}" torchvision
