"""The official Durable Streams conformance suite
(npm ``@durable-streams/server-conformance-tests``) against
``rpckit serve --durable-path /v1/stream --streams memory`` and against
``--streams redis://127.0.0.1:PORT/0`` (a real redis-server of the test's own: the log and the
protocol's state both in Redis).

The suite runs under vitest from tests/node (tests/node/durable-conformance.test.mjs calls the
package's ``runConformanceTests``); the package's own CLI cannot run from node_modules, since
vitest skips files there. Run it by hand::

    rpckit serve examples.streams.server:create_service --http 127.0.0.1:4437 \\
        --durable-path /v1/stream --streams memory --durable-long-poll 2
    cd tests/node && CONFORMANCE_TEST_URL=http://127.0.0.1:4437 \\
        npx vitest run durable-conformance.test.mjs

The whole suite passes, forks included; the six "Reserved subscription APIs" tests are skipped
by the suite itself unless asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.durable.conftest import RedisServer
from tests.serving.process import Served
from tests.support import NODE_MODULES, ROOT, node_available, require_tool

pytestmark = pytest.mark.process

SUITE = NODE_MODULES / "@durable-streams" / "server-conformance-tests"
VITEST = NODE_MODULES / ".bin" / "vitest"

#: The suite's version this count belongs to (tests/node/package-lock.json pins it).
PASSED = 332
SKIPPED = 6


@pytest.mark.parametrize("streams", ["memory", "redis"])
def test_the_official_conformance_suite_passes(
    streams: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_tool(node_available() and SUITE.is_dir(), "node or the conformance suite is missing")
    if streams == "redis":
        server: RedisServer = request.getfixturevalue("own_redis_server")
        streams = server.url
    report = tmp_path / "report.json"
    with Served(
        "examples.streams.server:create_service",
        "--http",
        "127.0.0.1:0",
        "--durable-path",
        "/v1/stream",
        "--streams",
        streams,
        "--durable-long-poll",
        "2",
    ) as served:
        port = served.ports()["HTTP"]
        env = dict(os.environ, CONFORMANCE_TEST_URL=f"http://127.0.0.1:{port}", NO_COLOR="1")
        run = subprocess.run(
            [
                str(VITEST),
                "run",
                "durable-conformance.test.mjs",
                "--no-coverage",
                "--reporter=json",
                f"--outputFile={report}",
            ],
            cwd=ROOT / "tests" / "node",
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert report.exists(), run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(report.read_text())
    failed: list[str] = []
    messages: dict[str, str] = {}
    skipped = passed = 0
    for file in results["testResults"]:
        for case in file["assertionResults"]:
            group = case["ancestorTitles"][-1] if case["ancestorTitles"] else ""
            if case["status"] == "passed":
                passed += 1
            elif case["status"] == "failed":
                failed.append(f"{group} > {case['title']}")
                messages[failed[-1]] = "\n".join(case["failureMessages"])[:2000]
            else:
                skipped += 1
    print(f"conformance ({streams}): {passed} passed, {len(failed)} failed, {skipped} skipped")
    assert failed == [], "\n\n".join(f"{name}: {messages[name]}" for name in failed)
    assert (passed, skipped) == (PASSED, SKIPPED)
