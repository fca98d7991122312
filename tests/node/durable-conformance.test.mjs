// The Durable Streams server conformance suite against the server at CONFORMANCE_TEST_URL.
// Run through vitest from this folder (tests/durable/test_conformance.py does): the package's
// own CLI hands vitest a file inside node_modules, which vitest's default exclusions skip.
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

const baseUrl = process.env.CONFORMANCE_TEST_URL;
if (!baseUrl) throw new Error("set CONFORMANCE_TEST_URL to the server's base URL");
const longPoll = process.env.CONFORMANCE_LONG_POLL_MS;
runConformanceTests({
  baseUrl,
  ...(longPoll ? { longPollTimeoutMs: Number(longPoll) } : {}),
});
