# Test-host stand-in for the mongo image: SecantusDB (wire-compatible, Python) with an
# entrypoint that does what the mongo image's does on the first start of an empty
# /data/db (root user from MONGO_INITDB_ROOT_*, then the application user), then
# serves with --auth.  See deploy/test-docker/compose.test.yml.
ARG PYTHON_IMAGE=local/hpo-python:test
FROM ${PYTHON_IMAGE}
ARG SECANTUSDB_VERSION
RUN pip install --no-cache-dir "secantusdb==${SECANTUSDB_VERSION}" \
    && mkdir -p /data/db
COPY secantusdb-entrypoint.py /usr/local/bin/secantusdb-entrypoint
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["python", "/usr/local/bin/secantusdb-entrypoint"]
