"""hyperopt's own MongoTrials tests, as installed with hyperopt, against this project.

The tests are imported from ``hyperopt/tests/integration/test_mongoexp.py`` unchanged
(pytest collects the imported test functions and classes here); the plumbing that
points them at this project's MongoTrials, the test server and ``hpo-worker`` is in
``plumbing.py`` and ``conftest.py``.  Two of the twelve test hyperopt's own internals,
which this project does not replace; they are expected to fail, strictly (an
unexpected pass fails the suite too).  See docs/conformance.md.
"""

import pytest

from tests.conformance.plumbing import mongod_on_path

with mongod_on_path():
    try:
        from hyperopt.tests.integration.test_mongoexp import *  # noqa: F403 - the tests themselves, not a copy
    except pytest.skip.Exception as skipped:  # its mongod probe failed: a broken gate, not a skip
        raise RuntimeError(
            f"hyperopt's test_mongoexp skipped itself ({skipped}): starting tests/conformance/bin/mongod "
            "failed; it must be executable and find the test server (see tests/conformance/plumbing.py)"
        ) from skipped

EXPECTED_FAILURES = {
    "test_handles_are_independent": (
        "tests hyperopt's own MongoJobs, which inserts with pymongo 3's Collection.insert "
        "(removed in pymongo 4); this project replaces MongoTrials, not MongoJobs"
    ),
    "test_main_worker": (
        "expects ReserveTimeout from hyperopt's in-process main_worker_helper, whose MongoWorker "
        "reserves with pymongo 3's Collection.find_and_modify (removed in pymongo 4); this "
        "project's worker is the hpo-worker process"
    ),
}

for _name, _reason in EXPECTED_FAILURES.items():
    globals()[_name] = pytest.mark.xfail(strict=True, raises=TypeError, reason=_reason)(globals()[_name])
